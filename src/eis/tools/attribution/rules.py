"""Rule-based backward passes (DeepLift's rescale rule, LRP's epsilon rule) as custom autograd functions.

Captum implements these rules with module hooks and, for DeepLift, runs the inputs and their baselines
through the model as one doubled batch. Here each rule is an autograd function placed after its module
in a private, call-site-split copy of the model (see :mod:`eis.tools.attribution.rewrite`):

- DeepLift: each reference runs as one extra row in front of the inputs it is paired with (a black
  baseline costs one row of the batch, not a doubled batch); every activation's backward multiplies the
  incoming gradient by the rescale multiplier ``(y - y_ref) / (u - u_ref)`` against its group's reference
  row (the plain derivative where u == u_ref; for activations other than ReLU, where
  ``|u - u_ref| < 1e-10`` as in Captum). The map is ``(x - x_ref) * dF/dx``. For ReLU and 2x2 max pools
  the multiplier is computed in the backward, fused into one kernel where ``torch.compile`` works
  (:mod:`eis.fused`), so the forward is a plain forward.
- LRP-epsilon: with relevance written as ``R = a * g`` at every tensor ``a``, the epsilon rule for a
  linear module with output ``z`` becomes ``g_in = J^T (g_out * z / (z + eps * sign(z)))`` and relevance
  passes unchanged through activations (``g_u = g_a * a / u``); the map is ``x * g_x``.

``benchmarks/bench_attribution.py`` times these against Captum on the same model copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import fx, nn

from eis.errors import ToolRefusal
from eis.fused import fused
from eis.tools.attribution.rewrite import MaxPoolAsReLU

Types = tuple[type[nn.Module], ...]
_EPS_FALLBACK = 1e-10  # |u - u_ref| below which the rescale multiplier falls back to the derivative


def relu_rescaled(g: torch.Tensor, u: torch.Tensor, k: int) -> torch.Tensor:
    """``g`` times ReLU's rescale multiplier ``(relu(u) - relu(u_ref)) / (u - u_ref)``.

    ``u``'s rows are ``k`` groups of ``1 + N``, each led by its reference ``u_ref``. Where u == u_ref the
    multiplier is the derivative ``[u_ref > 0]``: the smallest normal float ``tiny`` added to the
    denominator, and ``[u_ref > 0] * tiny`` to the numerator, is lost in any nonzero difference of
    activations and turns 0/0 into that derivative, without masks or ``where``.
    """
    tiny = torch.finfo(u.dtype).tiny
    g, u = g.unflatten(0, (k, -1)), u.unflatten(0, (k, -1))
    u_ref = u[:, :1]
    dy = u.clamp(min=0) - u_ref.clamp(min=0) + (u_ref > 0).to(u.dtype) * tiny
    return (g * dy / (u - u_ref + tiny)).flatten(0, 1)


_relu_rescaled = fused(relu_rescaled)


class _ReluRescale(torch.autograd.Function):
    """Forward: ``relu(u)``; backward: the gradient times ReLU's rescale multiplier, one fused pass."""

    @staticmethod
    def forward(ctx, u, k):  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.k = k
        return u.relu()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return _relu_rescaled(g, u, ctx.k), None


