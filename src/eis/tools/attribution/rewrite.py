"""Make hook-based methods correct: a private copy of the model where every activation call is its own module.

Captum's DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution and LRP change gradients with module
hooks. They silently go wrong when one activation module is called twice (the zoo's ``resnet`` reuses
``block.relu``), when it is in-place, or when the activation is a function call (``F.relu``) that no hook
sees. :func:`split_activations` traces a deep copy of the model with ``torch.fx`` and gives every
activation *call site* (module, ``F.relu``, ``torch.relu``, ``x.relu()``, ...) a fresh non-inplace module;
the caller's model is never touched. :func:`check_ops` then refuses graphs holding an operation the
method has no rule for, so that nothing unsupported passes through as a plain gradient.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn

from eis.errors import ToolRefusal

# Activation call sites: functions/methods and the module that replaces each (all non-inplace).
_ACT_FUNCTIONS = {
    F.relu: nn.ReLU,
    torch.relu: nn.ReLU,
    torch.relu_: nn.ReLU,
    F.relu_: nn.ReLU,
    torch.sigmoid: nn.Sigmoid,
    torch.tanh: nn.Tanh,
    F.elu: nn.ELU,
    F.softplus: nn.Softplus,
}
_ACT_METHODS = {"relu": nn.ReLU, "relu_": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
ACTIVATIONS = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d)

# Operations that are linear (or only move data), so plain gradients are the right rule through them.
LINEAR_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Flatten,
    nn.Dropout, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
)  # fmt: skip
SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, getattr, operator.getitem, torch.squeeze, torch.unsqueeze}
SHAPE_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "squeeze", "unsqueeze", "permute", "dim"}
LINEAR_FUNCTIONS = {operator.add, operator.sub, operator.neg, torch.add, torch.cat, torch.mean, torch.sum,
                    F.adaptive_avg_pool2d, F.avg_pool2d}  # fmt: skip
LINEAR_METHODS = {"add", "mean", "sum", "sub", "neg"}
_SCALING = {operator.mul, operator.truediv, torch.mul}


def split_activations(model: nn.Module, method: str, copy_model: bool = True) -> fx.GraphModule:
    """A traced (deep copy of) ``model`` in which each activation call site is its own non-inplace module.

    With ``copy_model=False`` the trace shares ``model``'s modules: pass a copy you own.
    """
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model) if copy_model else model)
    except Exception as e:  # noqa: BLE001 - any tracing failure means we cannot vouch for the hooks
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ToolRefusal(
            f"{method} needs every activation as its own module, but torch.fx cannot trace this model ({msg})"
        ) from None
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        new: nn.Module | None = None
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, ACTIVATIONS):
                new = copy.deepcopy(mod)
                if hasattr(new, "inplace"):
                    new.inplace = False
        elif node.op == "call_function" and node.target in _ACT_FUNCTIONS and _only_input(node):
            new = _ACT_FUNCTIONS[node.target]()
        elif node.op == "call_method" and node.target in _ACT_METHODS and _only_input(node):
            new = _ACT_METHODS[node.target]()
        if new is None:
            continue
        name = f"eis_act_{count}"
        count += 1
        gm.add_submodule(name, new)
        with graph.inserting_after(node):
            repl = graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(repl)
        graph.erase_node(node)
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.eval()
    return gm


class MaxPoolAsReLU(nn.Module):
    """Max pooling written as trees of ``b + relu(a - b)``: first across each window's columns, then rows.

    Same values and gradients as ``nn.MaxPool2d`` (up to ties), but DeepLift's rescale rule on these ReLUs
    satisfies summation-to-delta exactly, which Captum's own max-pool rule does not when the input and
    baseline maxima sit at different positions. A window's columns (then rows) are strided slices, so
    each tree level is one elementwise call on the whole batch, whose first dimension stays the batch.
    ``padding`` pads with one constant below every value of the batch (as ``nn.MaxPool2d`` pads with
    -inf): a padded cell never wins, and since input and reference rows share the constant, it carries
    no difference between them, so no attribution.
    """

    def __init__(self, kernel: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(2 * (kernel - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p), value=float(x.detach().amin()) - 1.0)
        relus = iter(self.relus)
        for dim in (-1, -2):
            x = self._tree(self._windows(x, dim), relus)
        return x

    def _windows(self, x: torch.Tensor, dim: int) -> list[torch.Tensor]:
        """The ``i``-th element of every window along ``dim``, for each ``i`` (strided views)."""
        k, s = self.kernel, self.stride
        out = (x.shape[dim] - k) // s + 1
        return [_strided(x.narrow(dim, i, s * (out - 1) + 1), dim, s) for i in range(k)]

    @staticmethod
    def _tree(vals: list[torch.Tensor], relus: Iterator[nn.Module]) -> torch.Tensor:
        while len(vals) > 1:
            nxt = [b + next(relus)(a - b) for a, b in zip(vals[0::2], vals[1::2], strict=False)]
            vals = nxt + vals[len(nxt) * 2 :]
        return vals[0]


def _strided(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Every ``step``-th element of ``x`` along ``dim`` (a view)."""
    index = [slice(None)] * x.dim()
    index[dim] = slice(None, None, step)
    return x[tuple(index)]


