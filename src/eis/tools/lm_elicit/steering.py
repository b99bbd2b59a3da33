"""Elicitation by activation steering: a difference-of-means vector added to the residual stream
(contrastive activation addition, Rimsky et al. 2024, with the labelled examples as the contrast pairs).

For each labelled example the residual stream at ``blocks.{layer}.hook_resid_post`` is read at the answer's
position twice: after the prompt followed by the true answer, and followed by the model's own answer (the
locked model's argmax). The steering vector is the mean of the first minus the mean of the second; it is
added at every position, scaled by each of ``scales`` in turn, and the scale with the most labelled
answers right (ties: the higher mean log-probability) is submitted. ``layer`` None: the middle block
(``(n_layer - 1) // 2``). Queries: two per example for the contrast, one per example per scale.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from eis.errors import ToolRefusal
from eis.tools.base import register_tool
from eis.tools.lm_elicit.base import Elicitation, ElicitTask, ElicitTool
from eis.tools.lm_hooks import hook_names, run_with_cache


@register_tool
class MeanDiffSteering(ElicitTool):
    """Difference of means of the residual stream (true vs own answers), added at every position."""

    name: ClassVar[str] = "mean_diff_steering"
    summary: ClassVar[str] = "difference-of-means residual steering from the labelled answers (CAA)"
    layer: int | None = None
    scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)

    def solve(self, task: ElicitTask) -> Elicitation:
        from eis.zoo.language.lm import pad

        n_layer = int(getattr(task.model.config, "n_layer", 0))
        layer = (n_layer - 1) // 2 if self.layer is None else self.layer
        point = f"blocks.{layer}.hook_resid_post"
        if point not in hook_names(task.model):
            raise ToolRefusal(f"the model has no hook point {point!r} (GPT-2 layout, layer < {n_layer})")
        prompts, n = task.prompt_ids, len(task.prompts)
        if task.left() < 2 * n:  # the contrast alone does not fit the budget
            return Elicitation(details={"hook": point, "scale": 0.0})
        means, answers = [], task.answer_ids
        for _ in range(2):  # the true answers, then the model's own (read off the first pass's logits)
            seqs = [[*p, a] for p, a in zip(prompts, answers, strict=True)]
            ids = pad(seqs)
            with torch.no_grad():
                logits, cache = run_with_cache(task.model, ids, point, attention_mask=torch.ones_like(ids))
            task.spend(n)
            at = torch.tensor([len(s) - 1 for s in seqs])
            means.append(cache[point][torch.arange(n), at].mean(0))
            answers = logits[torch.arange(n), at - 1].argmax(-1).tolist()
        vector = means[0] - means[1]
        best: tuple[tuple[float, float], float] | None = None
        for scale in self.scales:
            if task.left() < n:
                break
            logp, hits = task.score(Elicitation(steering={point: scale * vector}))
            value = (float(hits.double().mean()), float(logp.mean()))
            if best is None or value > best[0]:
                best = (value, scale)
        if best is None:
            return Elicitation(details={"hook": point, "scale": 0.0})
        steer = {point: best[1] * vector}
        return Elicitation(steering=steer, details={"hook": point, "scale": best[1], "accuracy": best[0][0]})
