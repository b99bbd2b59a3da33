"""Feature-synthesis tools (family ``synthesis``): images that show what drives a class, from the model."""

from eis.tools.synthesis.base import SynthesisTool

__all__ = ["SynthesisTool"]
