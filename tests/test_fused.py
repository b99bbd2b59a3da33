"""The fused (compiled where possible) kernels of the rescale rule, and the compile fallback."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from torch._dynamo.exc import TorchRuntimeError
from torch._inductor.exc import CppCompileError

from eis import fused as fused_mod
from eis.fused import COMPILE_ENV, fused
from eis.tools.attribution.rules import _pool_levels, pool_rescaled, relu_rescaled


def _rows_with_ties(shape: tuple[int, ...], k: int, seed: int) -> torch.Tensor:
    """k groups of rows led by their reference, where a third of the entries equal the reference exactly."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(shape, generator=g).unflatten(0, (k, -1))
    tie = torch.rand(u.shape, generator=g) < 1 / 3
    u = torch.where(tie, u[:, :1].expand_as(u), u)
    return u.flatten(0, 1).contiguous()


def _multiplier_by_definition(u: torch.Tensor, k: int) -> torch.Tensor:
    """(relu(u) - relu(u_ref)) / (u - u_ref), and [u_ref > 0] where u == u_ref, with explicit masks."""
    v = u.unflatten(0, (k, -1)).double()
    ref = v[:, :1].expand_as(v)
    du = v - ref
    ratio = (v.clamp(min=0) - ref.clamp(min=0)) / torch.where(du == 0, 1.0, du)
    return torch.where(du == 0, (ref > 0).double(), ratio).flatten(0, 1)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("shape_tail", [(7,), (4, 5, 6)])
def test_relu_rescaled_matches_the_definition(k: int, shape_tail: tuple[int, ...]) -> None:
    u = _rows_with_ties((k * 5, *shape_tail), k, seed=k)
    g = torch.randn(u.shape, generator=torch.Generator().manual_seed(1))
    expected = (g.double() * _multiplier_by_definition(u, k)).float()
    eager = relu_rescaled(g, u, k)
    torch.testing.assert_close(eager, expected, rtol=1e-6, atol=1e-7)
    with warnings.catch_warnings():
        if shutil.which("c++") or shutil.which("g++"):  # a machine that can compile must not fall back
            warnings.simplefilter("error", RuntimeWarning)
        compiled = fused(relu_rescaled)(g, u, k)
    torch.testing.assert_close(compiled, expected, rtol=1e-6, atol=1e-7)


def test_pool_rescaled_compiled_equals_eager_and_sums_to_delta() -> None:
    """The pool's input gradient under the rescale rule conserves the output difference per window."""
    k = 2
    x = _rows_with_ties((k * 4, 3, 6, 8), k, seed=4)
    d1, d2, out = _pool_levels(x)
    g = torch.ones_like(out)
    eager = pool_rescaled(g, d1, d2, k)
    torch.testing.assert_close(fused(pool_rescaled)(g, d1, d2, k), eager, rtol=1e-6, atol=1e-7)
    # summation to delta: sum over each window of grad * (x - x_ref) == out - out_ref
    xv, ov, gv = (t.unflatten(0, (k, -1)) for t in (x, out, eager))
    contrib = (gv * (xv - xv[:, :1])).unflatten(-1, (4, 2)).unflatten(-3, (3, 2)).sum((-1, -3))
    torch.testing.assert_close(contrib, ov - ov[:, :1], rtol=1e-5, atol=1e-6)


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_compile_failure_falls_back_once_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(fn, **kwargs):  # stands in for torch.compile on a machine without a C++ compiler
        def run(*args):
            calls.append(1)
            raise CppCompileError(["c++", "kernel.cpp"], "c++: not found")

        return run

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(fused_mod.torch, "compile", broken)
    f = fused(_double)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed for _double \(C\+\+ compile error\)"):
        assert f(torch.ones(2)).tolist() == [2.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]  # eager from now on: no retry, no warning
    assert len(calls) == 1


def test_other_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watchdog's timeout raised during a compiled call is not taken for a compile failure."""

    class Timeout(Exception):
        pass

    def slow(fn, **kwargs):
        def run(*args):
            raise Timeout

        return run

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(fused_mod.torch, "compile", slow)
    with pytest.raises(Timeout):
        fused(_double)(torch.ones(1))


def test_bad_inputs_raise_their_own_error_and_keep_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_compile(fn, **kwargs):
        def run(*args):
            seen.append(1)
            try:
                return fn(*args)
            except RuntimeError as e:  # dynamo reports a shape error while tracing as one of its own
                raise TorchRuntimeError(str(e)) from e

        return run

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(fused_mod.torch, "compile", fake_compile)
    f = fused(torch.add)
    with pytest.raises(RuntimeError, match="size of tensor") as err:
        f(torch.ones(2), torch.ones(3))
    assert not isinstance(err.value, TorchRuntimeError)  # the eager call's own error
    f(torch.ones(2), torch.ones(2))
    assert len(seen) == 2  # the bad call did not switch compiling off


def test_compile_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(fn, **kwargs):
        raise AssertionError("torch.compile called with EIS_COMPILE=0")

    monkeypatch.setenv(COMPILE_ENV, "0")
    monkeypatch.setattr(fused_mod.torch, "compile", never)
    assert fused(_double)(torch.ones(1)).item() == 2.0
    assert not fused_mod.compile_enabled()
