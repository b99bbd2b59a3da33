"""Building cases: train once per spec hash, check the bars loudly, write the artifact, reuse the cache."""

from __future__ import annotations

import dataclasses
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

import eis
from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.case import Case
from eis.zoo.datasets import get_dataset
from eis.zoo.flaws import make_flaw
from eis.zoo.kinds import Spec, kind_named, spec_kind
from eis.zoo.spec import CaseSpec
from eis.zoo.train import train_model


@dataclasses.dataclass(frozen=True)
class BarMiss:
    """One bar a built case failed: which case, which bar, measured value, threshold."""

    case: str
    bar: str
    measured: float
    threshold: float

    def __str__(self) -> str:
        m, t = self.measured, self.threshold
        return f"case {self.case!r} missed its {self.bar} bar: measured {m:.3f} < {t:.3f}"


POPULATION_ATTEMPTS = (
    3  # a population member that misses a bar retrains from a derived seed, deterministically
)


class BarError(EisError):
    """One or more cases trained but missed their bars; nothing was written for them. ``built`` holds the
    cases of the same build that did meet their bars (in suite order), so a caller may go on without the
    misses."""

    def __init__(self, misses: list[BarMiss], built: list[Case] | None = None) -> None:
        self.misses = misses
        self.built = built or []
        super().__init__("; ".join(str(m) for m in misses))


def open_case(root: Path) -> Case:
    """The built case in ``root``, opened by the case class of its manifest's kind (see
    :mod:`eis.zoo.kinds`; a manifest without a kind is an image case). Raises CorruptArtifact for a
    damaged artifact and ``eis.zoo.kinds.UnknownKind`` for a kind no module here has registered."""
    case = Case(root)  # reads (and checks) the manifest
    opener = kind_named(case.meta.get("kind")).case_class()
    return case if type(case) is opener else opener(root)


def cached(spec: Spec) -> Case | None:
    """The built case for ``spec`` if its artifact exists and is intact; a corrupt one is deleted."""
    root = artifact.zoo_dir() / spec.case_id
    if not root.exists():
        return None
    try:
        return open_case(root)
    except artifact.CorruptArtifact:
        shutil.rmtree(root, ignore_errors=True)
        return None


def build_case(
    spec: Spec,
    *,
    force: bool = False,
    progress: Callable[[float], None] | None = None,
) -> tuple[Case, bool]:
    """Build (or fetch from the cache) one case of any kind; returns the case and whether it was trained now.

    The spec's kind (:mod:`eis.zoo.kinds`) builds it: image specs here (:func:`build_image_case`), circuit
    specs (compiled transformers) in :mod:`eis.zoo.circuits.build`, rule specs (networks trained on a
    secret rule) in :mod:`eis.zoo.rules.build`. Raises BarError, and writes nothing, when the model misses
    a bar.
    """
    return spec_kind(spec).builder()(spec, force=force, progress=progress)


def build_image_case(
    spec: CaseSpec,
    *,
    force: bool = False,
    progress: Callable[[float], None] | None = None,
) -> tuple[Case, bool]:
    """Build (or fetch from the cache) one image case; returns the case and whether it was trained now.

    Raises BarError, and writes nothing, when the trained model misses a bar. Population members, whose
    triggers are drawn at random, get up to POPULATION_ATTEMPTS deterministic retries first, so that one
    unlucky draw does not sink a 60-model population; the number of attempts is kept in the truth.
    """
    spec = spec.validated()
    if not force and (case := cached(spec)) is not None:
        return case, False
    flaw = make_flaw(spec.flaw)
    for attempt in range(POPULATION_ATTEMPTS if spec.population else 1):
        model, measured = train_model(spec, progress, attempt)
        misses = [
            BarMiss(spec.name, bar, measured[bar], spec.bar(bar))
            for bar in spec.bar_names()
            if measured[bar] < spec.bar(bar)
        ]
        if not misses:
            break
    if misses:
        raise BarError(misses)
    data = get_dataset(spec.dataset)
    visible = {
        "id": spec.case_id,
        "seed_id": spec.seed_id,
        "name": spec.name,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "class_names": list(data.class_names),
        "population": spec.population,
        "role": spec.role,
        "train_population": spec.train_population,
        "seed": spec.seed,
        "device": spec.device,
        "clean_accuracy": round(measured.get("clean_accuracy", float("nan")), 4),
        "versions": {"eis": eis.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    truth_tensors: dict[str, torch.Tensor] = {}
    if (trig := flaw.trigger(data.input_shape[0], data.input_shape[1])) is not None:
        truth_tensors = {"trigger": trig[0].float(), "trigger_mask": trig[1].bool()}
    else:
        truth_tensors = {"none": torch.zeros(0)}
    truth = {
        "spec": spec.content(),
        "measured": measured,
        "bars": {b: spec.bar(b) for b in spec.bar_names()},
        "attempts": attempt + 1,
    }
    root = artifact.write_artifact(spec.case_id, model, visible, truth, truth_tensors, replace=force)
    return Case(root), True
