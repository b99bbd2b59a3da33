"""Language-model cases: small causal transformers trained from scratch on a procedural language.

The language (words, world, documents, tokenizer) is :mod:`eis.zoo.language.grammar`; planted behaviours
:mod:`eis.zoo.language.backdoor`; a suite's ``[[lm]]`` table :mod:`eis.zoo.language.spec`; training and
the artifact :mod:`eis.zoo.language.build`; the built case :mod:`eis.zoo.language.case`.
"""
