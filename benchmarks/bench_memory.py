"""Peak memory of an audit: does ``eis.audit`` stay bounded on a big input without the user setting anything?

    .venv/bin/python benchmarks/bench_memory.py            # both models
    .venv/bin/python benchmarks/bench_memory.py imagenet   # one

Two models, each audited in a fresh child process whose peak resident set (``VmHWM``) is read at the end:

- ``imagenet``: a small random convolutional network on 3x224x224 inputs with 1000 classes (the shape of
  an ImageNet classifier), 256 clean examples labelled by the network's own predictions after centring
  its logits (so the health check passes: the network is far above chance on its own labels);
- ``resnet32``: a 3x32x32 BatchNorm ResNet (``benchmarks/shadow_transfer.py``'s, width 48: 0.69M
  parameters) on 10 classes, 256 photo crops labelled the same way.

Every detector and the evidence step run with their default settings, except the optimisation step counts
(Neural Cleanse, feature visualisation, trigger inversion), cut to keep the 1000-class run to minutes on
two cores: memory is held per step, so the step count does not move the peak (``--steps`` checks it). The
table prints the resident set after loading the model and data, the peak during the audit, and the
difference: what the audit itself added.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_GIB = 4.0


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(name: str, steps: int) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if name == "imagenet":
        model = nn.Sequential(
            nn.Conv2d(3, 16, 7, stride=4, padding=3),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 1000),
        )
        x = torch.rand(256, 3, 224, 224)
    else:
        sys.path.insert(0, str(HERE))
        from shadow_transfer import photo_crops, resnet

        model = resnet(width=48)
        x, _ = photo_crops(256, seed=3)
    model.eval()
    with torch.no_grad():  # centre the logits so a random network spreads its predictions over the classes
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        head.bias -= model(x).mean(0)
        y = model(x).argmax(1)
    import eis

    base = _status("VmRSS")
    t0 = time.perf_counter()
    settings = {
        "neural_cleanse": {"steps": steps},
        "feature_viz": {"steps": steps},
        "trigger_inversion": {"steps": steps},
    }
    report = eis.audit(model, x, y, settings=settings, progress=False)
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "input": list(x.shape[1:]),
        "classes": int(model(x[:1]).shape[1]),
        "steps": steps,
        "verdict": report.verdict,
        "statuses": {d.name: d.status for d in report.detectors},
        "rss_loaded_gib": base,
        "peak_gib": _status("VmHWM"),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["imagenet", "resnet32"])
    parser.add_argument("--steps", type=int, default=2, help="optimisation steps of NC / synthesis")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.models[0], args.steps)))
        return
    print(
        f"{'model':9} {'params':>8} {'input':>11} {'classes':>7} {'loaded':>8} {'peak':>8} {'audit +':>8} "
        f"{'seconds':>8}  verdict"
    )
    for name in args.models:
        out = subprocess.run(
            [sys.executable, __file__, name, "--child", "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if out.returncode != 0:
            last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
            print(f"{name:9} failed: {last}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        shape = "x".join(map(str, r["input"]))
        print(
            f"{name:9} {r['params']:8d} {shape:>11} {r['classes']:7d} {r['rss_loaded_gib']:7.2f}G "
            f"{r['peak_gib']:7.2f}G {r['peak_gib'] - r['rss_loaded_gib']:7.2f}G {r['seconds']:8.0f}  "
            f"{r['verdict']} (peak {'within' if r['peak_gib'] <= TARGET_GIB else 'OVER'} {TARGET_GIB:g} GiB)"
        )
        failed = {k: v for k, v in r["statuses"].items() if v not in ("ok", "not applicable")}
        if failed:
            print(f"{'':9} detectors not ok: {failed}")


if __name__ == "__main__":
    main()
