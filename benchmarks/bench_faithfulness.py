"""Deletion curve, 64 steps on 64 inputs of the zoo ``cnn`` (3x32x32): ours vs Quantus' PixelFlipping.

Quantus lives only in this benchmark's own virtual environment, never in the project's::

    python3 -m venv benchmarks/.venv-quantus
    benchmarks/.venv-quantus/bin/pip install -c constraints.txt torch==2.13.0 quantus

(``python benchmarks/bench_faithfulness.py --setup`` runs those two commands.) Plain ``quantus`` pulls
numpy, scipy, scikit-image, opencv-python, pandas, matplotlib, tqdm, cachetools: no torchvision and no CUDA
packages (those come only with ``quantus[torch]``); torch is the pinned CPU wheel.

Run from the repository root with the project's interpreter::

    .venv/bin/python benchmarks/bench_faithfulness.py

Same model (random weights, seed 0, logit layer scaled x10 so probabilities span (0, 1) and the curves are
not trivially flat), same inputs, same random maps (a permutation of distinct values per image, repeated
over RGB: no ties between pixels), black (0) baseline, softmax probability of the target, 48 features =
16 pixels x 3 channels per step (Quantus' check that features_in_step divides H * W is switched off for
this: it forbids whole-RGB-pixel steps; and its "black" baseline is each image's minimum, so we pass 0.0).
Quantus returns the 64 perturbed points; ours adds the unperturbed point first. Prints the times (best of
``--repeats``), the speed ratios and the max abs difference of the curves. A plain reference loop (one
forward pass per step over the whole batch, no Quantus) is timed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venv-quantus"
N, STEPS, SIDE = 64, 64, 32


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _model(state: dict | None = None):
    import torch

    # Load archs.py by path: the Quantus venv lacks the project's dependencies, which eis.zoo's
    # package __init__ imports; archs.py needs only torch and eis.registry.
    sys.path.insert(0, str(ROOT / "src"))
    spec = importlib.util.spec_from_file_location("_bench_archs", ROOT / "src" / "eis" / "zoo" / "archs.py")
    archs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(archs)
    build_arch = archs.build_arch

    torch.manual_seed(0)
    model = build_arch("cnn", 3, 10, SIDE)
    if state is None:
        with torch.no_grad():
            model.classifier[-1].weight.mul_(10.0)
    else:
        model.load_state_dict(state)
    return model.eval()


def run_quantus(workdir: Path, repeats: int) -> None:
    """Inside the Quantus venv: PixelFlipping on the saved model, inputs and maps."""
    import numpy as np
    import quantus
    import torch

    # Quantus asserts that features_in_step divides H * W, but then flattens all C * H * W features of an
    # RGB image: 64 whole-pixel steps (48 features = 16 pixels x 3 channels) trip the assert. Disable only
    # that check; the perturbation and prediction code run unchanged.
    quantus.helpers.asserts.assert_features_in_step = lambda **kwargs: None
    data = torch.load(workdir / "data.pt", weights_only=True)
    model = _model(data["state"])
    x, y, a = data["x"].numpy(), data["y"].numpy(), data["a"].numpy()
    metric = quantus.PixelFlipping(
        features_in_step=3 * SIDE * SIDE // STEPS,
        normalise=False,
        abs=False,
        perturb_baseline=0.0,  # Quantus' "black" is each image's minimum value, not 0
        disable_warnings=True,
        display_progressbar=False,
    )

    def call():
        return metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu", batch_size=N, softmax=True)

    seconds, curves = _best(call, repeats)
    np.save(workdir / "quantus.npy", np.asarray(curves, dtype=np.float64))
    (workdir / "quantus.json").write_text(json.dumps({"seconds": seconds, "version": quantus.__version__}))


def reference_loop(model, x, y, a) -> object:
    """The straightforward loop: for each step, delete the next 16 pixels of every image, one forward pass."""
    import torch

    order = a[:, 0].flatten(1).argsort(1, descending=True)
    xp = x.clone()
    per = SIDE * SIDE // STEPS
    out = []
    with torch.no_grad():
        out.append(model(xp).softmax(1).gather(1, y[:, None]).squeeze(1))
        for k in range(STEPS):
            idx = order[:, k * per : (k + 1) * per]
            flat = xp.view(N, 3, -1)
            flat.scatter_(2, idx[:, None].expand(-1, 3, -1), 0.0)
            out.append(model(xp).softmax(1).gather(1, y[:, None]).squeeze(1))
    return torch.stack(out, 1).double()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (ours, the floor)")
    p.add_argument("--setup", action="store_true", help="create benchmarks/.venv-quantus and exit")
    p.add_argument("--quantus", type=Path, help=argparse.SUPPRESS)  # internal: run inside the Quantus venv
    args = p.parse_args()
    if args.quantus:
        run_quantus(args.quantus, args.repeats)
        return
    if args.setup:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "pip"), "install", "-c", str(ROOT / "constraints.txt")]
        subprocess.run([*pip, "torch==2.13.0", "quantus"], check=True)
        return

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from eis.tracks.metrics.faithfulness import deletion_curve
    from eis.zoo.shapes import render_shapes

    model = _model()
    x, _ = render_shapes(N, SIDE, seed=2)
    with torch.no_grad():
        y = model(x).argmax(1)
    # a random permutation of distinct values per image (float32 rand would repeat values now and then, and
    # ties between pixels are broken differently by the two sorts), repeated over RGB: Quantus then sorts
    # the 3 tied features of a pixel next to each other
    g = torch.Generator().manual_seed(1)
    a = (
        torch.stack([torch.randperm(SIDE * SIDE, generator=g) for _ in range(N)])
        .float()
        .add(1)
        .div(SIDE * SIDE)
    )
    a = a.view(N, 1, SIDE, SIDE).expand(-1, 3, -1, -1).contiguous()
    print(
        f"deletion curve: {N} inputs, {STEPS} steps, cnn 3x{SIDE}x{SIDE}, "
        f"torch threads {torch.get_num_threads()}"
    )

    def ours():
        return deletion_curve(model, x, y, a, steps=STEPS, baseline="black", batch_size=args.batch_size)

    def forwards_only():  # the compute floor: the same N * (STEPS + 1) images through the model, nothing else
        xs = x.repeat(STEPS + 1, 1, 1, 1)
        with torch.no_grad():
            for i in range(0, len(xs), args.batch_size):
                model(xs[i : i + args.batch_size])

    t_ours, c_ours = _best(ours, args.repeats)
    t_floor, _ = _best(forwards_only, args.repeats)
    t_ref, c_ref = _best(lambda: reference_loop(model, x, y, a), args.repeats)
    print(f"ours (batch {args.batch_size}):      {t_ours:8.3f} s")
    print(f"forward passes alone:   {t_floor:8.3f} s   (the floor for any implementation of these curves)")
    ref_diff = float((c_ours - c_ref).abs().max())
    print(
        f"reference loop:         {t_ref:8.3f} s   ratio {t_ref / t_ours:6.2f}x   max |diff| {ref_diff:.2e}"
    )

    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Quantus: no venv at {VENV}; create it with: python {Path(__file__).name} --setup")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.save({"state": model.state_dict(), "x": x, "y": y, "a": a}, work / "data.pt")
        subprocess.run(
            [str(py), __file__, "--quantus", str(work), "--repeats", str(args.repeats)], check=True
        )
        info = json.loads((work / "quantus.json").read_text())
        c_q = np.load(work / "quantus.npy")
    diff = float(np.abs(c_ours[:, 1:].numpy() - c_q).max())
    t_q = info["seconds"]
    print(
        f"Quantus {info['version']} PixelFlipping: {t_q:8.3f} s   ratio {t_q / t_ours:6.2f}x   "
        f"max |diff| {diff:.2e}   (Quantus / forward floor: {t_q / t_floor:.2f}x)"
    )


if __name__ == "__main__":
    main()
