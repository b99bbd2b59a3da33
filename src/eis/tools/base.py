"""The tool contract and the one tool registry.

A tool is a class whose constructor takes its settings (keyword arguments with defaults) and whose call
takes data, in the scikit-learn and Captum style. Tools see models and inputs only: never a Case's truth,
the results store or a track. Adding a tool = one file, one ``@register_tool`` and passing
``eis.testing.check_tool``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.registry import Registry

FAMILIES = (
    "attribution", "detection", "synthesis", "circuits", "repair", "rule_recovery", "features", "lm_trigger",
)  # fmt: skip
FAMILIES += ("lm_detect",)  # model-level detection for language models (eis.tools.lm_detect)
FAMILIES += ("lm_elicit",)  # eliciting a password-locked capability (eis.tools.lm_elicit)


@dataclasses.dataclass
class Tool:
    """Base class: subclasses are dataclasses whose fields are the tool's settings."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    control: ClassVar[bool] = False  # controls (edge detector, random, blank, ...) appear in every table
    summary: ClassVar[str] = ""

    def settings(self) -> dict[str, Any]:
        """The tool's settings as a JSON-serialisable dict (part of the results cache key)."""
        return dataclasses.asdict(self)


class AttributionTool(Tool):
    """Maps (model, inputs, target classes) to one relevance map per input.

    ``attribute`` returns a float tensor shaped exactly like ``inputs`` (N, C, H, W), on the inputs'
    device. It must not change the model's weights, mode or hooks, nor the inputs.
    """

    family: ClassVar[str] = "attribution"

    def attribute(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


TOOLS: Registry[type[Tool]] = Registry("tool")


def register_tool(cls: type[Tool]) -> type[Tool]:
    """Class decorator: register ``cls`` under ``cls.name`` (and make it a dataclass)."""
    if not cls.name or cls.family not in FAMILIES:
        raise ValueError(f"tool {cls.__name__} needs a name and a family in {FAMILIES}")
    cls = dataclasses.dataclass(cls)
    TOOLS.register(cls.name, cls)
    return cls


def make_tool(name: str, **settings: Any) -> Tool:
    """Instantiate a registered tool; unknown settings get a one-line error listing the valid ones."""
    _load_builtin_tools()
    cls = TOOLS.get(name)
    valid = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(settings) - valid)
    if bad:
        raise EisError(
            f"tool {name!r} has no setting {bad[0]!r}; valid: {', '.join(sorted(valid)) or '(none)'}"
        )
    return cls(**settings)


def list_tools(family: str | None = None, *, controls: bool | None = None) -> list[str]:
    """Registered tool names, optionally filtered by family and by whether they are controls."""
    _load_builtin_tools()
    out = []
    for n in TOOLS.names():
        cls = TOOLS.get(n)
        if family is not None and cls.family != family:
            continue
        if controls is not None and cls.control != controls:
            continue
        out.append(n)
    return out


def _load_builtin_tools() -> None:
    """Import the built-in tool modules so that their registrations run."""
    import eis.tools.builtin  # noqa: F401
