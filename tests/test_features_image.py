"""Feature cases over a zoo image model: rows and labels checked against the data and the stamped trigger,
the shapes latents against the rendered images, and the feature_concepts track (probe ceiling, control)."""

from __future__ import annotations

import pytest
import torch

from eis.errors import EisError
from eis.results import load
from eis.runner import run_benchmark
from eis.tools.base import make_tool
from eis.tracks.feature_ablation import FeatureAblationTrack
from eis.tracks.feature_concepts import FeatureConceptsTrack
from eis.tracks.feature_steering import FeatureSteeringTrack
from eis.tracks.features import FeaturesTrack
from eis.zoo.build import build_case
from eis.zoo.datasets import SHAPES_SPLITS
from eis.zoo.features.image import (
    QUADRANTS,
    concept_names,
    image_rows,
    penultimate,
    shapes_concepts,
    stamped_rows,
    stamps,
)
from eis.zoo.features.spec import FeatureSpec, features_spec, source_models
from eis.zoo.flaws import make_flaw
from eis.zoo.shapes import SHAPE_NAMES, render_shapes
from eis.zoo.spec import CaseSpec
from eis.zoo.suites import load_suite

CASE = "digits-cnn-patch-features"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def case():
    """The smoke suite's image feature case (its digits CNN built first, or read from the cache)."""
    (spec,) = [s for s in load_suite("smoke") if s.name == CASE]
    return build_case(spec)[0]


@pytest.fixture(scope="module")
def image(case):
    (spec,) = [s for s in load_suite("smoke") if s.name == "digits-cnn-patch"]
    built = build_case(spec)[0]
    assert built.id == case.meta["model"]
    return built


def test_rows_are_deterministic_in_the_seed(image) -> None:
    a = image_rows(image, n_train=200, n_eval=100, rate=0.25, seed=3)
    b = image_rows(image, n_train=200, n_eval=100, rate=0.25, seed=3)
    c = image_rows(image, n_train=200, n_eval=100, rate=0.25, seed=4)
    assert set(a) == {f"{k}_{s}" for k in ("labels", "stamped") for s in ("train", "eval")} | {
        "train_activations", "eval_activations",
    }  # fmt: skip
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stamped_train"], c["stamped_train"])  # the seed draws the stamped rows
    assert len(a["stamped_train"]) == 50 and len(a["stamped_eval"]) == 25
    assert torch.equal(a["stamped_train"], stamped_rows(200, 0.25, 6))  # 2 x seed for training rows
    assert torch.equal(a["stamped_eval"], stamped_rows(100, 0.25, 7))  # 2 x seed + 1 for held-out rows
    x, y = image.inputs(200, split="train")
    marked = a["labels_train"][:, 10]
    assert torch.equal(marked.nonzero().flatten(), a["stamped_train"])
    assert torch.equal(a["labels_train"][:, :10].float().argmax(1), y)
    clean = penultimate(image.model("cpu"), x)
    torch.testing.assert_close(a["train_activations"][~marked], clean[~marked], rtol=1e-5, atol=1e-6)
    assert (a["train_activations"][marked] - clean[marked]).abs().amax(1).min() > 0.1  # each one stamped


def test_labels_are_the_data_and_the_stamped_rows(case, image) -> None:
    """The class columns are the dataset's labels; the trigger column marks exactly the stamped rows, whose
    activations are the model's on the stamped images (the others: on the clean images)."""
    truth = case.truth()
    assert truth.concepts == (*(f"class:{k}" for k in range(10)), "trigger") and truth.model_flaw == "patch"
    assert case.meta["n_train"] == 1400 and case.meta["n_eval"] == 397  # the whole of each split
    assert case.width == 128 and case.meta["d"] == 128 and truth.dictionary is None
    model = image.model("cpu")
    for split, data_split, seed in (("train", "train", 0), ("eval", "test", 1)):
        x, y = image.inputs(split=data_split)
        labels = truth.labels(split)
        assert torch.equal(labels[:, :10], torch.nn.functional.one_hot(y, 10).bool())
        stamped = stamped_rows(len(x), 0.2, seed)
        assert torch.equal(labels[:, 10].nonzero().flatten(), stamped)
        assert len(stamped) == round(0.2 * len(x))
        acts = case.activations(split)
        clean = penultimate(model, x[:40])
        marked = penultimate(model, image.truth().apply(x[stamped], seed)[0][:5])
        keep = [i for i in range(40) if i not in set(stamped.tolist())]
        torch.testing.assert_close(acts[keep], clean[keep], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acts[stamped[:5]], marked, rtol=1e-5, atol=1e-6)
        assert (acts[stamped[:5]] - penultimate(model, x[stamped[:5]])).abs().amax() > 0.1


