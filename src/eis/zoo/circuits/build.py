"""Building circuit cases: load the shipped program, apply the variant, confirm the truth, write it."""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch

import eis
from eis.zoo import artifact
from eis.zoo.build import BarError, BarMiss
from eis.zoo.circuits.case import CircuitCase
from eis.zoo.circuits.programs import load_program, sample_tokens
from eis.zoo.circuits.spec import CircuitSpec
from eis.zoo.circuits.truth import ablation_circuit, answer_mask, structural_circuit
from eis.zoo.circuits.variants import add_distractors, rotate


def build_circuit_case(
    spec: CircuitSpec, *, force: bool = False, progress: Callable[[float], None] | None = None
) -> tuple[CircuitCase, bool]:
    """Build one circuit case (cache hits cost nothing); the variant must reproduce every answer."""
    spec = spec.validated()
    root = artifact.zoo_dir() / spec.case_id
    if not force and root.exists():
        try:
            return CircuitCase(root), False
        except artifact.CorruptArtifact:
            pass
    prog = load_program(spec.program)
    base = prog.model()
    weights, cfg = dict(prog.weights), prog.config
    if spec.distractors:
        weights, cfg = add_distractors(weights, cfg, seed=spec.seed)
    if spec.rotate:
        weights = rotate(weights, cfg, seed=spec.seed + 1)
    model = type(base)(cfg)
    model.load_state_dict(weights)
    model.eval()
    meta = prog.meta
    vocab_ids = [meta["input_encoding"][v] for v in meta["vocab"]]
    first = 1 + int(meta.get("undefined_prefix", 0))
    clean, lengths = sample_tokens(vocab_ids, cfg, spec.n_inputs, spec.seed * 2, distinct=meta["distinct"])
    corrupted, _ = sample_tokens(
        vocab_ids, cfg, spec.n_inputs, spec.seed * 2 + 1, distinct=meta["distinct"], lengths=lengths
    )
    answers = answer_mask(clean, cfg.pad_id, first)
    with torch.no_grad():
        want, got = base(clean).argmax(-1), model(clean).argmax(-1)
    accuracy = float((want == got)[answers].float().mean())
    if accuracy < 1.0:
        raise BarError([BarMiss(spec.name, "clean_accuracy", accuracy, 1.0)])
    if progress:
        progress(0.2)
    s_nodes, s_edges = structural_circuit(base)
    nodes, edges, measured = ablation_circuit(model, clean, corrupted, spec.ablation, answers)
    if progress:
        progress(0.9)
    visible = {
        "id": spec.case_id,
        "name": spec.name,
        "kind": "circuit",
        "dataset": "tracr",
        "arch": spec.program,
        "num_classes": cfg.d_vocab_out,
        "input_shape": [cfg.n_ctx],
        "population": None,
        "role": None,
        "seed": spec.seed,
        "ablation": spec.ablation,
        "variant": {"rotate": spec.rotate, "distractors": spec.distractors},
        "model_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "vocab_ids": vocab_ids,
        "distinct": meta["distinct"],
        "first_answer": first,
        "n_inputs": spec.n_inputs,
        "clean_accuracy": accuracy,
        "versions": {"eis": eis.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    truth = {
        "spec": spec.content(),
        "ablation": spec.ablation,
        "nodes": sorted(nodes),
        "edges": sorted(list(e) for e in edges),
        "structural_nodes": sorted(s_nodes),
        "structural_edges": sorted(list(e) for e in s_edges),
        "measured": measured,
    }
    root = artifact.write_artifact(
        spec.case_id, model, visible, truth, {"none": torch.zeros(0)}, replace=force
    )
    if progress:
        progress(1.0)
    return CircuitCase(root), True
