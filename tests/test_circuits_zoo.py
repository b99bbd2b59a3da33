"""The sequence side of the zoo: compiled tracr programs, their variants and their ground-truth circuits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import eis.zoo
from eis.errors import EisError
from eis.zoo.circuits.graph import Graph
from eis.zoo.circuits.model import HookedTransformer
from eis.zoo.circuits.programs import builtin_programs, load_program, sample_tokens
from eis.zoo.circuits.spec import CircuitSpec
from eis.zoo.circuits.truth import ablation_circuit, answer_mask, structural_circuit
from eis.zoo.circuits.variants import add_distractors, rotate

ROOT = Path(__file__).resolve().parents[1]


def _inputs(prog, cfg, n=64, seed=0):
    vocab = [prog.meta["input_encoding"][v] for v in prog.meta["vocab"]]
    clean, lengths = sample_tokens(vocab, cfg, n, seed, distinct=prog.meta["distinct"])
    corrupted, _ = sample_tokens(vocab, cfg, n, seed + 1, distinct=prog.meta["distinct"], lengths=lengths)
    return clean, corrupted, answer_mask(clean, cfg.pad_id, 1 + prog.meta["undefined_prefix"])


def _zero_one(model: HookedTransformer, tokens: torch.Tensor, component: str) -> torch.Tensor:
    """Logits with one head or MLP zeroed through the model's own TransformerLens-style hooks."""
    layer = int(component[1:].split(".")[0])
    if component.startswith("m"):
        return model.run_with_hooks(
            tokens, [(f"blocks.{layer}.hook_mlp_out", lambda a, h: torch.zeros_like(a))]
        )
    head = int(component.split(".h")[1])

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    return model.run_with_hooks(tokens, [(f"blocks.{layer}.attn.hook_z", zero_head)])


def test_shipped_programs_load_without_jax():
    assert {"reverse", "hist", "sort_unique", "detect_pattern"} <= set(builtin_programs())
    with pytest.raises(EisError, match="unknown tracr program 'nope'; valid: "):
        load_program("nope")


@pytest.mark.parametrize("program", ["reverse", "detect_pattern", "sort_unique"])
def test_truth_from_weights_matches_ablating_each_component(program):
    """A component the weights say is used changes the answers when zeroed alone; an unused one never does."""
    prog = load_program(program)
    model = prog.model()
    clean, _, answers = _inputs(prog, prog.config)
    used, edges = structural_circuit(model)
    with torch.no_grad():
        full = model(clean)
        for comp in Graph.of(model).components:
            delta = (_zero_one(model, clean, comp) - full).abs().amax(-1)[answers].max().item()
            assert (delta > 1e-3) == (comp in used), (program, comp, delta)
    assert used and all(Graph.of(model).component_of(d) in used | {"logits"} for _, d in edges)


def test_reverse_truth_depends_on_the_ablation():
    """Conmy et al.'s reverse circuit: 10 edges under zero ablation (the 13 the weights allow, minus 3 that
    only carry BOS/constant directions); under resample ablation of same-length inputs the length
    sub-circuit never matters and only the final head remains."""
    prog = load_program("reverse")
    model = prog.model()
    clean, corrupted, answers = _inputs(prog, prog.config)
    s_nodes, s_edges = structural_circuit(model)
    nodes, edges, _ = ablation_circuit(model, clean, corrupted, "zero", answers)
    assert nodes == s_nodes == {"a0.h0", "m0", "m1", "m2", "a3.h0"}
    assert len(s_edges) == 13 and len(edges) == 10 and edges <= s_edges
    assert s_edges - edges == {("embed", "a0.h0.q"), ("embed", "a0.h0.k"), ("embed", "a3.h0.q")}
    r_nodes, r_edges, _ = ablation_circuit(model, clean, corrupted, "resample", answers)
    assert r_nodes == {"a3.h0"} and r_edges == {("a3.h0", "logits"), ("embed", "a3.h0.v")}


