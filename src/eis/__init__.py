"""eis, the Engineer's Interpretability Suite: judge interpretability tools by the planted flaws they find."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``eis.audit`` is imported on first use (it pulls in torch and the tools)."""
    if name == "audit":
        import importlib

        return importlib.import_module("eis.audit")
    raise AttributeError(f"module 'eis' has no attribute {name!r}")
