"""The feature_lm_steering track: concept and grammar scores by hand, batched steered sampling against a full
recomputation, the true concept direction against random ones on smoke's LM, and the track through the
runner."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from eis.errors import EisError
from eis.results import load
from eis.runner import run_benchmark
from eis.tools.base import make_tool
from eis.tools.features.base import FeatureTask
from eis.tools.lm_hooks import hooks
from eis.tracks.feature_lm_steering import (
    SCALES,
    FeatureLMSteeringTrack,
    _setting,
    chosen_latents,
    judge,
    sample,
)
from eis.tracks.metrics.lm_steering import QUESTION_WORDS, concept_words, expresses, grammatical
from eis.zoo.language.grammar import EOS, encode, language
from eis.zoo.language.lm import BOS_ID, EOS_ID

CASE = "lm-backdoor-features"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _words() -> dict[str, str]:
    lang = language(0)
    c, t = lang.categories, lang.topics
    return {
        "N": c["name"][0], "M": c["name"][1], "P": c["place"][0], "R": c["role"][0], "A": c["attribute"][0],
        "V0": t[0]["verb"][0], "O0": t[0]["object"][0], "O0b": t[0]["object"][1], "O1": t[1]["object"][0],
        "X": c["rare"][0],
    }  # fmt: skip


def _text(template: str) -> list[str]:
    w = _words()
    return [w.get(token, token) for token in template.split()]


def test_concept_words_by_hand() -> None:
    lang = language(0)
    assert concept_words(lang, "token:place") == frozenset(lang.categories["place"])
    assert concept_words(lang, "topic:1") == frozenset((*lang.topics[1]["object"], *lang.topics[1]["verb"]))
    assert concept_words(lang, "question") == frozenset(QUESTION_WORDS)
    assert concept_words(lang, "trigger:0") == frozenset() and concept_words(lang, "topic:9") == frozenset()
    topic0 = concept_words(lang, "topic:0")
    assert expresses(_text("N likes the O0 ."), topic0) and not expresses(_text("N likes the O1 ."), topic0)
    assert not expresses(_text("N lives in P ."), concept_words(lang, "question"))


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("N lives in P . it V0 the O0 and the O0b .", True),
        ("it is a very A R . N is the R of P . where does N live ? P .", True),
        ("N likes the X . what is N ? a R . " + EOS, True),  # a rare word stands for an object
        ("N is a very", True),  # cut by the length limit inside a template
        ("N V0 the O0 in", True),
        (EOS, True),
        ("N is very A R .", False),  # "is a very", not "is very"
        ("N V0 the O0 and the O1 .", False),  # objects of two topics in one sentence
        ("N V0 the O1", False),  # a verb of topic 0 with an object of topic 1, even cut short
        ("who is from P ? N . N lives in P .", False),  # a closing question is the last sentence
        ("N lives in " + EOS, False),  # [EOS] inside a sentence
        (EOS + " N", False),  # words after [EOS]
        ("N N lives in P .", False),
        ("P lives in N .", False),
    ],
)
def test_grammatical_by_hand(text: str, ok: bool) -> None:
    assert grammatical(language(0), _text(text)) is ok


def test_the_generator_s_documents_are_grammatical_and_shuffled_ones_are_not() -> None:
    """Every cut of every held-out document after its first sentence passes (the templates follow the
    generator); with two words swapped, few documents pass."""
    for seed in (0, 3):
        lang = language(seed)
        for doc in lang.documents("held_out", 300):
            words = list(doc.words)
            first = words.index(".") + 1
            assert all(grammatical(lang, words[first:cut]) for cut in range(first, len(words) + 1))
            assert grammatical(lang, [*words[first:], EOS])
    lang, rng, passed = language(0), random.Random(0), 0
    docs = lang.documents("held_out", 300)
    for doc in docs:
        words = list(doc.words)
        i, j = rng.sample(range(len(words)), 2)
        while words[i] == words[j]:
            i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
        passed += grammatical(lang, words)
    assert passed < 0.1 * len(docs)


def test_judge_by_hand() -> None:
    lang = language(0)
    texts = ["N likes the O0 . M", "N likes the O1 .", "N V0 the O1 .", "N lives in P ."]
    ids = [encode(lang, _text(t)) for t in texts]
    used, fluent = judge(lang, "topic:0", ids)
    np.testing.assert_array_equal(used, [1, 0, 1, 0])
    np.testing.assert_array_equal(fluent, [1, 1, 0, 1])
    assert float((used * fluent).mean()) == 0.25  # the combined score: used and grammatical


def test_batched_steered_sampling_matches_a_full_recomputation(smoke) -> None:
    """sample() (grouped by prompt length, key-value cache, vector after [BOS]) equals recomputing every
    step from the whole sequence with the vector added at positions 1 onwards."""
    lm = smoke["lm-backdoor"]
    model, lang = lm.model("cpu"), lm.language()
    prompts = [
        [BOS_ID, *encode(lang, d.words[:k])]
        for d, k in zip(lang.documents("held_out", 3), (3, 5, 3), strict=True)
    ]
    gen = torch.Generator().manual_seed(0)
    vectors = 4 * torch.randn(3, model.config.n_embd, generator=gen)
    noise = -torch.log(-torch.log(torch.rand(3, 6, len(lang.vocab), generator=gen)))
    hook = "blocks.1.hook_resid_post"
    got = sample(model, prompts, hook, vectors, noise, eos=EOS_ID)
    for i, prompt in enumerate(prompts):

        def add(act: torch.Tensor, _hook: str, i: int = i) -> torch.Tensor:
            out = act.clone()
            out[:, 1:] += vectors[i]
            return out

        seq = list(prompt)
        with torch.no_grad(), hooks(model, [(hook, add)]):
            for step in range(6):
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
                seq.append(int((logits.log_softmax(-1) + noise[i, step]).argmax()))
                if seq[-1] == EOS_ID:
                    break
        assert got[i] == seq[len(prompt) :]
    plain = sample(model, prompts, hook, torch.zeros_like(vectors), noise, eos=EOS_ID)
    assert plain != got  # the vectors change what is sampled


def _concept_gain(case, tool, scale: float) -> np.ndarray:
    """Per steered concept: share of continuations using its words with the tool's chosen direction at
    ``scale`` x the RMS norm, minus the share unsteered (the track's scored prompts and noise)."""
    setting = _setting(case.id, 12, 32, 64, 0)
    train, labels = case.activations("train"), case.truth().labels("train")
    found = tool.find(FeatureTask(train, train, case.width, labels if tool.supervised else None, 0))
    best, sign = chosen_latents(found.activations, labels[:, setting.columns])
    u = found.directions[best] * torch.from_numpy(sign).float()[:, None]
    u = u / u.norm(dim=1, keepdim=True)
    rms = float(train.double().pow(2).sum(1).mean().sqrt())
    scored, k = setting.prompts.scored, len(setting.concepts)
    plain = setting.continuations(scored, None, setting.noise_scored)
    vectors = (scale * rms * u)[:, None, :].expand(k, len(scored), -1).reshape(-1, setting.d)
    steered = setting.continuations(scored * k, vectors, setting.noise_scored)
    n = len(scored)
    return np.asarray(
        [
            judge(setting.lang, c, steered[j * n : (j + 1) * n])[0].mean()
            - judge(setting.lang, c, plain)[0].mean()
            for j, c in enumerate(setting.concepts)
        ]
    )


def test_the_true_direction_steers_and_random_directions_do_not(smoke) -> None:
    """Measured at 0.5 x the RMS norm on smoke's LM (150 steps): difference-in-means raises the closing
    question's share from 0.03 to 0.41 (+0.38; the smoke LM's topics barely move); the best-detecting random
    direction raises it by 0.14, and random directions move the concepts by +0.012 on average."""
    case = smoke[CASE]
    concepts = _setting(case.id, 12, 32, 64, 0).concepts
    assert concepts == [*(f"token:{c}" for c in ("name", "place", "role", "attribute")),
                        *(f"topic:{t}" for t in range(4)), "question"]  # fmt: skip
    dim = _concept_gain(case, make_tool("diff_in_means"), 0.5)
    rand = _concept_gain(case, make_tool("random_directions"), 0.5)
    q = concepts.index("question")
    assert dim[q] >= 0.28 and rand[q] <= dim[q] - 0.15
    assert abs(rand.mean()) <= 0.05


def test_the_track_through_the_runner(smoke, tmp_path) -> None:
    """diff_in_means and the random-direction control on smoke's LM case: one row each, 9 concepts, the
    baselines shared, the verdict naming the control and prompting."""
    case = smoke[CASE]
    track = FeatureLMSteeringTrack()
    assert track.applies_to(case) and not track.applies_to(smoke["features-synthetic"])
    assert not track.applies_to(smoke["lm-backdoor"])
    store = tmp_path / "cells.db"
    summary = run_benchmark(
        [case], tools=["diff_in_means"], tracks=["feature_lm_steering"], workers=0, store=store
    )
    assert summary.failed == 0
    df = load(store).set_index("tool")
    assert set(df.index) == {"diff_in_means", "random_directions"}
    dim, rand = df.loc["diff_in_means"], df.loc["random_directions"]
    assert dim["flaw"] == "lm/lm_backdoor" and len(dim["items"]["combined"]) == 9
    assert set(dim["items"]["scale"]) <= set(SCALES)
    assert dim["items"]["combined_prompting"] == rand["items"]["combined_prompting"]
    for row in (dim, rand):
        items = row["items"]
        for c, g, both in zip(items["concept"], items["fluency"], items["combined"], strict=True):
            assert max(0.0, c + g - 1) <= both <= min(c, g)
        assert row["scores"]["logprob"] < 0
    long = track.summarize(load(store))
    head = long[(long["flaw"] == "all") & (long["metric"] == "combined")].set_index("tool")
    assert head.loc["random_directions", "verdict"].startswith("control; beats prompting: ")
    assert head.loc["diff_in_means", "verdict"].startswith("beats random_directions: ")
    assert "; beats prompting: " in head.loc["diff_in_means", "verdict"]
    with pytest.raises(EisError, match="feature_lm_steering runs features tools"):
        track.run(case, make_tool("saliency"))


@pytest.mark.parametrize("key", ["n_tokens", "n_select", "n_eval"])
def test_settings_are_checked(key: str) -> None:
    with pytest.raises(EisError, match=f"feature_lm_steering: {key} must be an integer"):
        FeatureLMSteeringTrack(**{key: 0})
