"""Elementwise tensor functions fused into one kernel by ``torch.compile`` where it works, else run eagerly.

Rule-based attribution (DeepLift's rescale rule) adds a handful of elementwise passes over every
activation; run eagerly each pass reads and writes the whole tensor, which on CPU costs more than the
arithmetic. Compiled, the passes fuse into one loop over memory (``benchmarks/bench_attribution.py``
measures the difference). Compiling needs a C++ compiler on CPU (Triton on GPU) and takes seconds the
first time in a process (inductor caches kernels on disk for later processes); where it fails, the same
function runs eagerly with the same values, after one warning. Set ``EIS_COMPILE=0`` to never compile.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

COMPILE_ENV = "EIS_COMPILE"
F = TypeVar("F", bound=Callable[..., torch.Tensor])


def compile_enabled() -> bool:
    """Whether :func:`fused` functions try ``torch.compile`` (``EIS_COMPILE=0`` turns it off)."""
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def fused(fn: F) -> F:
    """``fn`` compiled on first use (dynamic shapes), falling back to ``fn`` itself if compiling fails.

    ``fn`` must be a pure function of tensors whose compiled and eager results agree (tested per use).
    """
    compiled: Callable[..., torch.Tensor] | None = None
    failed = False

    @functools.wraps(fn)
    def run(*args: torch.Tensor) -> torch.Tensor:
        nonlocal compiled, failed
        if failed or not compile_enabled():
            return fn(*args)
        if compiled is None:
            # in-process compiling: no pool of compile workers in every worker process of a run
            compiled = torch.compile(fn, dynamic=True, options={"compile_threads": 1})
        try:
            return compiled(*args)
        except _compile_errors() as e:  # no compiler, unsupported platform: run eagerly instead
            out = fn(*args)  # bad inputs raise their own error here, and compiling stays on
            failed = True
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(
                f"torch.compile failed for {fn.__name__} ({first[:200]}); running it eagerly (slower, same "
                f"values). Set {COMPILE_ENV}=0 to skip compiling.",
                RuntimeWarning,
                stacklevel=2,
            )
            return out

    return run  # type: ignore[return-value]


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a failing compile raises (not, say, a watchdog's timeout, which must pass through)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError

    return TorchDynamoException, CppCompileError, ImportError, OSError
