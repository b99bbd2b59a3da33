"""Throughput of every attribution tool, and each gradient tool's time over its floor.

For each (arch, input size) the script times every registered attribution tool on one batch (best of
``--repeats`` after a warm-up) and prints images per second. For gradient tools it also prints the ratio
of the tool's time to its floor: the time of as many forward+backward passes (of the batch, with respect
to the input) as the method needs, timed on the same model and batch in the same run. Target: <= 1.3x.

    .venv/bin/python benchmarks/bench_attribution.py            # batch 64, best of 5
    .venv/bin/python benchmarks/bench_attribution.py --quick    # batch 16, 1 repeat, fewer settings

DeepLift, DeepLiftShap and LRP are our own rule implementations (eis.tools.attribution.rules); for them
the script also times Captum's implementation on the same call-site-split model copy and prints the
speed-up (the reason to keep our own; their maps agree to float precision, see tests/test_attribution.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from eis.errors import ToolRefusal
from eis.testing import contract_model
from eis.tools.base import list_tools, make_tool

SETTINGS = [("cnn", 1, 16), ("cnn", 3, 32), ("resnet", 1, 16), ("resnet", 3, 32)]


def passes(name: str, tool: object) -> int | None:
    """Forward+backward passes of the batch a gradient tool needs (None for other tools)."""
    fixed = {
        "saliency": 1,
        "input_x_gradient": 1,
        "guided_backprop": 1,
        "deconvolution": 1,
        "lrp": 1,
        "gradcam": 1,
        "guided_gradcam": 2,
        "deeplift": 1,
    }  # fmt: skip  (DeepLift: one pass of the batch plus one reference row)
    if name in fixed:
        return fixed[name]
    per = {"integrated_gradients": "n_steps", "gradient_shap": "n_samples", "smoothgrad": "n_samples",
           "vargrad": "n_samples"}  # fmt: skip
    if name in per:
        return int(getattr(tool, per[name]))
    if name == "deeplift_shap":
        return int(tool.n_baselines)  # type: ignore[attr-defined]  (each input against each baseline)
    return None


def captum_reference(name: str, tool: object, model: torch.nn.Module) -> Callable | None:
    """Captum's implementation of one of our rule-based tools, on the same kind of model copy (or None)."""
    import warnings

    from captum.attr import LRP, DeepLift, DeepLiftShap

    from eis.tools.attribution.common import noisy_baselines
    from eis.tools.attribution.rewrite import drop_reshape_modules, maxpools_as_relus, split_activations

    warnings.filterwarnings("ignore", category=UserWarning)
    if name in ("deeplift", "deeplift_shap"):
        net = maxpools_as_relus(split_activations(model, name))
        if name == "deeplift":
            return lambda x, t: DeepLift(net).attribute(x, baselines=0.0, target=t)
        n = int(tool.n_baselines)  # type: ignore[attr-defined]
        # Captum at its fastest setting found here: chunks of 2 baselines (the minimum it accepts)
        return lambda x, t: sum(
            DeepLiftShap(net).attribute(x, baselines=c, target=t)
            for c in noisy_baselines(x, n, 0.1, 0).split(2)
        )
    if name == "lrp":
        net = drop_reshape_modules(split_activations(model, name))
        return lambda x, t: LRP(net).attribute(x, target=t)
    return None


def best_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best time of each function, runs interleaved so that load from other processes hits all alike."""
    for fn in fns:
        fn()  # warm-up (also fills the tools' per-model caches)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> Callable[[], object]:
    """One forward+backward pass of the batch, gradient with respect to the input only."""

    def run() -> object:
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(xi).gather(1, t[:, None]).sum(), xi)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 16, one repeat, two settings")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--tools", default="", help="comma-separated subset of tools")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (16 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 5)
    settings = [SETTINGS[0], SETTINGS[3]] if args.quick else SETTINGS
    names = args.tools.split(",") if args.tools else list_tools("attribution")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"batch {batch}, best of {repeats}, {torch.get_num_threads()} threads, {device}")
    worst = 0.0
    for arch, c, side in settings:
        where = f"{arch} {c}x{side}x{side}"
        model = contract_model(arch, c, side).to(device)
        g = torch.Generator().manual_seed(0)
        x = torch.rand((batch, c, side, side), generator=g).to(device)
        t = torch.randint(0, 10, (batch,), generator=g).to(device)
        for name in names:
            tool = make_tool(name)
            p = passes(name, tool)
            floor_fn = fwd_bwd(model, x, t)

            def floor_passes(p: int = p or 0, f: Callable[[], object] = floor_fn) -> None:
                for _ in range(p):
                    f()

            run = [lambda tool=tool, m=model, x=x, t=t: tool.attribute(m, x, t)]
            ref = captum_reference(name, tool, model) if arch == "cnn" or name != "lrp" else None
            try:
                # the floor and Captum are timed in separate interleaved pairs with the tool: Captum's
                # memory churn would otherwise slow whatever runs after it
                times = best_times(run + [floor_passes] if p else run, repeats)
                if ref is not None:
                    versus = best_times(run + [lambda ref=ref, x=x, t=t: ref(x.clone(), t)], repeats)
            except ToolRefusal as e:
                print(f"{where:18s} {name:24s}    refused: {e}", flush=True)
                continue
            secs = times[0]
            vs = f"  {versus[1] / versus[0]:4.1f}x faster than Captum's" if ref is not None else ""
            ratio = ""
            if p is not None:
                r = secs / times[1]
                worst = max(worst, r)
                ratio = f"{r:5.2f}x of {p} pass{'es' if p > 1 else ''}"
            print(f"{where:18s} {name:24s} {batch / secs:10.1f} img/s  {ratio}{vs}", flush=True)
    print(f"\nworst gradient-tool ratio to floor: {worst:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
