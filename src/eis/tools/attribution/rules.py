"""Rule-based backward passes (DeepLift's rescale rule, LRP's epsilon rule) as custom autograd functions.

Captum implements these rules with module hooks and, for DeepLift, runs the inputs and their baselines
through the model as one doubled batch. Here each rule is an autograd function placed after its module
in a private, call-site-split copy of the model (see :mod:`eis.tools.attribution.rewrite`):

- DeepLift: the baselines run once on their own (a black baseline is one image, not a batch) while
  every activation records its reference input and output; the inputs then run with a backward that
  multiplies the incoming gradient by the rescale multiplier ``(y - y_ref) / (u - u_ref)`` (the plain
  derivative where u == u_ref; for activations other than ReLU, where ``|u - u_ref| < 1e-10`` as in
  Captum). The map is ``(x - x_ref) * dF/dx``.
- LRP-epsilon: with relevance written as ``R = a * g`` at every tensor ``a``, the epsilon rule for a
  linear module with output ``z`` becomes ``g_in = J^T (g_out * z / (z + eps * sign(z)))`` and relevance
  passes unchanged through activations (``g_u = g_a * a / u``); the map is ``x * g_x``.

``benchmarks/bench_attribution.py`` times these against Captum on the same model copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import fx, nn

from eis.errors import ToolRefusal
from eis.tools.attribution.rewrite import MaxPoolAsReLU

Types = tuple[type[nn.Module], ...]
Pair = tuple[torch.Tensor, torch.Tensor]
_EPS_FALLBACK = 1e-10  # |u - u_ref| below which the rescale multiplier falls back to the derivative


class _Rescale(torch.autograd.Function):
    """Forward: ``act(u)``; backward: gradient times the rescale multiplier against the recorded reference.

    For ReLU see :func:`_relu_multiplier`.
    """

    @staticmethod
    def forward(ctx, u, ref_in, ref_out, act):  # type: ignore[override]
        y = act(u)
        if isinstance(act, nn.ReLU):
            m = _pair_multiplier(u, y, (ref_in, ref_out))
        else:
            shape = (ref_in.shape[0], u.shape[0] // ref_in.shape[0], *u.shape[1:])
            du = u.reshape(shape) - ref_in.unsqueeze(1)
            dy = y.reshape(shape) - ref_out.unsqueeze(1)
            small = du.abs() < _EPS_FALLBACK
            m = torch.where(small, _derivative(act, u).reshape(shape), dy / torch.where(small, 1.0, du))
            m = m.reshape(u.shape)
        ctx.save_for_backward(m)
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return g * m, None, None, None


def _relu_multiplier(du: torch.Tensor, dy: torch.Tensor, ref_in: torch.Tensor) -> torch.Tensor:
    """ReLU's rescale multiplier from reference-major differences (overwrites ``du`` and ``dy``).

    ``(dy + p_ref * tiny) / (du + tiny)`` is dy / du wherever du != 0 (tiny is the smallest normal float,
    lost in any nonzero difference of activations) and the derivative ``p_ref = [u_ref > 0]`` where
    du == 0, without the masks and ``where`` calls of the general case (slow on CPU).
    """
    tiny = torch.finfo(du.dtype).tiny
    p_ref = ref_in.sign().clamp_(min=0).mul_(tiny).unsqueeze(1)
    return dy.add_(p_ref).div_(du.add_(tiny))


def _pair_multiplier(d: torch.Tensor, r: torch.Tensor, ref: Pair) -> torch.Tensor:
    """ReLU's rescale multiplier for ``r = relu(d)`` against the reference (input, output) pair."""
    d_ref, r_ref = ref
    n = d_ref.shape[0]
    shape = (n, d.shape[0] // n, *d.shape[1:])
    du = d.reshape(shape) - d_ref.unsqueeze(1)
    dy = r.reshape(shape) - r_ref.unsqueeze(1)
    return _relu_multiplier(du, dy, d_ref).reshape(d.shape)


def _derivative(act: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """Elementwise derivative of ``act`` at ``u`` (the rescale rule's fallback where u == u_ref)."""
    with torch.enable_grad():
        v = u.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(act(v).sum(), v)
    return d


class _Recorder(nn.Module):
    """A module that stores what it sees on the reference batch inside :func:`recording`.

    Afterwards each forward on ``k * N`` inputs (reference-major: rows ``i * N .. (i+1) * N`` pair with
    reference ``i``) uses what was stored.
    """

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.ref: Any = None


class Rescaled(_Recorder):
    """An elementwise activation whose backward follows DeepLift's rescale rule."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.recording:
            y = self.act(u)
            self.ref = (u.detach(), y.detach())
            return y
        if self.ref is None:
            raise RuntimeError("Rescaled activation run without a recorded reference")
        ref_in, ref_out = self.ref
        if u.shape[0] % ref_in.shape[0] or u.shape[1:] != ref_in.shape[1:]:
            raise ToolRefusal(
                f"deeplift needs the batch as the first dimension of every activation; got {tuple(u.shape)} "
                f"against reference {tuple(ref_in.shape)}"
            )
        return _Rescale.apply(u, ref_in, ref_out, self.act)


def _pool_levels(x: torch.Tensor) -> tuple[Pair, Pair, torch.Tensor]:
    """2x2 / stride-2 max pooling as ``b + relu(a - b)``, columns then rows: ((d1, r1), (d2, r2), out)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    d1 = x[..., 0::2] - x[..., 1::2]
    r1 = d1.relu()
    y1 = x[..., 1::2] + r1
    d2 = y1[..., 0::2, :] - y1[..., 1::2, :]
    r2 = d2.relu()
    return (d1, r1), (d2, r2), y1[..., 1::2, :] + r2


class _RescaledPool(torch.autograd.Function):
    """2x2 max pooling whose backward applies the rescale rule to each comparison of its ReLU tree.

    One autograd node instead of the tree's dozen: the gradients of both window halves are written
    straight into the input's gradient, without autograd's zero-filled slice gradients.
    """

    @staticmethod
    def forward(ctx, x, refs):  # type: ignore[override]
        (d1, r1), (d2, r2), out = _pool_levels(x)
        ctx.save_for_backward(_pair_multiplier(d1, r1, refs[0]), _pair_multiplier(d2, r2, refs[1]))
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        m1, m2 = ctx.saved_tensors
        g_rows = g.new_empty(m1.shape)
        g_rows[..., 0::2, :] = g * m2
        g_rows[..., 1::2, :] = g - g_rows[..., 0::2, :]
        shape = ctx.shape
        gx = g.new_zeros(shape) if shape[-1] % 2 or shape[-2] % 2 else g.new_empty(shape)
        h, w = m1.shape[-2], 2 * m1.shape[-1]
        gx[..., :h, 0:w:2] = g_rows * m1
        gx[..., :h, 1:w:2] = g_rows - gx[..., :h, 0:w:2]
        return gx, None


class RescaledMaxPool(_Recorder):
    """2x2 / stride-2 max pooling for DeepLift: the rescale rule on the ReLU tree of
    :class:`~eis.tools.attribution.rewrite.MaxPoolAsReLU` (same values and maps), in one autograd node."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recording:
            first, second, out = _pool_levels(x)
            self.ref = (first, second, x.shape)
            return out
        if self.ref is None:
            raise RuntimeError("RescaledMaxPool run without a recorded reference")
        ref_shape = self.ref[2]
        if x.shape[0] % ref_shape[0] or x.shape[1:] != ref_shape[1:]:
            raise ToolRefusal(f"deeplift needs the batch first in every pool's input; got {tuple(x.shape)}")
        return _RescaledPool.apply(x, self.ref)


def with_rescale(net: nn.Module, activations: Types) -> nn.Module:
    """Put DeepLift's rescale rule into ``net`` in place.

    2x2 / stride-2 max-pool trees become :class:`RescaledMaxPool`; every other ``activations`` module
    (one per call site, including the ReLUs of other pool trees) is wrapped in :class:`Rescaled`.
    """
    _wrap(net, (MaxPoolAsReLU,), lambda m: RescaledMaxPool() if (m.kernel, m.stride) == (2, 2) else m)
    _wrap(net, activations, Rescaled)
    return net


@contextlib.contextmanager
def recording(net: nn.Module) -> Iterator[None]:
    """Inside: forward passes record references. On exit the references stay until :func:`forget`."""
    layers = [m for m in net.modules() if isinstance(m, _Recorder)]
    for m in layers:
        m.recording = True
    try:
        yield
    finally:
        for m in layers:
            m.recording = False


def forget(net: nn.Module) -> None:
    """Drop the recorded references (they hold activations of the whole reference batch)."""
    for m in net.modules():
        if isinstance(m, _Recorder):
            m.ref = None


def deeplift(net: nn.Module, inputs: torch.Tensor, refs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DeepLift maps of ``inputs`` (N, ...) against each reference in ``refs`` (K, ...): shape (K, N, ...).

    ``net`` must come from :func:`with_rescale`. Each map sums to ``F_t(x) - F_t(ref)``.
    """
    k, n = refs.shape[0], inputs.shape[0]
    try:
        with torch.no_grad(), recording(net):
            net(refs)
        x = inputs.unsqueeze(0).expand(k, *inputs.shape).reshape(k * n, *inputs.shape[1:])
        x = x.detach().requires_grad_(True)
        out = net(x)
        (grad,) = torch.autograd.grad(out.gather(1, target.repeat(k)[:, None]).sum(), x)
    finally:
        forget(net)
    shape = (k, n, *inputs.shape[1:])
    return (x.detach().reshape(shape) - refs.unsqueeze(1)) * grad.reshape(shape)


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
