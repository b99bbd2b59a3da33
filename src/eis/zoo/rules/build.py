"""Building rule cases: draw the rule, label the training inputs, train, check the bar, write it."""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch
from torch import nn

import eis
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss
from eis.zoo.datasets import get_dataset
from eis.zoo.rules.case import RuleCase, image_inputs, token_split
from eis.zoo.rules.grammar import SENTENCES, draw, evaluate
from eis.zoo.rules.models import IMAGE_ARCH, TOKEN_ARCH, network_labels, token_config, train_token_model
from eis.zoo.rules.spec import RuleSpec
from eis.zoo.train import fit

ATTEMPTS = 3  # a network that misses its bar retrains from a derived seed (same rule), deterministically


def build_rule_case(
    spec: RuleSpec, *, force: bool = False, progress: Callable[[float], None] | None = None
) -> tuple[RuleCase, bool]:
    """Build one rule case (cache hits cost nothing). Raises BarError, writing nothing, when every
    attempt's network agrees with its rule on fewer held-out inputs than the bar."""
    spec = spec.validated()
    root = artifact.zoo_dir() / spec.case_id
    if not force and root.exists():
        try:
            return RuleCase(root), False
        except artifact.CorruptArtifact:
            pass
    rule = draw(spec.family, spec.seed, dataset=spec.dataset, p=spec.p)
    for attempt in range(ATTEMPTS):
        model, measured = _train(spec, rule, spec.seed + 7919 * attempt, progress)
        if measured["held_out_agreement"] >= spec.threshold:
            break
    else:
        raise BarError(
            [BarMiss(spec.name, "held_out_agreement", measured["held_out_agreement"], spec.threshold)]
        )
    if spec.kind == "image":
        shape, arch, where = (
            list(get_dataset(spec.dataset).input_shape),
            IMAGE_ARCH,
            {"dataset": spec.dataset},
        )
    else:
        cfg = token_config(spec.p)
        shape, arch = [2], TOKEN_ARCH
        where = {"dataset": f"pairs-mod-{spec.p}", "p": spec.p}
        where["model_config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    visible = {
        "id": spec.case_id,
        "name": spec.name,
        "kind": "rule",
        "rule_kind": spec.kind,
        "family": spec.family,
        "family_sentence": SENTENCES[spec.family],
        "arch": arch,
        "num_classes": 2,
        "input_shape": shape,
        "population": None,
        "role": None,
        "seed": spec.seed,
        "clean_accuracy": round(measured["held_out_agreement"], 4),
        "versions": {"eis": eis.__version__, "torch": torch.__version__, "python": platform.python_version()},
        **where,
    }
    truth = {"spec": spec.content(), "rule": rule, "measured": measured, "attempts": attempt + 1}
    root = artifact.write_artifact(
        spec.case_id, model, visible, truth, {"none": torch.zeros(0)}, replace=force
    )
    if progress:
        progress(1.0)
    return RuleCase(root), True


def _train(
    spec: RuleSpec, rule: dict, seed: int, progress: Callable[[float], None] | None
) -> tuple[nn.Module, dict[str, float]]:
    """Train one network on the rule's labels; measure its agreement with the rule (train, held out)."""
    if spec.kind == "image":
        from eis.zoo.archs import build_arch

        x, fresh = image_inputs(spec.dataset, "train"), image_inputs(spec.dataset, "fresh")
        torch.manual_seed(seed)
        c, h, _ = x.shape[1:]
        model = build_arch(IMAGE_ARCH, c, 2, h)
        settings = {"lr": 2e-3, "epochs": spec.epochs, "batch_size": 64}
        fit(model, x, evaluate(rule, x).long(), settings, torch.Generator().manual_seed(seed), progress)
        model.eval()
    else:
        x, fresh = token_split(spec.p, spec.seed)
        model = train_token_model(spec.p, x, evaluate(rule, x), seed, spec.steps)
    measured = {
        "train_agreement": float((network_labels(model, x) == evaluate(rule, x)).float().mean()),
        "held_out_agreement": float((network_labels(model, fresh) == evaluate(rule, fresh)).float().mean()),
    }
    return model, measured