class _Rescale(torch.autograd.Function):
    """Any elementwise activation: backward multiplies by ``(y - y_ref) / (u - u_ref)``, computed forward."""

    @staticmethod
    def forward(ctx, u, k, act):  # type: ignore[override]
        y = act(u)
        shape = (k, u.shape[0] // k, *u.shape[1:])
        uu, yy = u.reshape(shape), y.reshape(shape)
        du, dy = uu - uu[:, :1], yy - yy[:, :1]
        small = du.abs() < _EPS_FALLBACK
        m = torch.where(small, _derivative(act, u).reshape(shape), dy / torch.where(small, 1.0, du))
        ctx.save_for_backward(m.reshape(u.shape))
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return g * m, None, None


def _derivative(act: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """Elementwise derivative of ``act`` at ``u`` (the rescale rule's fallback where u == u_ref)."""
    with torch.enable_grad():
        v = u.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(act(v).sum(), v)
    return d


class _Grouped(nn.Module):
    """A module that only runs inside :func:`grouped`, on ``k`` groups of rows led by their reference."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: tuple[int, int] | None = None  # (k, rows of the whole batch)

    def _groups(self, x: torch.Tensor) -> int:
        if self.groups is None:
            raise RuntimeError(f"{type(self).__name__} runs only inside rules.grouped()")
        k, rows = self.groups
        if x.shape[0] != rows:
            raise ToolRefusal(
                f"deeplift needs the batch as the first dimension of every activation; got {tuple(x.shape)} "
                f"for a batch of {rows}"
            )
        return k


class Rescaled(_Grouped):
    """An elementwise activation whose backward follows DeepLift's rescale rule."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = self._groups(u)
        if isinstance(self.act, nn.ReLU):
            return _ReluRescale.apply(u, k)
        return _Rescale.apply(u, k, self.act)


def _pool_levels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2x2 / stride-2 max pooling as ``b + relu(a - b)``, columns then rows: both differences, the output."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    d1 = x[..., 0::2] - x[..., 1::2]
    y1 = x[..., 1::2] + d1.relu()
    d2 = y1[..., 0::2, :] - y1[..., 1::2, :]
    return d1, d2, y1[..., 1::2, :] + d2.relu()


def pool_rescaled(g: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, k: int) -> torch.Tensor:
    """The input gradient of :func:`_pool_levels` under the rescale rule (rows: ``k`` groups, as above).

    ``g`` and ``d2`` are (..., h, w), ``d1`` (..., 2h, w); the result (..., 2h, 2w).
    """
    g2 = relu_rescaled(g, d2, k)  # the rows' comparison: the first row's share
    rows = torch.stack((g2, g - g2), dim=-2).flatten(-3, -2)
    g1 = relu_rescaled(rows, d1, k)  # then the columns'
    return torch.stack((g1, rows - g1), dim=-1).flatten(-2)


_pool_rescaled = fused(pool_rescaled)


class _RescaledPool(torch.autograd.Function):
    """2x2 max pooling whose backward applies the rescale rule to each comparison of its ReLU tree.

    One autograd node (one fused kernel where compiled) instead of the tree's dozen: the gradients of
    both window halves are written straight into the input's gradient.
    """

    @staticmethod
    def forward(ctx, x, k):  # type: ignore[override]
        d1, d2, out = _pool_levels(x)
        ctx.save_for_backward(d1, d2)
        ctx.k, ctx.shape = k, x.shape
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        d1, d2 = ctx.saved_tensors
        gx = _pool_rescaled(g, d1, d2, ctx.k)
        shape = ctx.shape
        if gx.shape != shape:  # odd height or width: the last row / column was never in a window
            gx = nn.functional.pad(gx, (0, shape[-1] - gx.shape[-1], 0, shape[-2] - gx.shape[-2]))
        return gx, None


class RescaledMaxPool(_Grouped):
    """2x2 / stride-2 max pooling for DeepLift: the rescale rule on the ReLU tree of
    :class:`~eis.tools.attribution.rewrite.MaxPoolAsReLU` (same values and maps), in one autograd node."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RescaledPool.apply(x, self._groups(x))


def with_rescale(net: nn.Module, activations: Types) -> nn.Module:
    """Put DeepLift's rescale rule into ``net`` in place.

    2x2 / stride-2 max-pool trees become :class:`RescaledMaxPool`; every other ``activations`` module
    (one per call site, including the ReLUs of other pool trees) is wrapped in :class:`Rescaled`.
    """
    plain2 = lambda m: (m.kernel, m.stride, m.padding) == (2, 2, 0)  # noqa: E731
    _wrap(net, (MaxPoolAsReLU,), lambda m: RescaledMaxPool() if plain2(m) else m)
    _wrap(net, activations, Rescaled)
    return net


@contextlib.contextmanager
def grouped(net: nn.Module, k: int, rows: int) -> Iterator[None]:
    """Inside: ``net``'s rule modules treat a batch of ``rows`` as ``k`` groups, each led by its reference."""
    layers = [m for m in net.modules() if isinstance(m, _Grouped)]
    for m in layers:
        m.groups = (k, rows)
    try:
        yield
    finally:
        for m in layers:
            m.groups = None


def deeplift(net: nn.Module, inputs: torch.Tensor, refs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DeepLift maps of ``inputs`` (N, ...) against each reference in ``refs`` (K, ...): shape (K, N, ...).

    ``net`` must come from :func:`with_rescale`. Each map sums to ``F_t(x) - F_t(ref)``.
    """
    k, n = refs.shape[0], inputs.shape[0]
    rows = torch.cat((refs.unsqueeze(1), inputs.unsqueeze(0).expand(k, *inputs.shape)), dim=1)
    x = rows.reshape(k * (1 + n), *inputs.shape[1:]).detach().requires_grad_(True)
    with grouped(net, k, x.shape[0]):
        out = net(x).reshape(k, 1 + n, -1)[:, 1:]
        picked = out.gather(2, target.view(1, n, 1).expand(k, n, 1))
        (grad,) = torch.autograd.grad(picked.sum(), x)
    return (inputs - refs.unsqueeze(1)) * grad.reshape(k, 1 + n, *inputs.shape[1:])[:, 1:]


class _EpsilonScale(torch.autograd.Function):
    """Identity forward; backward scales the gradient by ``z / (z + eps * sign(z))``, sign(0) := 1."""

    @staticmethod
    def forward(ctx, z, eps):  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        size = z.abs()  # z / (z + eps * sign(z)) == |z| / (|z| + eps), without masks
        return g * size / (size + ctx.eps), None


class _PassThrough(torch.autograd.Function):
    """Activation whose backward passes relevance unchanged: ``g_u = g_a * a / u`` (0 where u == 0)."""

    @staticmethod
    def forward(ctx, u, act):  # type: ignore[override]
        a = act(u)
        ctx.save_for_backward(torch.where(u == 0, 0.0, a / torch.where(u == 0, 1.0, u)))
        return a

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (ratio,) = ctx.saved_tensors
        return g * ratio, None


def epsilon_scale(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z`` unchanged; LRP's epsilon rule for the module that produced it in the backward pass."""
    return _EpsilonScale.apply(z, eps)


class PassThrough(nn.Module):
    """An activation through which LRP passes relevance unchanged (Captum's rule for Tanh).

    For ReLU that rule is the plain gradient, so ReLUs are left as they are.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return _PassThrough.apply(u, self.act)


def with_epsilon_rule(gm: fx.GraphModule, linear: Types, activations: Types, eps: float) -> fx.GraphModule:
    """Put LRP's rules into a traced copy in place: epsilon rule after ``linear``, pass-through activations.

    The rule after a linear module is a graph node, not a wrapper module, so parameter names stay those of
    the original model (the copy's weights are refreshed from it by name).
    """
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), linear):
            with gm.graph.inserting_after(node):
                scaled = gm.graph.call_function(epsilon_scale, (node, eps))
            node.replace_all_uses_with(scaled, delete_user_cb=lambda user, new=scaled: user is not new)
    gm.recompile()
    _wrap(gm, tuple(a for a in activations if a is not nn.ReLU), PassThrough)
    return gm


def lrp(net: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LRP maps of ``inputs`` for ``target`` through a :func:`with_epsilon_rule` network: ``x * g_x``."""
    x = inputs.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).gather(1, target[:, None]).sum(), x)
    return x.detach() * g


def _wrap(net: nn.Module, types: Types, wrapper: Callable[[nn.Module], nn.Module]) -> None:
    """Replace every submodule of one of ``types`` by ``wrapper(submodule)`` (wrappers are not revisited)."""
    targets = [(name, m) for name, m in net.named_modules() if name and isinstance(m, types)]
    for name, mod in targets:
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, wrapper(mod))
