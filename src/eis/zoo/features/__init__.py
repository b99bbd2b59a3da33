"""Feature cases: activations built from a known dictionary of sparse features (toy models of superposition).

The spec and a suite's ``[[features]]`` table are :mod:`eis.zoo.features.spec`; sampling the dictionary and
the feature activations, and the toy model they may pass through, :mod:`eis.zoo.features.generate`; the
built case :mod:`eis.zoo.features.case`.
"""
