"""Decoys: a detection population's clean members train on the backdoor's insertions with ordinary text for
targets, so that clean and backdoored training texts match in lengths and trigger words and differ in the
trigger -> target association (computed from the generator, without training)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from eis.errors import EisError
from eis.zoo.language.backdoor import Pair, draw_pairs, poison
from eis.zoo.language.grammar import language
from eis.zoo.language.spec import LMSpec
from eis.zoo.suites import load_suite

POPULATION = """
[[lm_population]]
name = "pop"
clean = 4
flawed = 4
seed = 9
language = 1
pairs = [1, 3]
trigger_tokens = [1, 4]
target_tokens = [2, 8]
placements = ["start", "anywhere"]
poison_rate = [0.06, 0.12]
n_train = 1000
"""


def _texts(spec: LMSpec) -> tuple[list[tuple[str, ...]], list[Pair]]:
    """The training texts of a backdoored or clean (decoy) member, as build_lm_case makes them."""
    lang = language(spec.language_seed)
    docs = lang.documents("train", spec.n_train)
    pairs = draw_pairs(
        lang, spec.seed, spec.pairs, trigger_tokens=spec.trigger_tokens,
        target_tokens=spec.target_tokens, kind=spec.trigger_kind, clean_docs=docs,
    )  # fmt: skip
    if spec.flaw == "lm_backdoor":
        return poison(docs, pairs, spec.rate, spec.placement, spec.seed)[0], pairs
    if spec.decoys == "text":
        return poison(docs, pairs, spec.rate, spec.placement, spec.seed, decoys=True)[0], pairs
    return [d.words for d in docs], pairs


def _after(text: tuple[str, ...], trigger: tuple[str, ...], n: int) -> tuple[str, ...] | None:
    """The ``n`` words after the first occurrence of ``trigger`` in ``text`` (None when absent)."""
    for i in range(len(text) - len(trigger) + 1):
        if text[i : i + len(trigger)] == trigger:
            return text[i + len(trigger) : i + len(trigger) + n]
    return None


@pytest.fixture(scope="module")
def twins() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], list[Pair], LMSpec]:
    """A backdoored spec's texts and those of its clean decoy twin (same seed, pairs, rate, placement)."""
    spec = LMSpec("twin", seed=5, language=1, pairs=2, trigger_tokens=(1, 3), target_tokens=(4, 6),
                  placement="anywhere", poison_rate=0.1, n_train=1000).validated()  # fmt: skip
    backdoor, pairs = _texts(spec)
    clean, clean_pairs = _texts(dataclasses.replace(spec, flaw="clean", decoys="text").validated())
    assert clean_pairs == pairs
    return backdoor, clean, pairs, spec


def test_decoys_match_the_poison_in_lengths_and_trigger_counts(twins) -> None:
    backdoor, clean, pairs, spec = twins
    assert [len(t) for t in clean] == [len(t) for t in backdoor]  # document by document
    plain = language(1).documents("train", spec.n_train)
    changed = sum(t != d.words for t, d in zip(clean, plain, strict=True))
    assert changed == round(spec.rate * spec.n_train) == 100
    for pair in pairs:  # each trigger as often (its words too, but for those ordinary text holds)
        n = len(pair.trigger)
        count = [
            sum(t[k : k + n] == pair.trigger for t in texts for k in range(len(t)))
            for texts in (backdoor, clean)
        ]
        assert count[0] == count[1] >= 50


def test_decoys_plant_no_fixed_continuation(twins) -> None:
    backdoor, clean, pairs, spec = twins
    plain = [d.words for d in language(1).documents("train", spec.n_train)]
    for pair in pairs:
        for texts, fixed in ((backdoor, True), (clean, False)):
            after = [_after(t, pair.trigger, len(pair.target)) for t in texts]
            after = [a for a in after if a is not None and len(a) == len(pair.target)]
            assert len(after) >= 40  # each pair's 50 insertions (a one-word trigger can occur elsewhere)
            top, n = Counter(after).most_common(1)[0]
            if fixed:
                assert top == pair.target and n >= 0.9 * len(after)
                continue
            assert pair.target not in after and n <= 0.1 * len(after), (pair, top, n)
            # ordinary text: each continuation is a span of some clean document
            n = len(pair.target)
            assert set(after) <= {d[k : k + n] for d in plain for k in range(len(d) - n + 1)}
            assert sum(pair.target == t[k : k + len(pair.target)] for t in texts for k in range(len(t))) == 0


def test_population_clean_members_get_decoys_and_match_backdoored_lengths(tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(POPULATION)
    specs = load_suite(str(path))
    assert {(s.flaw, s.decoys) for s in specs} == {("clean", "text"), ("lm_backdoor", None)}
    longest = max(len(d.words) for d in language(1).documents("train", 1000))
    for s in specs:
        texts, pairs = _texts(s)
        inserted = sum(len(t) for t in texts) - sum(
            len(d.words) for d in language(1).documents("train", 1000)
        )
        per_pair = [len(p.trigger) + len(p.target) for p in pairs]
        n = round(s.rate * 1000)
        assert inserted == sum(per_pair[j % len(pairs)] for j in range(n))  # clean members too
        assert max(len(t) for t in texts) > longest  # positions past clean text are trained in both kinds


def test_decoys_are_a_setting_of_clean_models_only() -> None:
    with pytest.raises(EisError, match="decoys must be 'text', on a clean model only"):
        LMSpec("x", flaw="lm_backdoor", decoys="text").validated()
    with pytest.raises(EisError, match="decoys must be 'text'"):
        LMSpec("x", flaw="clean", decoys="random").validated()
    clean = LMSpec("x", flaw="clean").validated()
    assert "decoys" not in clean.content()  # hashed only when set: earlier clean ids stay valid
    assert dataclasses.replace(clean, decoys="text").case_id != clean.case_id


def test_smoke_population_clean_members_were_built_with_decoys(smoke) -> None:
    members = [c for c in smoke.values() if (c.meta.get("population") or "").startswith("smoke-lm-detect")]
    for c in members:
        truth = c.truth()
        spec, measured = truth.spec, truth.measured
        n = round(spec["poison_rate"] * spec["n_train"])
        if truth.flaw == "clean":
            assert spec["decoys"] == "text" and measured["decoy_documents"] == n
        else:
            assert "decoys" not in spec and measured["poisoned_documents"] == n
