"""Does shadow calibration predict a detector's real error on models like the user's, and how far off is the
zoo's table?

    .venv/bin/python benchmarks/shadow_transfer.py strided --shadows 8 --test 12
    .venv/bin/python benchmarks/shadow_transfer.py resnet --shadows 6 --test 8 --width 16

For an architecture eis never built (``strided``: examples/audit_your_model.py's StridedNet on 12x12
digits; ``resnet``: a 3x32x32 BatchNorm ResNet on crops of scikit-image's photographs, a data set eis did
not make), it trains

1. the shadows, with eis's training loop (what ``eis audit --shadows`` does), and
2. a separate **test** population of the same architecture, trained *the user's way* (this file's
   ``user_fit``, passed as the user's training function), with other seeds and other drawn triggers,
   never seen by the calibration,

runs every detector on both, and reports, per detector and per record (shadows, zoo): the threshold the
audit would use, the TPR/FPR the record predicts, the TPR/FPR actually measured on the test population at
that threshold, and the error (record - truth) with a bootstrap CI (test models, and shadows for the
shadow record, resampled). Prints one table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket")


# ------------------------------------------------------------------ the user's side (not eis's)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: stem, three stages (w, 2w, 4w) of one basic block each, pooling, linear."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2))
        self.head = nn.Linear(4 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def resnet(width: int = 32, classes: int = 10) -> nn.Module:
    """The factory eis calls (``benchmarks/shadow_transfer.py:resnet``)."""
    return ResNet(width, classes)


def photo_crops(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops (with random scale) of ten scikit-image photographs; the label is the photograph."""
    import skimage.data
    from skimage.transform import resize

    g = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)().astype(np.float32)
        img = img / 255.0 if img.max() > 1 else img
        img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
        photos.append(img)
    xs, ys = [], []
    for i in range(n):
        k = i % len(PHOTOS)
        img = photos[k]
        side = int(g.integers(size, min(img.shape[:2]) // 2))
        r, c = g.integers(0, img.shape[0] - side), g.integers(0, img.shape[1] - side)
        xs.append(
            resize(img[r : r + side, c : c + side], (size, size), anti_aliasing=True).transpose(2, 0, 1)
        )
        ys.append(k)
    return torch.tensor(np.stack(xs), dtype=torch.float32).clamp(0, 1), torch.tensor(ys)


def user_fit(model: nn.Module, dataset: torch.utils.data.TensorDataset) -> None:
    """The user's own training loop: SGD with momentum, a cosine schedule and flips for the ResNet, Adam
    at a constant rate for the small net, as their own scripts might do."""
    x, y = dataset.tensors
    is_resnet = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    epochs = 8 if is_resnet else 20
    steps = epochs * math.ceil(len(x) / 64)
    if is_resnet:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=4e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):  # the global generator: eis seeds it per model
            xb = x[idx]
            if is_resnet:
                xb = torch.where(torch.rand(len(xb), 1, 1, 1) < 0.5, xb.flip(-1), xb)
            opt.zero_grad()
            F.cross_entropy(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()


# ------------------------------------------------------------------ the measurement


def setting(name: str, width: int) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    if name == "strided":
        import audit_your_model as ex

        x, y = ex.digits()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        tr, te = perm[:1300], perm[1300:1556]
        factory, kwargs = f"{ROOT / 'examples' / 'audit_your_model.py'}:make", {}
        return {
            "x": x[tr],
            "y": y[tr],
            "hx": x[te],
            "hy": y[te],
            "factory": factory,
            "kwargs": kwargs,
            "recipe": {"epochs": 20, "lr": 4e-3, "kinds": ("patch", "patch_random", "blend")},
        }
    x, y = photo_crops(3000, seed=1)
    hx, hy = photo_crops(256, seed=2)
    return {
        "x": x,
        "y": y,
        "hx": hx,
        "hy": hy,
        "factory": f"{Path(__file__).resolve()}:resnet",
        "kwargs": {"width": width},
        "recipe": {
            "epochs": 8,
            "lr": 3e-3,
            "augment": ("flip",),
            "kinds": ("patch", "patch_random", "blend"),
        },
    }


def per_model(run) -> dict[str, list[tuple[float, bool]]]:
    """(score, trojaned) per detector, from the run's results store."""
    from eis.results.store import open_store

    out: dict[str, list[tuple[float, bool]]] = {}
    with open_store(run.root / "results.sqlite", create=False) as st:
        for r in st.records():
            s = r["scores"] if isinstance(r["scores"], dict) else json.loads(r["scores"] or "{}")
            if r["status"] == "ok" and s.get("score") is not None and math.isfinite(float(s["score"])):
                out.setdefault(r["tool"], []).append((float(s["score"]), r["flaw"] != "clean"))
    return out


def rates(rows: list[tuple[float, bool]], thr: float) -> tuple[float, float]:
    t = [s >= thr for s, troj in rows if troj]
    c = [s >= thr for s, troj in rows if not troj]
    return float(np.mean(t)) if t else math.nan, float(np.mean(c)) if c else math.nan


def error_ci(pred_rows, test_rows, thr, fixed=None, n=2000, seed=0) -> dict[str, list[float]]:
    """Bootstrap CI of (record - truth) for TPR and FPR; ``fixed`` = (tpr, fpr) of a record not resampled."""
    g = np.random.default_rng(seed)

    def resample(rows):
        pos = [r for r in rows if r[1]]
        neg = [r for r in rows if not r[1]]
        return [pos[i] for i in g.integers(0, len(pos), len(pos))] + [
            neg[i] for i in g.integers(0, len(neg), len(neg))
        ]

    reps = []
    for _ in range(n):
        p = fixed if fixed is not None else rates(resample(pred_rows), thr)
        t = rates(resample(test_rows), thr)
        reps.append((p[0] - t[0], p[1] - t[1]))
    a = np.array(reps)
    return {
        "tpr": np.nanquantile(a[:, 0], [0.025, 0.975]).tolist(),
        "fpr": np.nanquantile(a[:, 1], [0.025, 0.975]).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=["strided", "resnet"])
    parser.add_argument("--shadows", type=int, default=8)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--nc-steps", type=int, default=None)
    parser.add_argument("--detectors", default=None, help="comma-separated (default: every detector)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--home", default=None, help="EIS_HOME (default: a fresh temporary folder)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ["EIS_HOME"] = args.home or tempfile.mkdtemp(prefix="eis-shadow-transfer-")
    torch.set_num_threads(1)

    from eis.audit import load_calibration
    from eis.health import check_model
    from eis.shadows import ShadowRecipe, UserArch, calibrate_shadows

    s = setting(args.arch, args.width)
    arch = UserArch.of(s["factory"], s["kwargs"])
    torch.manual_seed(0)
    model = arch.build()
    user_fit(model, torch.utils.data.TensorDataset(s["x"], s["y"]))
    acc = check_model(model, s["hx"], s["hy"]).accuracy
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.arch}: {nparams} parameters, the user's model {acc:.3f} clean accuracy")
    settings = {"neural_cleanse": {"steps": args.nc_steps}} if args.nc_steps else None
    detectors = args.detectors.split(",") if args.detectors else None
    common = {
        "num_classes": 10,
        "user_accuracy": acc,
        "settings": settings,
        "workers": args.workers,
        "detectors": detectors,
    }
    t0 = time.perf_counter()
    shadow = calibrate_shadows(
        arch,
        s["x"],
        s["y"],
        s["hx"],
        s["hy"],
        recipe=ShadowRecipe(shadows=args.shadows, seed=0, **s["recipe"]),
        **common,
    )
    t1 = time.perf_counter()
    test = calibrate_shadows(
        arch,
        s["x"],
        s["y"],
        s["hx"],
        s["hy"],
        recipe=ShadowRecipe(
            shadows=args.test, seed=1, trainer=f"{Path(__file__).resolve()}:user_fit", **s["recipe"]
        ),
        **common,
    )
    t2 = time.perf_counter()
    zoo = load_calibration()
    sh_rows, te_rows = per_model(shadow), per_model(test)
    sh, te = shadow.table["shadows"], test.table["shadows"]
    print(
        f"shadows: {sh['n_clean']} clean + {sh['n_flawed']} flawed in {t1 - t0:.0f} s "
        f"(build {sh['seconds']['build']:.0f} s, detectors {sh['seconds']['detectors']:.0f} s); "
        f"test: {te['n_clean']} clean + {te['n_flawed']} flawed (user's loop) in {t2 - t1:.0f} s"
    )
    out = {"arch": args.arch, "params": nparams, "user_accuracy": acc, "shadows": sh, "test": te, "rows": []}
    head = f"{'detector':15} {'record':8} {'thr':>7} {'pred TPR':>8} {'true TPR':>8} {'err [95% CI]':>22}"
    print(head + f" {'pred FPR':>8} {'true FPR':>8} {'err [95% CI]':>22}")
    for tool in sorted(set(sh_rows) & set(te_rows)):
        for source, table in (("shadows", shadow.table), ("zoo", zoo)):
            e = table["detectors"].get(tool, {})
            if "threshold" not in e:
                continue
            thr = e["threshold"]
            truth = rates(te_rows[tool], thr)
            pred = rates(sh_rows[tool], thr) if source == "shadows" else (e["tpr"], e["fpr"])
            ci = error_ci(sh_rows[tool], te_rows[tool], thr, None if source == "shadows" else pred)
            row = {
                "tool": tool,
                "record": source,
                "threshold": thr,
                "pred": pred,
                "truth": truth,
                "err_ci": ci,
            }
            out["rows"].append(row)
            print(
                f"{tool:15} {source:8} {thr:7.3g} {pred[0]:8.2f} {truth[0]:8.2f} {pred[0] - truth[0]:+6.2f} "
                f"[{ci['tpr'][0]:+.2f}, {ci['tpr'][1]:+.2f}] {pred[1]:8.2f} {truth[1]:8.2f} "
                f"{pred[1] - truth[1]:+6.2f} [{ci['fpr'][0]:+.2f}, {ci['fpr'][1]:+.2f}]"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