@pytest.mark.parametrize("program", ["reverse", "detect_pattern"])
def test_realistic_variant_computes_the_same_function(program):
    prog = load_program(program)
    clean, corrupted, answers = _inputs(prog, prog.config)
    weights, cfg = add_distractors(prog.weights, prog.config, seed=3)
    rotated = rotate(weights, cfg, seed=4)
    model = HookedTransformer(cfg)
    model.load_state_dict(rotated)
    base = prog.model()
    with torch.no_grad():
        a, b = base(clean), model(clean)
    assert (a - b).abs().max() < 1e-4
    assert torch.equal(a.argmax(-1)[answers], b.argmax(-1)[answers])
    # every head and MLP slot carries weights, and the one-hot basis is gone (dense embeddings)
    assert all(t[h].any() for k, t in rotated.items() if k.endswith("W_O") for h in range(cfg.n_heads))
    assert all(t.any() for k, t in rotated.items() if k.endswith("W_in"))
    assert (rotated["embed.W_E"] != 0).all() and (prog.weights["embed.W_E"] == 0).float().mean() > 0.5
    # the distractors are inert: the truth (by ablation) is the compiled model's
    n0, e0, _ = ablation_circuit(base, clean, corrupted, "zero", answers)
    n1, e1, _ = ablation_circuit(model, clean, corrupted, "zero", answers)
    assert (n0, e0) == (n1, e1) and len(Graph.of(model).components) > len(Graph.of(base).components)


def test_circuit_cases_build_load_and_keep_the_truth_sealed(tmp_path, monkeypatch):
    monkeypatch.setenv("EIS_HOME", str(tmp_path))
    spec = CircuitSpec("h", "hist", "resample", rotate=True, distractors=True, n_inputs=16)
    case, built = eis.zoo.build_case(spec)
    assert built and eis.zoo.build_case(spec) == (case, False) or not eis.zoo.build_case(spec)[1]
    assert eis.zoo.load(case.id).model().cfg == case.model().cfg
    tokens, labels = case.inputs()
    assert tokens.shape == (16, 6) and torch.equal(case.corrupted() != 1, tokens != 1)  # same lengths
    assert set(labels[tokens == 1].tolist()) == {-1}  # no answer at padding
    visible = json.dumps(case.meta)
    assert "a0.h0" not in visible and "nodes" not in visible
    assert case.truth().nodes == {"a0.h0", "m0"} and case.truth().kind == "circuit"
    assert [c.name for c in eis.zoo.list_built()] == ["h"]
    from typer.testing import CliRunner

    from eis.cli import app

    shown = CliRunner().invoke(app, ["zoo", "show", case.id])
    assert shown.exit_code == 0 and "2 components, 4 edges" in shown.output, shown.output


def test_suite_circuit_entries_are_validated(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[circuit]]\nname = "r"\nprogram = "reverse"\nablation = "mean"\n')
    (spec,) = eis.zoo.suite_cases(str(path))
    assert isinstance(spec, CircuitSpec) and spec.ablation == "mean"
    for bad, msg in (
        ('program = "nope"', "unknown program 'nope'"),
        ('program = "reverse"\nablation = "half"', "unknown ablation 'half'; valid: zero, mean, resample"),
        ('program = "reverse"\ncolour = 1', "unknown field 'colour'"),
    ):
        path.write_text(f'[[circuit]]\nname = "r"\n{bad}\n')
        with pytest.raises(EisError, match=msg):
            eis.zoo.suite_cases(str(path))
    assert len([s for s in eis.zoo.suite_cases("circuits") if isinstance(s, CircuitSpec)]) >= 16


@pytest.mark.skipif(
    importlib.util.find_spec("tracr") is None, reason="needs the optional 'tracr' extra (jax)"
)
def test_recompiling_a_program_gives_the_shipped_weights_bit_for_bit():
    spec = importlib.util.spec_from_file_location("compile_tracr", ROOT / "scripts" / "compile_tracr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tensors, meta = module.compile_program("hist")
    shipped = load_program("hist")
    assert tensors.keys() == shipped.weights.keys()
    assert all(torch.equal(tensors[k], shipped.weights[k]) for k in tensors)
    assert meta == shipped.meta
