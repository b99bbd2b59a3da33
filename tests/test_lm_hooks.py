"""The LM hook layer (eis.tools.lm_hooks) on tiny random GPT-2s: activations agree with what transformers
computes, replacements patch exactly, hooks never outlive a call, and a trigger tool written on the layer
passes the family's contract."""

from __future__ import annotations

import copy
from typing import ClassVar

import pytest
import torch

from eis.errors import EisError
from eis.tools.lm_hooks import BLOCK_HOOKS, hook_names, hooks, run_with_cache, run_with_hooks
from eis.tools.lm_trigger.base import TriggerAnswer, TriggerTask, TriggerTool, ranked

ATOL = 1e-5


def tiny_gpt2(seed: int = 0, layers: int = 2, d_model: int = 32, vocab: int = 40) -> torch.nn.Module:
    from transformers import GPT2LMHeadModel

    from eis.zoo.language.lm import gpt2_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(gpt2_config(vocab, d_model, layers)).eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_gpt2()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(40, (3, 9), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def cached(model, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.no_grad():
        return run_with_cache(model, ids)


def n_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_names_follow_transformer_lens(model, cached) -> None:
    _, cache = cached
    names = hook_names(model)
    assert list(cache) == names
    assert names[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    assert names[-2:] == ["blocks.1.hook_resid_post", "ln_final.hook_normalized"]
    assert len(names) == 3 + 2 * len(BLOCK_HOOKS)
    assert cache["blocks.0.attn.hook_z"].shape == (3, 9, 2, 16)  # (batch, pos, n_heads, d_head)
    assert cache["blocks.1.mlp.hook_post"].shape == (3, 9, 128)
    assert not any(t.requires_grad for t in cache.values())


def test_logits_and_hidden_states_match_transformers(model, ids, cached) -> None:
    logits, cache = cached
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    hs = out.hidden_states
    assert torch.equal(logits, out.logits)
    assert torch.allclose(cache["blocks.0.hook_resid_pre"], hs[0], atol=ATOL)
    assert torch.allclose(cache["blocks.0.hook_resid_post"], hs[1], atol=ATOL)
    with torch.no_grad():
        final = model.transformer.ln_f(cache["blocks.1.hook_resid_post"])
    assert torch.allclose(final, hs[-1], atol=ATOL)
    assert torch.allclose(cache["ln_final.hook_normalized"], hs[-1], atol=ATOL)


def test_the_residual_stream_adds_up(model, cached) -> None:
    _, c = cached
    assert torch.allclose(c["hook_embed"] + c["hook_pos_embed"], c["blocks.0.hook_resid_pre"], atol=ATOL)
    for i in range(2):
        b = f"blocks.{i}."
        if i:
            assert torch.equal(c[b + "hook_resid_pre"], c[f"blocks.{i - 1}.hook_resid_post"])
        mid = c[b + "hook_resid_pre"] + c[b + "hook_attn_out"]
        assert torch.allclose(c[b + "hook_resid_mid"], mid, atol=ATOL)
        post = c[b + "hook_resid_mid"] + c[b + "hook_mlp_out"]
        assert torch.allclose(c[b + "hook_resid_post"], post, atol=ATOL)
        assert not torch.allclose(c[b + "hook_attn_out"], torch.zeros(()), atol=1e-3)


def test_inner_points_recompute_each_other(model, ids, cached) -> None:
    """Each point checked against the model's own modules applied to the previous one, and resid_mid
    against what ln_2 actually receives (a raw hook of the test's own)."""
    _, c = cached
    block = model.transformer.h[0]
    seen = []
    handle = block.ln_2.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    assert torch.equal(c["blocks.0.hook_resid_mid"], seen[0])
    with torch.no_grad():
        assert torch.allclose(c["blocks.0.ln1.hook_normalized"], block.ln_1(c["blocks.0.hook_resid_pre"]))
        assert torch.allclose(c["blocks.0.ln2.hook_normalized"], block.ln_2(c["blocks.0.hook_resid_mid"]))
        q, k, v = (c[f"blocks.0.attn.hook_{x}"].transpose(1, 2) for x in "qkv")  # (batch, head, pos, d_head)
        causal = torch.ones(9, 9, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~causal, float("-inf"))
        z = (scores.softmax(-1) @ v).transpose(1, 2)
        assert torch.allclose(c["blocks.0.attn.hook_z"], z, atol=ATOL)
        assert torch.allclose(c["blocks.0.hook_attn_out"], block.attn.c_proj(z.flatten(-2)), atol=ATOL)
        assert torch.allclose(c["blocks.0.mlp.hook_post"], block.mlp.act(c["blocks.0.mlp.hook_pre"]))
        mlp_out = block.mlp(c["blocks.0.ln2.hook_normalized"])
        assert torch.allclose(c["blocks.0.hook_mlp_out"], mlp_out, atol=ATOL)


def test_zeroing_mlp_out_is_zeroing_the_mlp(model, ids) -> None:
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        ablated.transformer.h[0].mlp.c_proj.weight.zero_()
        ablated.transformer.h[0].mlp.c_proj.bias.zero_()
        expected = ablated(input_ids=ids).logits
        clean = model(input_ids=ids).logits
        got = run_with_hooks(model, ids, [("blocks.0.hook_mlp_out", lambda t, _h: torch.zeros_like(t))])
    assert torch.equal(got, expected)
    assert not torch.allclose(got, clean, atol=1e-3)


@pytest.mark.parametrize(
    ("patched", "check"),
    [
        ("blocks.1.hook_resid_pre", "logits"),
        ("blocks.1.hook_resid_mid", "logits"),
        ("blocks.1.hook_resid_post", "logits"),
        ("blocks.0.attn.hook_z", "blocks.0.hook_attn_out"),
        ("blocks.0.mlp.hook_pre", "blocks.0.hook_mlp_out"),
        ("blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"),
        ("blocks.0.ln1.hook_normalized", "blocks.0.hook_attn_out"),
        ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"),
    ],
)
def test_patching_a_whole_point_copies_what_it_feeds(model, ids, patched, check) -> None:
    """Activation patching: a point's activation from another input, at every position, makes what it
    feeds equal that input's."""
    other = torch.randint(40, ids.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        src_logits, src = run_with_cache(model, other)
        logits, cache = run_with_cache(model, ids, fwd_hooks=[(patched, lambda _t, h: src[h.name])])
    assert torch.allclose(cache[patched], src[patched])
    got, want = (logits, src_logits) if check == "logits" else (cache[check], src[check])
    assert torch.allclose(got, want, atol=ATOL)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, src_logits, atol=1e-3)


def test_patching_queries_keys_and_values_together(model, ids) -> None:
    other = torch.randint(40, ids.shape, generator=torch.Generator().manual_seed(3))
    names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v"]
    with torch.no_grad():
        _, src = run_with_cache(model, other)
        _, cache = run_with_cache(model, ids, fwd_hooks=[(names, lambda _t, h: src[h])])
    assert torch.allclose(cache["blocks.0.attn.hook_z"], src["blocks.0.attn.hook_z"], atol=ATOL)


def test_steering_adds_to_the_stream_and_gradients_flow(model, ids) -> None:
    vec = torch.zeros(32, requires_grad=True)
    logits = run_with_hooks(model, ids, [("blocks.1.hook_resid_pre", lambda t, _h: t + vec)])
    (grad,) = torch.autograd.grad(logits[:, -1, 0].sum(), vec)
    assert grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_filters_and_hook_names(model, ids) -> None:
    seen = []
    with torch.no_grad():
        _, cache = run_with_cache(model, ids, names=lambda n: n.endswith("resid_post"))
        run_with_hooks(model, ids, [("blocks.0.hook_mlp_out", lambda _t, h: seen.append((h, h.name)))])
    assert list(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert seen == [("blocks.0.hook_mlp_out", "blocks.0.hook_mlp_out")]


def test_hooks_are_removed_after_an_exception(model, ids) -> None:
    before = n_hooks(model)
    with torch.no_grad():
        clean = model(input_ids=ids).logits

    def boom(_t: torch.Tensor, _h: str) -> None:
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError, match="inside a hook"), torch.no_grad():
        run_with_cache(model, ids, fwd_hooks=[("blocks.1.hook_mlp_out", boom)])
    assert n_hooks(model) == before
    with pytest.raises(RuntimeError), hooks(model, [("blocks.0.hook_resid_mid", lambda t, _h: t * 0)]):
        assert n_hooks(model) > before
        raise RuntimeError("in the block")
    assert n_hooks(model) == before
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, clean)


def test_errors_are_one_line_and_attach_nothing(model, ids) -> None:
    before = n_hooks(model)
    with pytest.raises(EisError, match=r"no hook point 'blocks.2.hook_resid_post'.*for i in 0\.\.1") as e:
        run_with_cache(model, ids, names=["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"])
    assert "\n" not in str(e.value) and "ln_final.hook_normalized" in str(e.value)
    with pytest.raises(EisError, match="matches no hook point"):
        run_with_cache(model, ids, names=lambda n: n.startswith("unembed"))
    with pytest.raises(EisError, match=r"returned \(9,\); a replacement must have shape \(3, 9, 32\)"):
        run_with_hooks(model, ids, [("blocks.0.hook_mlp_out", lambda _t, _h: torch.zeros(9))])
    assert n_hooks(model) == before


def test_another_layout_exposes_the_input_embedding_only() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        llama = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(40, (2, 5), generator=torch.Generator().manual_seed(0))
    assert hook_names(llama) == ["hook_embed"]
    with torch.no_grad():
        _, cache = run_with_cache(llama, ids)
        assert torch.equal(cache["hook_embed"], llama.get_input_embeddings()(ids))
    with pytest.raises(EisError, match="hook_embed only .*not in the GPT-2 layout"):
        run_with_cache(llama, ids, names="blocks.0.hook_resid_post")


class MLPNormSearch(TriggerTool):
    """The guide's example (docs/guide/language.md), without the registration."""

    name: ClassVar[str] = "mlp_norm_search"
    summary: ClassVar[str] = "one-token triggers ranked by the norm of the last MLP's output"

    def solve(self, task: TriggerTask) -> TriggerAnswer:
        allowed = task.allowed()
        ids = torch.tensor([[*task.prefix, t] for t in allowed.tolist()])
        point = f"blocks.{task.model.config.n_layer - 1}.hook_mlp_out"
        with torch.no_grad():
            _, cache = run_with_cache(task.model, ids, names=point)
        task.spend(len(ids))
        top = cache[point][:, -1].norm(dim=-1).topk(min(task.n_candidates, len(ids))).indices
        triggers = [[int(allowed[i])] for i in top]
        logps, hits = task.score(triggers)
        found = {tuple(t): (bool(h), float(lp)) for t, lp, h in zip(triggers, logps, hits, strict=True)}
        return ranked(task, found)


def test_a_tool_written_on_the_hook_layer_passes_the_contract() -> None:
    from eis.testing import check_tool

    report = check_tool(MLPNormSearch())
    assert not report.refusals and len(report.passed) == 2, str(report)
