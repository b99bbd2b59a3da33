"""Audit a model with track records measured on models like it: shadow calibration, end to end.

The model is examples/audit_your_model.py's StridedNet on 12x12 digits with an L-shaped trigger, an
architecture eis never built. Before auditing it, eis trains N clean and N flawed *shadow* models with the
same factory on the same training data (patch, blend, warp, natural and style trojans at drawn poisoning
strengths), runs every detector on them, and the audit then shows each detector's TPR/FPR on those
shadows (with CIs), the model's p-value against the clean shadows, and eis's zoo records beside them. The
shadows are cached: a second audit of any checkpoint of this architecture on this data reuses them.

Run it as a script (``python examples/shadow_audit.py``) or call ``main()``. The command line::

    eis audit out/model.safetensors --arch examples/audit_your_model.py:make --data out/clean.npz \\
        --train-data out/train.npz --shadows 8 --recipe lr=0.004 --out out/shadow-audit
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main(
    out: str | Path = "out",
    shadows: int = 8,
    epochs: int = 10,
    nc_steps: int = 300,
    kinds: tuple[str, ...] | None = None,
    workers: int = 2,
) -> object:
    """Train a trojaned StridedNet, calibrate on shadows like it, audit it; return the audit report."""
    import eis
    from eis.health import check_model
    from eis.shadows import ShadowRecipe, UserArch, calibrate_shadows
    from eis.usermodel import load_examples, load_model, save_weights

    sys.path.insert(0, str(HERE))
    import audit_your_model as ex

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = ex.digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1300], perm[1300:1556]
    save_weights(ex.train(x[tr], y[tr], poison=0.2, epochs=epochs), out / "model.safetensors")
    np.savez(out / "train.npz", x=x[tr].numpy(), y=y[tr].numpy())
    np.savez(out / "clean.npz", x=x[te].numpy(), y=y[te].numpy())

    # What an engineer does with their own files:
    factory = f"{HERE / 'audit_your_model.py'}:make"
    model = load_model(out / "model.safetensors", factory)
    cx, cy, _ = load_examples(out / "clean.npz")
    tx, ty, _ = load_examples(out / "train.npz")
    recipe = ShadowRecipe(shadows=shadows, epochs=epochs, lr=4e-3, **({"kinds": kinds} if kinds else {}))
    settings = {"neural_cleanse": {"steps": nc_steps}}
    run = calibrate_shadows(
        UserArch.of(factory), tx, ty, cx, cy,
        num_classes=10, user_accuracy=check_model(model, cx, cy).accuracy, recipe=recipe, settings=settings,
        workers=workers,
    )  # fmt: skip
    report = eis.audit(model, cx, cy, calibration=run.table, settings=settings)
    report.write(out / "shadow-audit")
    print("\n".join(report.summary() + report.notes))
    return report


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
