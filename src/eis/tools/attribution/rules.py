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

``benchmarks/bench_attribution.py --vs-captum`` measures these against Captum on the same models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import fx, nn

from eis.errors import ToolRefusal

Types = tuple[type[nn.Module], ...]
_EPS_FALLBACK = 1e-10  # |u - u_ref| below which the rescale multiplier falls back to the derivative


class _Rescale(torch.autograd.Function):
    """Forward: ``act(u)``; backward: gradient times the rescale multiplier against the recorded reference.

    For ReLU, u == u_ref means the derivative at u is that at u_ref, so one reference-sized correction
    term replaces the masks and ``where`` calls of the general case (which are slow on CPU).
    """

    @staticmethod
    def forward(ctx, u, ref_in, ref_out, act):  # type: ignore[override]
        y = act(u)
        n = ref_in.shape[0]
        shape = (n, u.shape[0] // n, *u.shape[1:])
        du = u.reshape(shape) - ref_in.unsqueeze(1)
        dy = y.reshape(shape) - ref_out.unsqueeze(1)
        if isinstance(act, nn.ReLU):
            # (dy + p_ref * tiny) / (du + tiny) is dy / du wherever du != 0 (tiny is the smallest normal
            # float, lost in any nonzero difference of activations) and the derivative p_ref where du == 0
            tiny = torch.finfo(u.dtype).tiny
            p_ref = ref_in.sign().clamp_(min=0).mul_(tiny).unsqueeze(1)
            m = dy.add_(p_ref).div_(du.add_(tiny))
        else:
            small = du.abs() < _EPS_FALLBACK
            m = torch.where(small, _derivative(act, u).reshape(shape), dy / torch.where(small, 1.0, du))
        ctx.save_for_backward(m.reshape(u.shape))
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return g * m, None, None, None


def _derivative(act: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """Elementwise derivative of ``act`` at ``u`` (the rescale rule's fallback where u == u_ref)."""
    with torch.enable_grad():
        v = u.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(act(v).sum(), v)
    return d


class Rescaled(nn.Module):
    """An elementwise activation whose backward follows DeepLift's rescale rule.

    Inside :func:`recording` it stores its input and output on the reference batch; afterwards each
    forward on ``k * n`` inputs (reference-major: rows ``i * N .. (i+1) * N`` pair with reference ``i``)
    uses them.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act
        self.recording = False
        self.ref: tuple[torch.Tensor, torch.Tensor] | None = None

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


def with_rescale(net: nn.Module, activations: Types) -> nn.Module:
    """Wrap every ``activations`` module of ``net`` (one per call site) in :class:`Rescaled`, in place."""
    _wrap(net, activations, Rescaled)
    return net


@contextlib.contextmanager
def recording(net: nn.Module) -> Iterator[None]:
    """Inside: forward passes record references. On exit the references stay until :func:`forget`."""
    layers = [m for m in net.modules() if isinstance(m, Rescaled)]
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
        if isinstance(m, Rescaled):
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
