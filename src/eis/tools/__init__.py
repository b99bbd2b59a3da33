"""Interpretability tools, one family per sub-package, all in one registry."""

from eis.tools.base import TOOLS, AttributionTool, Tool, list_tools, make_tool, register_tool

__all__ = ["TOOLS", "AttributionTool", "Tool", "list_tools", "make_tool", "register_tool"]
