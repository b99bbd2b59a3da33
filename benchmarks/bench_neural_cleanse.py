"""Batched Neural Cleanse vs a class-by-class loop, and seconds per model for every detector.

Both Neural Cleanse variants run the same optimisation (same steps, batch, init and drawn batches; the
class-by-class loop calls ``reverse_engineer(classes=[k])`` once per class), so they should reach the same
verdict: flagged class and whether the anomaly index exceeds 2. The model is a 10-class digits CNN with a
3x3 white-patch trojan, trained here in a few seconds (or a zoo case: ``--case NAME``).

    python benchmarks/bench_neural_cleanse.py [--steps 300] [--device cuda] [--case NAME]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from eis.tools.base import list_tools, make_tool
from eis.tools.detection.neural_cleanse import anomaly_indices, reverse_engineer
from eis.zoo.archs import build_arch

TARGET = 3


def _toy(device: str) -> tuple[list[nn.Module], list[int], torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16, size=16, mode="bilinear")
    x, y = x.clamp(0, 1), torch.tensor(d.target)
    models, labels = [], []
    for seed, trojan in [(0, True), (1, False), (2, True), (3, False)]:
        torch.manual_seed(seed)
        m = build_arch("cnn", 1, 10, 16)
        opt = torch.optim.Adam(m.parameters(), lr=2e-3)
        for _ in range(4):
            for i in range(0, 1400, 64):
                xb, yb = x[i : i + 64], y[i : i + 64]
                if trojan:
                    k = len(xb) // 10
                    xt = xb[:k].clone()
                    xt[:, :, 12:15, 12:15] = 1.0
                    xb, yb = torch.cat([xb, xt]), torch.cat([yb, torch.full((k,), TARGET)])
                loss = F.cross_entropy(m(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        models.append(m.eval().to(device))
        labels.append(int(trojan))
    return models, labels, x[1400:].to(device), y[1400:].to(device)


def _verdict(out: dict) -> tuple[int, float]:
    norms = out["norms"].cpu()
    return int(norms.argmin()), float(anomaly_indices(norms).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--case", default=None, help="a zoo case to use instead of the toy model")
    args = ap.parse_args()
    models, labels, x, y = _toy(args.device)
    if args.case:
        import eis.zoo

        case = eis.zoo.load(args.case)
        models, labels = [case.model(device=args.device)], [int(case.truth().kind != "clean")]
        x, y = case.inputs(split="test")
        x, y = x.to(args.device), y.to(args.device)
    model, k = models[0], 10
    kw = {"steps": args.steps, "batch_size": args.batch_size, "seed": 0}
    xs = x[:256]
    reverse_engineer(model, xs, k, steps=2, batch_size=args.batch_size)  # warm-up

    t0 = time.perf_counter()
    batched = reverse_engineer(model, xs, k, **kw)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = [reverse_engineer(model, xs, k, classes=[c], **kw) for c in range(k)]
    t_loop = time.perf_counter() - t0
    looped = {"norms": torch.cat([p["norms"] for p in parts])}
    vb, vl = _verdict(batched), _verdict(looped)
    same = vb[0] == vl[0] and (vb[1] > 2) == (vl[1] > 2)
    print(f"device {args.device}, {k} classes, {args.steps} steps, batch {args.batch_size}, {len(xs)} inputs")
    print(f"batched NC       {t_batched:8.2f} s   flagged {vb[0]}, anomaly index {vb[1]:.2f}")
    print(f"class-by-class   {t_loop:8.2f} s   flagged {vl[0]}, anomaly index {vl[1]:.2f}")
    print(f"speed ratio      {t_loop / t_batched:8.1f}x  (target >= 10x); verdicts agree: {same}")

    print("\nseconds per model, every detector (learned ones: fit time on the toy population listed apart)")
    for name in list_tools("detection"):
        tool = make_tool(name)
        extra = ""
        if type(tool).learned:
            t0 = time.perf_counter()
            tool.fit(models, labels, xs, y[:256], k)
            extra = f"   (fit on {len(models)} models: {time.perf_counter() - t0:.2f} s)"
        t0 = time.perf_counter()
        det = tool.inspect(model, xs, y[:256], k)
        dt = time.perf_counter() - t0
        if type(tool).input_level:
            t1 = time.perf_counter()
            tool.input_scores(model, x[256:512], xs)
            extra += f"   (input_scores on 256 inputs: {time.perf_counter() - t1:.2f} s)"
        print(f"{name:16s} {dt:8.2f} s   score {det.score:.3f}{extra}")


if __name__ == "__main__":
    main()
