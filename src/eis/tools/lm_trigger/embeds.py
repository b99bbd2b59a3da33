"""The target's loss for triggers given as input embeddings: what the continuous relaxations (PEZ, GBDA)
differentiate. The trigger's rows of ``hook_embed`` are replaced (through :mod:`eis.tools.lm_hooks`), so
position embeddings and everything after act as on a token prompt."""

from __future__ import annotations

import torch

from eis.tools.lm_hooks import run_with_hooks
from eis.tools.lm_trigger.base import TriggerTask


def embedded_target_nll(task: TriggerTask, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) negative log-probability of the target after ``[BOS] + trigger`` for triggers given as input
    embeddings (B, n, d) (teacher forcing; differentiable in ``embeds``), and (B,) bool: whether greedy
    decoding emits the target. Counts one query per trigger (a gradient pass over one prompt)."""
    batch, n, _ = embeds.shape
    target = torch.as_tensor(task.target_ids)
    start, end = len(task.prefix), len(task.prefix) + n
    filler = [int(target[0])] * n  # replaced at hook_embed
    ids = torch.tensor([*task.prefix, *filler, *task.target_ids], device=embeds.device).repeat(batch, 1)

    def trigger_rows(act: torch.Tensor, _hook: str) -> torch.Tensor:
        return torch.cat([act[:, :start], embeds.to(act.dtype), act[:, end:]], 1)

    logits = run_with_hooks(
        task.model, ids, [("hook_embed", trigger_rows)], attention_mask=torch.ones_like(ids)
    )
    picked = logits[:, end - 1 : end - 1 + len(target)].float()  # (B, T, V)
    tgt = target.to(picked.device)[None].expand(batch, -1)
    nll = -picked.log_softmax(-1).gather(-1, tgt[..., None]).squeeze(-1).sum(-1)
    task.spend(batch)
    return nll, (picked.argmax(-1) == tgt).all(-1)
