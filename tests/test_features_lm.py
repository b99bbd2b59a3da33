"""Feature cases over a zoo language model: labels from the generator's latents, activations from the stated
hook, and the feature_concepts track (probe ceiling, random-direction control, metrics by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eis.errors import EisError
from eis.tools.base import make_tool
from eis.tracks.feature_ablation import FeatureAblationTrack
from eis.tracks.feature_concepts import FeatureConceptsTrack
from eis.tracks.features import FeaturesTrack
from eis.tracks.metrics.features import auroc_matrix, concept_detection
from eis.zoo.features.language import concept_names, document_labels, labelled_documents
from eis.zoo.features.spec import FeatureSpec
from eis.zoo.language.grammar import Document, language
from eis.zoo.language.spec import LMSpec

CASE = "lm-backdoor-features"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hand_document() -> tuple[Document, dict[str, str]]:
    lang = language(0)
    name = lang.categories["name"][0]
    facts = lang.world[name]
    obj = lang.topics[facts["topic"]]["object"][0]
    words = (
        name, "lives", "in", facts["place"], ".", "it", "likes", "the", obj, ".",
        "where", "does", name, "live", "?", facts["place"], ".",
    )  # fmt: skip
    doc = Document(words, name, facts["topic"], facts["place"], facts["role"], facts["attribute"], True)
    return doc, {"topic": f"topic:{facts['topic']}", "attribute": facts["attribute"]}


def _positions(labels: torch.Tensor, concept: str, n_pairs: int = 2) -> list[int]:
    return labels[:, concept_names(n_pairs).index(concept)].nonzero().flatten().tolist()


def test_labels_of_a_hand_checked_document() -> None:
    """A trigger at the start marks every row; one inserted mid-document marks the rows from its last word,
    takes its own word's category and shifts the context labels."""
    lang = language(0)
    doc, info = _hand_document()
    rare = lang.categories["rare"][0]
    words, y = document_labels(lang, doc, 2, (0, 0, (rare,)))
    assert words == [rare, *doc.words] and y.shape == (18, 11)
    assert _positions(y, "token:name") == [1, 13] and _positions(y, "token:place") == [4, 16]
    assert _positions(y, "token:role") == [] and _positions(y, "token:attribute") == []
    assert _positions(y, info["topic"]) == list(range(9, 18))  # from the topic's object on
    assert _positions(y, "question") == list(range(11, 18))
    assert _positions(y, "trigger:0") == list(range(18)) and _positions(y, "trigger:1") == []
    words, y = document_labels(lang, doc, 2, (1, 5, (info["attribute"], "is")))
    assert words[5:7] == [info["attribute"], "is"] and _positions(y, "token:attribute") == [5]
    assert _positions(y, "trigger:1") == list(range(6, 19)) and _positions(y, "trigger:0") == []
    assert _positions(y, info["topic"]) == list(range(10, 19)) and _positions(y, "question") == list(
        range(12, 19)
    )
    words, y = document_labels(lang, doc, 0)  # no trigger, no pairs
    assert words == list(doc.words) and y.shape == (17, 9)


def test_labelled_documents_are_deterministic_and_split() -> None:
    lang = language(0)
    pairs = [{"trigger": [lang.categories["rare"][0]]}, {"trigger": ["very", "the"]}]
    a = labelled_documents(lang, pairs, "anywhere", (300, 200), 0.3, seed=3)
    b = labelled_documents(lang, pairs, "anywhere", (300, 200), 0.3, seed=3)
    c = labelled_documents(lang, pairs, "anywhere", (300, 200), 0.3, seed=4)
    flat = [(w, y) for group in a for w, y in group]
    assert [w for w, _ in flat] == [w for group in b for w, _ in group]
    assert all(torch.equal(y, z) for (_, y), (_, z) in zip(flat, [x for g in b for x in g], strict=True))
    assert [w for g in c for w, _ in g] != [w for w, _ in flat]  # the seed draws the triggers
    assert sum(len(w) for w, _ in a[0]) >= 300 and sum(len(w) for w, _ in a[1]) >= 200
    assert sum(len(w) for w, _ in a[0][:-1]) < 300  # the training documents stop once they hold the rows


def test_activations_come_from_the_stated_hook(smoke) -> None:
    """The case's first training rows equal block 1's output on the first document, read by a plain forward
    hook on the transformers model (not through the hook layer)."""
    case, lm = smoke[CASE], smoke["lm-backdoor"]
    assert case.meta["hook"] == "blocks.1.hook_resid_post" and case.meta["model"] == lm.id
    truth, lm_truth = case.truth(), lm.truth()
    groups = labelled_documents(
        lm.language(), lm_truth.pairs, lm_truth.placement, (case.meta["n_train"], case.meta["n_eval"]),
        truth.spec["trigger_rate"], case.meta["seed"],
    )  # fmt: skip
    words, labels = groups[0][0]
    model = lm.model()
    seen: list[torch.Tensor] = []

    def keep(_m: torch.nn.Module, _i: tuple, out: torch.Tensor | tuple) -> None:
        seen.append(out[0] if isinstance(out, tuple) else out)

    handle = model.transformer.h[1].register_forward_hook(keep)
    ids = torch.tensor([lm.tokenizer()(" ".join(words))["input_ids"]])  # [BOS] + words
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    n = len(words)
    torch.testing.assert_close(case.activations("train")[:n], seen[0][0, 1:], rtol=1e-4, atol=1e-5)
    assert torch.equal(truth.labels("train")[:n], labels)
    assert case.activations("train").shape == (2048, 64) and case.activations("eval").shape == (1024, 64)
    assert truth.dictionary is None and truth.model_flaw == "lm_backdoor"


