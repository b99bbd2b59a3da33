"""The features family: tools that return directions in activation space and, per input, each latent's
activation (sparse autoencoders, probes, simple baselines and the random-direction control)."""

from eis.tools.features.base import FeatureTask, FeatureTool, FoundFeatures

__all__ = ["FeatureTask", "FeatureTool", "FoundFeatures"]
