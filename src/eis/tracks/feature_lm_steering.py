"""The ``feature_lm_steering`` track: does adding a found direction make a language model write the concept?

Asked of the zoo's feature cases over a language model (source ``lm``). The tool fits on the case's training
rows (supervised tools get the concepts' labels); for each concept that words of the language express (word
categories, topics, the closing question; :func:`~eis.tracks.metrics.lm_steering.concept_words`), the latent
that best separates it on the training rows is chosen and oriented, as the ``feature_concepts`` track chooses
it. Its unit direction ``u``, scaled to ``a`` times the hook point's RMS activation norm, is added to the
hook point at every position after ``[BOS]`` while the language model samples a continuation (activation
addition, Turner et al. 2023, at every position as in AxBench; through :mod:`eis.tools.lm_hooks`).

Prompts are the first sentences of held-out documents the case did not read. A continuation is
``n_tokens`` sampled tokens (temperature 1, or up to ``[EOS]``), scored with the generator's knowledge of
its language (:mod:`eis.tracks.metrics.lm_steering`, no judge model):

- ``concept``: the share of continuations that use a word of the concept;
- ``fluency``: the share the grammar could produce (templates over word categories, one topic per
  sentence);
- ``combined`` (headline): the share that do both, the per-continuation harmonic mean of the two 0/1 scores
  as AxBench combines its judge's scores;
- ``logprob``: the continuation's mean per-token log-probability under the unsteered model after the bare
  prompt (reported, not ranked);
- ``scale``: the chosen ``a``, per concept the one of :data:`SCALES` with the highest ``combined`` on
  ``n_select`` selection prompts apart from the ``n_eval`` scored ones (the choice uses the concept's words,
  as AxBench picks its steering factor on held-out prompts).

Two baselines run on the same prompts, with the same sampling noise per prompt and position (common random
numbers, so differences are paired): no steering, and prompting (AxBench's strongest): a sentence of the
language that expresses the concept put before the prompt (a held-out sentence using one of its words, made
about the prompt's entity: its names, and a leading ``it``, become the prompt's first word).
Every cell reports ``combined_unsteered`` and ``combined_prompting`` (likewise ``concept_*``, ``fluency_*``
and ``logprob_*``), per concept the paired differences ``vs_unsteered`` and ``vs_prompting``, and
``combined``, ``vs_unsteered`` and ``vs_prompting`` over each group of concepts alone (``*_token``,
``*_topic``, ``*_question``). Intervals resample cases, then concepts; the verdict
compares each tool with the random-direction control, paired by case and concept, and says whether the
tool beats prompting.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch

from eis.errors import EisError
from eis.stats import CI, paired_bootstrap_ci, verdict
from eis.tools.lm_hooks import hooks
from eis.tracks.base import CellResult, Track, register_track
from eis.tracks.features import FeaturesTrack, fit_on_training_rows
from eis.tracks.metrics import lm_steering as lms
from eis.tracks.metrics.features import auroc_matrix
from eis.tracks.sanity import cell_groups, long_table
from eis.zoo.kinds import kind_of

if TYPE_CHECKING:
    from eis.tools.base import Tool
    from eis.zoo.case import Case
    from eis.zoo.language.grammar import Language

SCALES = (0.125, 0.25, 0.5, 1.0)  # steering strengths, in units of the hook point's RMS activation norm
N_TOKENS = 12
N_SELECT = 32
N_EVAL = 64
GROUPS = ("token", "topic", "question")


def chosen_latents(activations: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per label column: the latent whose activation best separates it (sign-free ROC-AUC), and the sign
    (+1 or -1) that orients that latent toward the label."""
    auc = auroc_matrix(activations.double().cpu().numpy(), labels.bool().cpu().numpy())
    auc = np.where(np.isfinite(auc), auc, 0.5)
    best = np.maximum(auc, 1 - auc).argmax(axis=0)
    return best, np.where(auc[best, np.arange(auc.shape[1])] >= 0.5, 1.0, -1.0)