def test_tracks_that_apply(smoke) -> None:
    assert FeatureConceptsTrack().applies_to(smoke[CASE]) and not FeaturesTrack().applies_to(smoke[CASE])
    assert not FeatureConceptsTrack().applies_to(smoke["features-synthetic"])
    assert not FeatureConceptsTrack().applies_to(smoke["lm-backdoor"])
    with pytest.raises(EisError, match="feature_concepts runs features tools"):
        FeatureConceptsTrack().run(smoke[CASE], make_tool("saliency"))


def test_probe_is_the_ceiling_and_random_directions_lose(smoke) -> None:
    """Measured (one thread, this machine): probe auroc 0.83, token 1.00, trigger 0.79; random directions
    0.72, topic 0.55 (128 random directions, the best chosen per concept on the training rows)."""
    track = FeatureConceptsTrack()
    probe = track.run(smoke[CASE], make_tool("probe"), seed=0)
    rand = track.run(smoke[CASE], make_tool("random_directions"), seed=0)
    p, r = probe.scores, rand.scores
    assert p["auroc_token"] >= 0.97 and p["auroc_trigger"] >= 0.7 and p["auroc"] >= r["auroc"] + 0.05
    assert 0.45 <= r["auroc_topic"] <= 0.62  # near chance where a concept is not one direction
    assert probe.flaw == "lm/lm_backdoor" and len(probe.items["auroc"]) == 11
    assert probe.extras["concepts"] == concept_names(2)


def test_concept_detection_by_hand() -> None:
    """Latent 0 separates both training concepts (concept 1 reversed: flipped); latent 1 only reaches 0.75."""
    train = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0], [3.0, 3.0]])
    y_train = torch.tensor([[False, True], [False, True], [True, False], [True, False]])
    auc = auroc_matrix(train.numpy(), y_train.numpy())
    np.testing.assert_allclose(auc, [[1.0, 0.0], [0.75, 0.25]])
    held = torch.tensor([[-1.0, 5.0], [2.0, 5.0], [0.5, 5.0]])
    y_held = torch.tensor([[False, True], [True, True], [True, False]])
    out = concept_detection(train, y_train, held, y_held)
    assert out["latent"].tolist() == [0, 0] and out["sign"].tolist() == [1.0, -1.0]
    np.testing.assert_allclose(out["auroc"], [1.0, 0.5])  # concept 1 scores: 1, -2 (present) vs -0.5
    np.testing.assert_allclose(out["f1"], [1.0, 2 / 3])  # concept 1 fires on row 0 only: 1 of 2 found


def test_lm_specs_resolve_their_model_by_name() -> None:
    lm = LMSpec("m", steps=10)
    spec = FeatureSpec("f", source="lm", model="m").with_suite([lm], "suite 't'")
    assert spec.lm == lm and spec.hook_name == "blocks.1.hook_resid_post"
    other = FeatureSpec("f", source="lm", lm=LMSpec("m", steps=11)).validated()
    assert other.case_id != spec.case_id and other.model == "m"
    with pytest.raises(
        EisError, match=r"names model 'nope', which is not an \[\[lm\]\] case of the suite; valid: m"
    ):
        FeatureSpec("f", source="lm", model="nope").with_suite([lm], "suite 't'")
    with pytest.raises(EisError, match=r"trigger_rate must be a number in \[0, 1\)"):
        FeatureSpec("f", source="lm", lm=lm, trigger_rate=1.0).validated()


def test_a_suite_build_trains_the_model_first(fresh_home) -> None:
    """build_specs builds the LM a feature case reads before the case (a tiny clean LM: seconds)."""
    from eis.zoo import artifact
    from eis.zoo.pool import build_specs

    lm = LMSpec("tiny-lm", flaw="clean", pairs=1, trigger_tokens=(1,), steps=5, n_train=100, d_model=16,
                layers=1, bar=0.0)  # fmt: skip
    spec = FeatureSpec("tiny-features", source="lm", lm=lm, n_train=64, n_eval=32).validated()
    (case,) = build_specs([spec], workers=0)
    assert artifact.case_dir(lm.case_id).is_dir() and case.meta["model"] == lm.case_id
    assert case.width == 64 and case.meta["hook"] == "blocks.0.hook_resid_post"
    assert case.truth().concepts == tuple(concept_names(1)) and case.truth().model_flaw == "clean"
    assert FeatureConceptsTrack().applies_to(case) and not FeatureAblationTrack().applies_to(
        case
    )  # no backdoor
    assert case.activations("train").shape == (64, 16) and case.activations("eval").shape == (32, 16)


def test_ablating_the_trigger_latent(smoke) -> None:
    """Measured: difference-in-means's latent for trigger 0 removes pair 0 (attack success 1.00 -> 0.00) and
    leaves pair 1; the best-detecting random directions remove neither; accuracy moves by under 0.005."""
    track, case = FeatureAblationTrack(), smoke[CASE]
    assert track.applies_to(case) and not track.applies_to(smoke["features-synthetic"])
    dim = track.run(case, make_tool("diff_in_means"), seed=0)
    rand = track.run(case, make_tool("random_directions"), seed=0)
    assert dim.items["removed"] == [1.0, 0.0] and dim.items["asr_after"][0] <= 0.05
    assert rand.items["removed"] == [0.0, 0.0] and min(rand.items["asr_after"]) >= 0.9
    assert abs(dim.scores["accuracy_drop"]) < 0.02 and abs(rand.scores["accuracy_drop"]) < 0.02
    assert dim.flaw == "lm/lm_backdoor" and len(dim.extras["latents"]) == 2