def test_shapes_latents_match_the_rendered_images() -> None:
    """On the first 300 held-out shapes images: the pixels fully covered by the object have exactly the
    drawn colour (so the replayed draws are the rendered ones), whose strongest channel is the colour label;
    for shapes symmetric about their centre, those pixels' centroid lies in the labelled quadrant (centroids
    within a pixel of a midline are left out)."""
    n, seed = SHAPES_SPLITS["test"]
    x, y = render_shapes(n, 32, seed)
    concepts = shapes_concepts("test")
    assert list(concepts) == [c for c in concept_names(10, False, "shapes") if not c.startswith("class:")]
    colour = torch.stack([concepts[f"colour:{c}"] for c in ("red", "green", "blue")], 1)
    quadrant = torch.stack([concepts[f"position:{q}"] for q in QUADRANTS], 1)
    assert len(colour) == n and (colour.sum(1) == 1).all() and (quadrant.sum(1) == 1).all()
    from eis.zoo.shapes import draw_shapes

    drawn = draw_shapes(n, 32, seed)["colour"]
    symmetric = {"circle", "square", "ring", "cross", "diamond"}
    checked = 0
    for i in range(300):
        inside = (x[i] - drawn[i][:, None, None]).abs().amax(0) < 1e-5
        assert inside.sum() >= 10, i
        assert colour[i].nonzero().item() == int(x[i][:, inside].mean(1).argmax())
        rows, cols = inside.nonzero(as_tuple=True)
        r, c = rows.float().mean() + 0.5, cols.float().mean() + 0.5
        if SHAPE_NAMES[int(y[i])] not in symmetric or min(abs(r - 16), abs(c - 16)) < 1:
            continue
        assert quadrant[i].nonzero().item() == 2 * int(r >= 16) + int(c >= 16), i
        checked += 1
    assert checked >= 50


def test_flaws_that_stamp() -> None:
    assert stamps(make_flaw({"kind": "patch", "target": 0, "pattern": "checkerboard"}))
    assert stamps(make_flaw({"kind": "spurious", "target": 4}))
    assert not stamps(make_flaw({"kind": "clean"})) and not stamps(make_flaw({"kind": "label_permutation"}))
    assert concept_names(3, False, "digits") == ["class:0", "class:1", "class:2"]
    assert concept_names(2, True, "digits") == ["class:0", "class:1", "trigger"]


def test_specs_resolve_their_image_model_by_name() -> None:
    model = CaseSpec("m", "digits", "cnn", {"kind": "clean"}).validated()  # as a suite reads it
    lm_entry = {"name": "f", "source": "image", "model": "m"}
    spec = features_spec(lm_entry, "suite 't'").with_suite([model], "suite 't'")
    assert spec.image == model and spec.content()["image"] == model.case_id
    twin = CaseSpec("m", "digits", "cnn", {"kind": "clean"}, seed=1)
    other = FeatureSpec("f", source="image", image=twin).validated()
    assert other.case_id != spec.case_id and other.model == "m"
    assert source_models([spec, other, spec]) == [model, twin.validated()]
    with pytest.raises(EisError, match=r"names model 'nope', which is not a \[\[case\]\] case of the suite"):
        FeatureSpec("f", source="image", model="nope").with_suite([model], "suite 't'")
    with pytest.raises(EisError, match="image-source features case 'f' has unknown field 'hook'"):
        features_spec({**lm_entry, "hook": "blocks.0.hook_resid_post"}, "suite 't'")
    with pytest.raises(EisError, match="source 'image' needs the spec of the model it reads"):
        FeatureSpec("f", source="image", model="m").validated()
    with pytest.raises(EisError, match=r"trigger_rate must be a number in \[0, 1\)"):
        FeatureSpec("f", source="image", image=model, trigger_rate=-0.1).validated()