def maxpools_as_relus(gm: fx.GraphModule) -> fx.GraphModule:
    """Swap square 2-D max-pool modules of a traced copy for :class:`MaxPoolAsReLU` (others are left)."""
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.MaxPool2d) and _plain_pool(mod):
            parent, _, leaf = str(node.target).rpartition(".")
            pool = MaxPoolAsReLU(mod.kernel_size, mod.stride, mod.padding)
            setattr(gm.get_submodule(parent) if parent else gm, leaf, pool)
    gm.recompile()
    return gm


def _plain_pool(mod: nn.MaxPool2d) -> bool:
    """Square kernel, stride and padding given as ints (ResNet's 3x3 / stride 2 / padding 1 included)."""
    k, s, p = mod.kernel_size, mod.stride, mod.padding
    plain = mod.dilation == 1 and not mod.ceil_mode and not mod.return_indices
    return isinstance(k, int) and isinstance(s, int) and isinstance(p, int) and plain


def drop_reshape_modules(gm: fx.GraphModule) -> fx.GraphModule:
    """Turn ``nn.Flatten`` / ``nn.Identity`` modules into plain graph ops (LRP wants a rule per module)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif isinstance(mod, nn.Flatten):
            with gm.graph.inserting_after(node):
                repl = gm.graph.call_function(torch.flatten, (node.args[0], mod.start_dim, mod.end_dim))
            node.replace_all_uses_with(repl)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _only_input(node: fx.Node) -> bool:
    """True when an activation call has no arguments besides its input (and maybe ``inplace``)."""
    return len(node.args) == 1 and set(node.kwargs) <= {"inplace"}


def check_ops(gm: fx.GraphModule, method: str, modules: Iterable[type], residual: bool = True) -> None:
    """Refuse when the traced model holds an operation ``method`` has no correct rule for.

    ``modules`` are the leaf module types allowed; functions must be linear or shape-only; products are
    allowed only with a constant. With ``residual=False`` the sum of two computed tensors is refused too.
    """
    allowed = tuple(modules)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if not isinstance(mod, allowed):
                raise ToolRefusal(f"{method} has no rule for module {node.target} ({type(mod).__name__})")
        elif node.op in ("call_function", "call_method"):
            fn = node.target
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
            if fn in SHAPE_FUNCTIONS or fn in SHAPE_METHODS:
                continue
            if fn in _SCALING and len(tensors) <= 1:
                continue
            if fn in LINEAR_FUNCTIONS or fn in LINEAR_METHODS:
                if not residual and fn in (operator.add, torch.add, "add") and len(tensors) > 1:
                    raise ToolRefusal(
                        f"{method} has no propagation rule for residual additions ({node.name}); Captum "
                        "would pass the full relevance down both branches, breaking conservation"
                    )
                continue
            raise ToolRefusal(f"{method} has no rule for operation {name!r} ({node.name}) in this model")


def leaf_calls(gm: fx.GraphModule) -> list[str]:
    """Names of the leaf modules in the order the traced graph calls them."""
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
