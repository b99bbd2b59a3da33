"""Feature case specifications (a suite's ``[[features]]`` table), validated, and their content hashes.

Sources ``synthetic`` and ``toy`` sample activations from a known dictionary. Source ``lm`` reads them from
a zoo language model instead (:mod:`eis.zoo.features.language`), source ``image`` from a zoo image model
(:mod:`eis.zoo.features.image`): sources of activations among others, scored by the same tools, so they
extend this spec rather than adding a case kind; they have no dictionary, so their own fields
(:data:`LM_SOURCE_FIELDS`, :data:`IMAGE_SOURCE_FIELDS`) replace the sampling ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from eis.errors import EisError

FEATURES_VERSION = "1"  # bump when generation or the toy model's training changes, so that caches rebuild
SOURCES = ("synthetic", "toy", "lm", "image")
FEATURE_FIELDS = {
    "name", "source", "seed", "n_features", "d", "p_active", "correlation", "parents", "children",
    "p_child", "magnitude_spread", "noise", "importance_decay", "n_train", "n_eval", "steps", "zipf",
}  # fmt: skip
LM_SOURCE_FIELDS = {"name", "source", "seed", "model", "hook", "width", "n_train", "n_eval", "trigger_rate"}
IMAGE_SOURCE_FIELDS = LM_SOURCE_FIELDS - {"hook"}
MODEL_SOURCES = {"lm": "an [[lm]]", "image": "a [[case]]"}  # sources that read a model: the table naming it
TRIGGER_RATE = 0.2  # share of an lm source's documents (an image source's rows) that carry a planted trigger


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature case: ``n_features`` sparse features embedded in ``d`` < ``n_features`` dimensions.

    - ``source``: ``synthetic`` (activations = features @ dictionary, plus ``noise``) or ``toy`` (the
      hidden layer of Elhage et al.'s ReLU output model, trained for ``steps`` on the features, weighting
      feature i by ``importance_decay ** i``; its learned embedding is the dictionary).
    - Each feature fires with probability ``p_active``; a firing feature has a magnitude drawn uniformly in
      ``[1 - magnitude_spread, 1 + magnitude_spread]``. With ``zipf`` = s > 0 the firing probabilities
      follow a power law instead, feature i's proportional to (i + 1) ** -s, scaled so that their mean is
      ``p_active`` (each capped at 1): a few frequent features and a long tail of rare ones.
    - ``correlation``: features come in pairs whose firing is correlated through a Gaussian copula with
      this latent correlation (0 = independent).
    - Hierarchy (for feature absorption): the first ``parents`` features each have ``children`` child
      features that can fire only when their parent fires, then with probability ``p_child``.
    - ``n_train`` inputs are given to tools to fit on, ``n_eval`` held-out inputs are encoded and scored.
    - ``lm``: token activations of a zoo language model at the hook point ``hook`` (TransformerLens's name;
      default the last block's ``hook_resid_post``) on held-out documents of its language, ``n_train`` and
      ``n_eval`` token rows, with per-token labels of the generator's latent variables; ``trigger_rate`` of
      the documents carry one of the model's planted triggers (a clean twin's probe triggers). ``model``
      names an ``[[lm]]`` case of the same suite (resolved into ``lm`` when the suite loads); ``width``
      (default 4 x the hook's width, set when built) is the dictionary size tools are asked for. ``seed``
      draws which documents carry a trigger and where.
    - ``image``: penultimate-layer activations of a zoo image model (``model`` names a ``[[case]]`` of the
      same suite, resolved into ``image``) on at most ``n_train`` training and ``n_eval`` held-out images of
      its dataset, labelled per image by class, the planted trigger (stamped into ``trigger_rate`` of the
      rows) and, for ``shapes``, the object's colour and position (:mod:`eis.zoo.features.image`);
      ``width`` defaults to 2 x the layer's width; ``seed`` draws which rows carry the trigger.
    """

    name: str
    source: str = "synthetic"
    seed: int = 0
    n_features: int = 32
    d: int = 16
    p_active: float = 0.05
    correlation: float = 0.0
    parents: int = 0
    children: int = 2
    p_child: float = 0.5
    magnitude_spread: float = 0.5
    noise: float = 0.0
    importance_decay: float = 1.0
    n_train: int = 8192
    n_eval: int = 2048
    steps: int = 2000
    zipf: float = 0.0
    model: str | None = None  # lm source: the name of an [[lm]] case of the same suite
    hook: str | None = None  # lm source: the hook point read (default: the last block's hook_resid_post)
    width: int | None = None  # lm source: latents asked for (default: 4 x the hook's width)
    trigger_rate: float = TRIGGER_RATE  # lm source: share of documents that carry a trigger
    lm: Any = None  # lm source: the LMSpec that ``model`` names (set by ``with_suite`` or given directly)
    image: Any = None  # image source: the CaseSpec that ``model`` names (likewise)
    population: str | None = None  # feature cases are never population members
    role: str | None = None

    @property
    def n_children(self) -> int:
        return self.parents * self.children

    def validated(self) -> FeatureSpec:
        where = f"features case {self.name!r}"
        if self.source not in SOURCES:
            raise EisError(f"{where}: unknown source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.source in MODEL_SOURCES:
            return self._validated_model(where)
        ints = (
            ("seed", 0, 2**31), ("n_features", 2, 4096), ("d", 2, 1024), ("parents", 0, 1024),
            ("children", 1, 64), ("n_train", 64, 1_000_000), ("n_eval", 32, 1_000_000), ("steps", 1, 100_000),
        )  # fmt: skip
        for key, low, high in ints:
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise EisError(f"{where}: {key} must be an integer in [{low}, {high}], got {v!r}")
        floats = (
            ("p_active", 0.0, 1.0, False), ("correlation", 0.0, 1.0, True), ("p_child", 0.0, 1.0, False),
            ("magnitude_spread", 0.0, 1.0, True), ("noise", 0.0, 10.0, True),
            ("importance_decay", 0.0, 1.0, False), ("zipf", 0.0, 4.0, True),
        )  # fmt: skip
        for key, low, high, closed_low in floats:
            v = getattr(self, key)
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if not ok or not ((low <= v) if closed_low else (low < v)) or not v <= high or v != v:
                bound = "[" if closed_low else "("
                raise EisError(f"{where}: {key} must be a number in {bound}{low}, {high}], got {v!r}")
        if self.correlation >= 1:
            raise EisError(f"{where}: correlation must be below 1, got {self.correlation!r}")
        if self.d >= self.n_features:
            raise EisError(
                f"{where}: d ({self.d}) must be below n_features ({self.n_features}): the features are "
                "embedded in fewer dimensions than there are features"
            )
        if self.parents + self.n_children > self.n_features:
            raise EisError(
                f"{where}: {self.parents} parents with {self.children} children each need "
                f"{self.parents + self.n_children} features, more than n_features ({self.n_features})"
            )
        return self

    def _validated_model(self, where: str) -> FeatureSpec:
        """An lm or image source: its own fields checked, and its model's spec validated."""
        model = self.lm if self.source == "lm" else self.image
        if not isinstance(model, _model_spec_class(self.source)):
            raise EisError(
                f"{where}: source {self.source!r} needs the spec of the model it reads (model = "
                f"{MODEL_SOURCES[self.source]} case of the suite), got {self.model!r}"
            )
        ints = (("seed", 0, 2**31), ("n_train", 64, 1_000_000), ("n_eval", 32, 1_000_000))
        for key, low, high in (*ints, ("width", 1, 65536)):
            v = getattr(self, key)
            if key == "width" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise EisError(f"{where}: {key} must be an integer in [{low}, {high}], got {v!r}")
        r = self.trigger_rate
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r < 1:
            raise EisError(f"{where}: trigger_rate must be a number in [0, 1), got {r!r}")
        if self.source == "image":
            if self.hook is not None:
                raise EisError(f"{where}: an image source reads the penultimate layer and takes no hook")
            image = self.image.validated()
            return dataclasses.replace(self, model=image.name, image=image)
        if self.hook is not None and (not isinstance(self.hook, str) or not self.hook):
            raise EisError(f"{where}: hook must be a hook point name like 'blocks.0.hook_resid_post'")
        self.lm.validated()
        return dataclasses.replace(self, model=self.lm.name)

    @property
    def hook_name(self) -> str:
        """The hook point an lm source reads (its ``hook``, or the last block's ``hook_resid_post``)."""
        return self.hook or f"blocks.{self.lm.layers - 1}.hook_resid_post"

    def with_suite(self, specs: list[Any], where: str) -> FeatureSpec:
        """This spec with ``lm`` (``image``) set to the ``[[lm]]`` (``[[case]]``) case its ``model`` names
        among a suite's ``specs``."""
        if self.source not in MODEL_SOURCES or self.lm is not None or self.image is not None:
            return self
        cls = _model_spec_class(self.source)
        models = {s.name: s for s in specs if isinstance(s, cls)}
        if self.model not in models:
            valid = ", ".join(sorted(models)) or "none"
            raise EisError(
                f"{where}: features case {self.name!r} names model {self.model!r}, which is not "
                f"{MODEL_SOURCES[self.source]} case of the suite; valid: {valid}"
            )
        return dataclasses.replace(self, **{self.source: models[self.model]}).validated()

    def content(self) -> dict[str, Any]:
        if self.source == "lm":
            own = sorted(LM_SOURCE_FIELDS - {"model", "hook"})
            return {
                "features_version": FEATURES_VERSION,
                "kind": "features",
                **{k: getattr(self, k) for k in own},
                "hook": self.hook_name,
                "lm": self.lm.case_id,
            }
        if self.source == "image":
            own = sorted(IMAGE_SOURCE_FIELDS - {"model"})
            return {
                "features_version": FEATURES_VERSION,
                "kind": "features",
                **{k: getattr(self, k) for k in own},
                "image": self.image.case_id,
            }
        own = sorted(FEATURE_FIELDS - {"importance_decay", "steps", "zipf"}) + (
            ["importance_decay", "steps"] if self.source == "toy" else []
        )
        own += ["zipf"] if self.zipf else []  # cases without it keep the ids they had before it existed
        return {
            "features_version": FEATURES_VERSION,
            "kind": "features",
            **{k: getattr(self, k) for k in own},
        }

    @property
    def case_id(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def features_spec(entry: dict[str, Any], where: str) -> FeatureSpec:
    """A validated spec from a suite's ``[[features]]`` table (an ``lm`` or ``image`` source's model is
    resolved later, by :meth:`FeatureSpec.with_suite`, once the suite's other cases are read)."""
    source = entry.get("source")
    fields = {"lm": LM_SOURCE_FIELDS, "image": IMAGE_SOURCE_FIELDS}.get(source, FEATURE_FIELDS)
    bad = sorted(set(entry) - fields)
    if bad:
        what = f"an {source}-source features case" if source in MODEL_SOURCES else "features case"
        raise EisError(
            f"{where}: {what} {entry.get('name', '?')!r} has unknown field {bad[0]!r}; "
            f"valid: {', '.join(sorted(fields))}"
        )
    if "name" not in entry:
        raise EisError(f"{where}: a features case is missing the field 'name'")
    if source in MODEL_SOURCES:
        if not isinstance(entry.get("model"), str):
            raise EisError(
                f"{where}: features case {entry['name']!r} with source {source!r} needs model = the name of "
                f"{MODEL_SOURCES[source]} case of the suite"
            )
        return FeatureSpec(**entry)
    return FeatureSpec(**entry).validated()


def source_models(specs: Sequence[Any]) -> list[Any]:
    """The distinct models (LMSpecs, image CaseSpecs) that the lm- and image-source feature cases among
    ``specs`` read."""
    out: dict[str, Any] = {}
    for spec in specs:
        if isinstance(spec, FeatureSpec):
            for model in (spec.lm, spec.image):
                if model is not None:
                    out.setdefault(model.case_id, model)
    return list(out.values())


def _model_spec_class(source: str) -> type:
    """The spec class of the model an ``lm`` or ``image`` source reads."""
    if source == "lm":
        from eis.zoo.language.spec import LMSpec

        return LMSpec
    from eis.zoo.spec import CaseSpec

    return CaseSpec
