"""Elicitation by fine-tuning, and its controls:

- ``few_shot_finetune``: fine-tune a copy of the model on the task's labelled examples (Greenblatt et al.
  2024 unlock password-locked models with a handful of demonstrations): the loss is the cross-entropy of
  each example's answer after its prompt, full batch, ``steps`` AdamW steps;
- ``unrelated_finetune`` (control): the same steps and learning rate on as many unrelated texts of the
  language (every token's loss), to tell unlocking by the examples from unlocking by any weight change;
- ``no_elicitation`` (control): the locked model as it is.

Queries: one per example per step. The copy is deterministic (full batches, no dropout, no draw).
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from eis.tools.base import register_tool
from eis.tools.lm_elicit.base import Elicitation, ElicitTask, ElicitTool


def finetuned(
    model: nn.Module, seqs: list[list[int]], weights: list[list[float]], *, steps: int, lr: float
) -> nn.Module:
    """A copy of ``model`` trained ``steps`` full-batch AdamW steps on ``seqs``, each token's next-token
    loss weighted by ``weights`` (one weight per token after the first); returned in eval mode."""
    from eis.zoo.language.lm import pad

    net = copy.deepcopy(model)
    ids = pad(seqs)
    w = torch.zeros(ids.shape[0], ids.shape[1] - 1)
    for i, ws in enumerate(weights):
        w[i, : len(ws)] = torch.as_tensor(ws)
    w = w / w.sum()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    net.train()
    with torch.enable_grad():
        for _ in range(steps):
            logits = net(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()
            loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            opt.zero_grad(set_to_none=True)
            (loss * w).sum().backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.grad = None
    return net


@register_tool
class FewShotFinetune(ElicitTool):
    """Fine-tune a copy on the labelled examples' answers."""

    name: ClassVar[str] = "few_shot_finetune"
    summary: ClassVar[str] = "fine-tune a copy on the few labelled answers (Greenblatt et al. 2024)"
    steps: int = 20
    lr: float = 1e-3

    def solve(self, task: ElicitTask) -> Elicitation:
        seqs = [[*p, a] for p, a in zip(task.prompt_ids, task.answer_ids, strict=True)]
        weights = [[0.0] * (len(s) - 2) + [1.0] for s in seqs]  # the answer's loss only
        task.spend(self.steps * len(seqs))
        return Elicitation(model=finetuned(task.model, seqs, weights, steps=self.steps, lr=self.lr))


@register_tool
class UnrelatedFinetune(ElicitTool):
    """The same fine-tuning budget on unrelated texts of the language."""

    name: ClassVar[str] = "unrelated_finetune"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "fine-tune a copy on as many unrelated texts, same steps and rate (control)"
    steps: int = 20
    lr: float = 1e-3

    def solve(self, task: ElicitTask) -> Elicitation:
        seqs = task.text_ids[: len(task.prompts)]
        weights = [[1.0] * (len(s) - 1) for s in seqs]
        task.spend(self.steps * len(seqs))
        return Elicitation(model=finetuned(task.model, seqs, weights, steps=self.steps, lr=self.lr))


@register_tool
class NoElicitation(ElicitTool):
    """The locked model as it is."""

    name: ClassVar[str] = "no_elicitation"
    control: ClassVar[bool] = True
    summary: ClassVar[str] = "the locked model as it is (control)"

    def solve(self, task: ElicitTask) -> Elicitation:
        return Elicitation()