def _forward(model: torch.nn.Module, ids: torch.Tensor, past: Any, width: int) -> tuple[torch.Tensor, Any]:
    """Last-position logits and the key-value cache (the cache is the second argument and output field of a
    ``transformers`` causal LM: ``past_key_values`` before version 5, ``cache`` after)."""
    out = model(ids, past, attention_mask=torch.ones(len(ids), width, dtype=torch.long), use_cache=True)
    return out.logits[:, -1].float(), out["cache"] if "cache" in out else out["past_key_values"]


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    hook: str,
    vectors: torch.Tensor,
    noise: torch.Tensor,
    *,
    eos: int,
    batch_size: int = 512,
) -> list[list[int]]:
    """Per prompt (token ids with their ``[BOS]``), the tokens sampled after it with ``vectors[i]`` (rows,
    d) added to ``hook`` at every position after ``[BOS]``: ``argmax(log p + noise[i, step])`` (Gumbel
    noise: sampling at temperature 1), ``noise.shape[1]`` tokens or up to ``eos`` included. Prompts of one
    length run together, with a key-value cache."""
    n = noise.shape[1]
    out: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, rows in sorted(by_length.items()):
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            vec = vectors[idx].to(torch.float32)
            first = [True]

            def steer(
                act: torch.Tensor, _hook: str, vec: torch.Tensor = vec, first: list = first
            ) -> torch.Tensor:
                add = vec[:, None, :].expand_as(act).clone()
                if first[0]:
                    add[:, 0] = 0  # not on [BOS]
                return act + add.to(act.dtype)

            ids = torch.tensor([list(prompts[i]) for i in idx])
            past, tokens = None, []
            with hooks(model, [(hook, steer)]):
                for step in range(n):
                    logits, past = _forward(model, ids, past, length + step)
                    first[0] = False
                    ids = (logits.log_softmax(-1) + noise[idx, step]).argmax(-1, keepdim=True)
                    tokens.append(ids[:, 0])
            for j, seq in zip(idx, torch.stack(tokens, 1).tolist(), strict=True):
                out[j] = seq[: seq.index(eos) + 1] if eos in seq else seq
    return out


@torch.no_grad()
def continuation_logprob(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]
) -> np.ndarray:
    """Per prompt, the mean log-probability per token of its continuation under ``model`` (no hooks)."""
    from eis.zoo.language.lm import pad

    out = np.full(len(prompts), math.nan)
    for start in range(0, len(prompts), 512):
        chunk = range(start, min(start + 512, len(prompts)))
        seqs = pad([[*prompts[i], *continuations[i]] for i in chunk])
        logp = model(input_ids=seqs, attention_mask=torch.ones_like(seqs)).logits.float().log_softmax(-1)
        for k, i in enumerate(chunk):
            a, b = len(prompts[i]), len(prompts[i]) + len(continuations[i])
            if b > a:
                picked = logp[k, a - 1 : b - 1].gather(-1, seqs[k, a:b, None])
                out[i] = float(picked.mean())
    return out


