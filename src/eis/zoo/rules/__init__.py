"""Rule cases: networks trained on a secret labelling rule (EIS VII's mechanist challenge).

The rule families and their evaluation are :mod:`eis.zoo.rules.grammar`; the networks
:mod:`eis.zoo.rules.models`; a suite's ``[[rule]]`` table :mod:`eis.zoo.rules.spec`.
"""
