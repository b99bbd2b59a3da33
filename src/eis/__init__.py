"""eis, the Engineer's Interpretability Suite: judge interpretability tools by the planted flaws they find."""

__version__ = "0.1.0"