def _noise(rows: int, n: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(rows, n, vocab, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return (-torch.log(-torch.log(u))).float()


class Prompts:
    """The prompts of one case: ``select`` and ``scored`` (first sentences of held-out documents the case
    did not read, with ``[BOS]``) and, per concept, a sentence expressing it for each scored prompt."""

    def __init__(
        self,
        lang: Language,
        spec: dict[str, Any],
        concepts: Sequence[str],
        n_select: int,
        n_eval: int,
        seed: int,
    ) -> None:
        from eis.zoo.features.language import MIN_DOCUMENT_WORDS
        from eis.zoo.language.grammar import encode
        from eis.zoo.language.lm import BOS_ID

        read = sum(math.ceil(int(spec[k]) / MIN_DOCUMENT_WORDS) + 1 for k in ("n_train", "n_eval"))
        docs = lang.documents("held_out", read + n_select + n_eval + 4 * n_eval)[read:]
        firsts = [list(d.words[: d.words.index(".") + 1]) for d in docs[: n_select + n_eval]]
        self.select = [[BOS_ID, *encode(lang, w)] for w in firsts[:n_select]]
        self.scored = [[BOS_ID, *encode(lang, w)] for w in firsts[n_select:]]
        sentences: list[list[str]] = []
        for d in docs[n_select + n_eval :]:
            cuts = [0, *(i + 1 for i, w in enumerate(d.words) if w == ".")]
            sentences += [list(d.words[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        names = set(lang.categories["name"])

        def about(sentence: list[str], entity: str) -> list[str]:
            # about the prompt's entity: its names, and a leading "it", become the entity
            return [entity if w in names or (i == 0 and w == "it") else w for i, w in enumerate(sentence)]

        self.prompted: dict[str, list[list[int]]] = {}
        for concept in concepts:
            words = lms.concept_words(lang, concept)
            pool = [s for s in sentences if lms.expresses(s, words)]
            if not pool:
                raise EisError(f"no held-out sentence of language {lang.seed} expresses {concept!r}")
            rng = random.Random(f"eis-lm-steering-{seed}-{concept}")
            self.prompted[concept] = [
                [p[0], *encode(lang, about(rng.choice(pool), w[0])), *p[1:]]
                for p, w in zip(self.scored, firsts[n_select:], strict=True)
            ]


def judge(
    lang: Language, concept: str, continuations: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per continuation (token ids): 1.0 where it uses a word of ``concept`` / where the grammar could
    produce it (:mod:`eis.tracks.metrics.lm_steering`), else 0.0."""
    words = lms.concept_words(lang, concept)
    texts = [[lang.vocab[t] for t in c] for c in continuations]
    used = np.asarray([lms.expresses(t, words) for t in texts], dtype=float)
    return used, np.asarray([lms.grammatical(lang, t) for t in texts], dtype=float)


def outcomes(
    model: torch.nn.Module,
    lang: Language,
    concept: str,
    bare: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
) -> dict[str, float]:
    """``concept``, ``fluency`` and ``combined`` shares of ``continuations`` (token ids, see :func:`judge`)
    and their mean ``logprob`` under ``model`` after the ``bare`` prompts."""
    used, fluent = judge(lang, concept, continuations)
    logprob = continuation_logprob(model, bare, continuations)
    return {
        "concept": float(used.mean()),
        "fluency": float(fluent.mean()),
        "combined": float((used * fluent).mean()),
        "logprob": float(np.nanmean(logprob)) if np.isfinite(logprob).any() else math.nan,
    }


class Setting:
    """What the cells of one case share: the language model, its language, the concepts steered, the
    prompts and the sampling noise (see the module docstring)."""

    def __init__(self, case: Case, n_tokens: int, n_select: int, n_eval: int, seed: int) -> None:
        import eis.zoo
        from eis.zoo.language.lm import EOS_ID

        truth = case.truth()
        lm_case = eis.zoo.load(case.meta["model"])
        self.model, self.lang = lm_case.model("cpu"), lm_case.language()  # type: ignore[attr-defined]
        self.hook, self.eos = str(case.meta["hook"]), EOS_ID
        self.concepts = [c for c in truth.concepts if lms.concept_words(self.lang, c)]
        self.columns = [truth.concepts.index(c) for c in self.concepts]
        self.prompts = Prompts(self.lang, truth.spec, self.concepts, n_select, n_eval, seed)
        vocab = len(self.lang.vocab)
        self.noise_select = _noise(n_select, n_tokens, vocab, 2 * seed)
        self.noise_scored = _noise(n_eval, n_tokens, vocab, 2 * seed + 1)
        self.d = int(case.activations("train").shape[1])  # type: ignore[attr-defined]

    def continuations(
        self, prompts: Sequence[Sequence[int]], vectors: torch.Tensor | None, noise: torch.Tensor
    ) -> list[list[int]]:
        """:func:`sample` for prompts that repeat ``noise``'s prompts (zero vectors where None)."""
        reps = len(prompts) // len(noise)
        vectors = torch.zeros(len(prompts), self.d) if vectors is None else vectors
        return sample(self.model, prompts, self.hook, vectors, noise.repeat(reps, 1, 1), eos=self.eos)

    @functools.cached_property
    def baselines(self) -> dict[str, dict[str, float]]:
        """Per concept, the scored prompts' outcomes unsteered (``*_unsteered``) and prompted
        (``*_prompting``)."""
        scored = self.prompts.scored
        plain = self.continuations(scored, None, self.noise_scored)
        prompted = self.continuations(
            [p for c in self.concepts for p in self.prompts.prompted[c]], None, self.noise_scored
        )
        out: dict[str, dict[str, float]] = {}
        for j, concept in enumerate(self.concepts):
            mine = prompted[j * len(scored) : (j + 1) * len(scored)]
            base = outcomes(self.model, self.lang, concept, scored, plain)
            told = outcomes(self.model, self.lang, concept, scored, mine)
            out[concept] = {**{f"{m}_unsteered": v for m, v in base.items()}}
            out[concept].update({f"{m}_prompting": v for m, v in told.items()})
        return out


@functools.lru_cache(maxsize=4)
def _setting(case_id: str, n_tokens: int, n_select: int, n_eval: int, seed: int) -> Setting:
    import eis.zoo

    return Setting(eis.zoo.load(case_id), n_tokens, n_select, n_eval, seed)


@register_track
class FeatureLMSteeringTrack(Track):
    """Activation addition with the latent chosen for each LM concept, against prompting and no steering."""

    name: ClassVar[str] = "feature_lm_steering"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "features"
    headline: ClassVar[str] = "combined"
    summary: ClassVar[str] = (
        "steer an LM with each concept's latent: concept used and grammatical, vs prompting"
    )

    def __init__(
        self,
        n_tokens: int = N_TOKENS,
        n_select: int = N_SELECT,
        n_eval: int = N_EVAL,
        n_resamples: int = 1000,
    ) -> None:
        """Settings: tokens sampled per continuation, selection and scored prompts per concept, and the
        bootstrap resamples of ``summarize``."""
        for key, value, low, high in (
            ("n_tokens", n_tokens, 1, 32), ("n_select", n_select, 1, 4096), ("n_eval", n_eval, 2, 4096)
        ):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise EisError(
                    f"feature_lm_steering: {key} must be an integer in [{low}, {high}], got {value!r}"
                )
        self.n_tokens, self.n_select, self.n_eval, self.n_resamples = n_tokens, n_select, n_eval, n_resamples

    def applies_to(self, case: Case) -> bool:
        return kind_of(case) == "features" and case.meta.get("source") == "lm"

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        truth, labels, found = fit_on_training_rows(self.name, case, tool, seed)
        setting = _setting(case.id, self.n_tokens, self.n_select, self.n_eval, seed)
        train = case.activations("train")  # type: ignore[attr-defined]
        best, sign = chosen_latents(found.activations, labels[:, setting.columns])
        u = found.directions.detach().cpu().double()[best] * torch.from_numpy(sign)[:, None]
        u = (u / u.norm(dim=1, keepdim=True).clamp(min=1e-12)).float()
        rms = float(train.double().pow(2).sum(1).mean().sqrt())
        k, s = len(setting.concepts), len(SCALES)
        select = setting.prompts.select
        strength = torch.tensor(SCALES) * rms
        vectors = (u[:, None, None, :] * strength[None, :, None, None]).expand(k, s, len(select), -1)
        tried = setting.continuations(select * (k * s), vectors.reshape(-1, setting.d), setting.noise_select)
        chosen = []
        for j, concept in enumerate(setting.concepts):
            combined = []
            for i in range(s):
                at = (j * s + i) * len(select)
                used, fluent = judge(setting.lang, concept, tried[at : at + len(select)])
                combined.append(float((used * fluent).mean()))
            chosen.append(int(np.argmax(combined)))  # ties: the weaker steering
        scored = setting.prompts.scored
        vectors = (u * strength[chosen][:, None])[:, None, :].expand(k, len(scored), -1)
        steered = setting.continuations(scored * k, vectors.reshape(-1, setting.d), setting.noise_scored)
        per: dict[str, list[float]] = {}
        for j, concept in enumerate(setting.concepts):
            out = outcomes(
                setting.model, setting.lang, concept, scored, steered[j * len(scored) : (j + 1) * len(scored)]
            )
            out["scale"] = SCALES[chosen[j]]
            out.update(setting.baselines[concept])
            out["vs_unsteered"] = out["combined"] - out["combined_unsteered"]
            out["vs_prompting"] = out["combined"] - out["combined_prompting"]
            for m, v in out.items():
                per.setdefault(m, []).append(v)
        for group in GROUPS:
            mine = [j for j, c in enumerate(setting.concepts) if c.split(":")[0] == group]
            for m in ("combined", "vs_unsteered", "vs_prompting") if mine else ():
                per[f"{m}_{group}"] = [per[m][j] for j in mine]
        scores = {m: float(np.nanmean(v)) for m, v in per.items() if np.isfinite(v).any()}
        extras = {
            "concepts": setting.concepts,
            "latents": [int(j) for j in best],
            "rms": rms,
            "supervised": tool.supervised,
        }
        return CellResult(scores=scores, flaw=f"lm/{truth.model_flaw}", items=per, extras=extras)

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    def _verdict(self, tool: str, flaw: str, metric: str, ci: CI, rows: pd.DataFrame) -> str:
        out = FeaturesTrack._verdict(self, tool, flaw, metric, ci, rows)  # type: ignore[arg-type]
        if metric != self.headline or not out:
            return out
        mine = cell_groups(rows[rows["tool"] == tool], "combined")
        told = cell_groups(rows[rows["tool"] == tool], "combined_prompting")
        shared = [c for c in mine if c in told and len(mine[c]) == len(told[c])]
        if not shared:
            return out
        d = paired_bootstrap_ci(
            [mine[c] for c in shared], [told[c] for c in shared], n_resamples=self.n_resamples
        )
        return f"{out}; beats prompting: {verdict(d)} ({d.mean:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}])"
