"""Rule recovery (EIS VII's mechanist challenge): from a network trained on a secret rule, the rule.

The contract is :mod:`eis.tools.rule_recovery.base`; black-box controls :mod:`.controls`; white-box
solvers :mod:`.whitebox`.
"""
