"""Attribution tools: Captum-backed adapters, one small module per kind of method.

Every tool checks its inputs the same way (:func:`eis.tools.attribution.common.check_call`), never
changes the model or the inputs, and refuses (:class:`eis.errors.ToolRefusal`) what it would get wrong.
"""

from eis.tools.attribution import cam, deeplift, gradients, guided, noise, perturbation  # noqa: F401