def test_tracks_that_apply(case, image) -> None:
    assert FeatureConceptsTrack().applies_to(case) and not FeatureConceptsTrack().applies_to(image)
    assert not FeaturesTrack().applies_to(case) and not FeatureAblationTrack().applies_to(case)
    assert not FeatureSteeringTrack().applies_to(case)


def test_probe_is_the_ceiling_and_random_directions_lose(case) -> None:
    """Measured (one thread): probe ROC-AUC 0.999 (class 0.999, trigger 1.000), F1 0.97; the best of 128
    random directions per concept: ROC-AUC 0.960 (class 0.957), F1 0.33."""
    track = FeatureConceptsTrack()
    probe = track.run(case, make_tool("probe"), seed=0)
    rand = track.run(case, make_tool("random_directions"), seed=0)
    p, r = probe.scores, rand.scores
    assert p["auroc_class"] >= 0.99 and p["auroc_trigger"] >= 0.99 and p["f1"] >= 0.9
    assert r["auroc_class"] <= p["auroc_class"] - 0.02 and r["f1"] <= p["f1"] - 0.3
    assert probe.flaw == "image/patch" and len(probe.items["auroc"]) == 11
    assert probe.extras["concepts"] == list(case.truth().concepts)
    assert not {"auroc_token", "auroc_colour"} & set(p)


def test_the_track_through_the_runner(case, tmp_path) -> None:
    tools = ["diff_in_means", make_tool("sae_topk", steps=200)]
    summary = run_benchmark(
        [case], tools=tools, tracks=["feature_concepts"], workers=0, store=tmp_path / "s.db"
    )
    assert summary.failed == 0 and summary.total == 3  # the random-direction control comes by itself
    df = load(tmp_path / "s.db")
    assert set(df["tool"]) == {"diff_in_means", "sae_topk", "random_directions"}
    assert set(df["flaw"]) == {"image/patch"} and set(df["case_name"]) == {CASE}
    long = FeatureConceptsTrack().summarize(df)
    head = long[(long["flaw"] == "all") & (long["metric"] == "auroc")].set_index("tool")
    assert head.loc["random_directions", "verdict"] == "control"
    assert head.loc["diff_in_means", "n_items"] == 11
    assert {"auroc_class", "auroc_trigger", "f1", "l0"} <= set(long["metric"])


def test_a_suite_build_trains_the_image_model_first(fresh_home) -> None:
    """build_specs builds the image model a feature case reads before the case (a digits CNN, 1 epoch)."""
    from eis.zoo import artifact
    from eis.zoo.pool import build_specs

    model = CaseSpec("tiny-cnn", "digits", "cnn", {"kind": "clean"}, train={"epochs": 1},
                     bars={"clean_accuracy": 0.0}).validated()  # fmt: skip
    spec = FeatureSpec("tiny-image-features", source="image", image=model, n_train=300, n_eval=5000)
    (built,) = build_specs([spec.validated()], workers=0)
    assert artifact.case_dir(model.case_id).is_dir() and built.meta["model"] == model.case_id
    assert built.meta["n_eval"] == 397  # capped at the split's images
    assert built.activations("eval").shape == (397, 128)
    assert built.activations("train").shape == (300, 128) and built.width == 256
    assert (
        built.truth().concepts == tuple(f"class:{k}" for k in range(10))
        and built.truth().model_flaw == "clean"
    )
