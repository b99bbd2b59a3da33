"""White-box rule recovery: read the rule's feature from the network, fit only its thresholds by queries.

- ``gradient_feature`` (image families): the top right-singular vector of the input gradients of the
  logit difference over the training inputs is the direction the network reads; the family's candidate
  feature (training image, rectangle indicator, row or column ramp) with the largest absolute cosine to it
  is taken, and its threshold(s) fitted to the network's answers. A band rule's gradients point along the
  template on one side of the band and against it on the other; the singular vector ignores the sign.
- ``fourier_embedding`` (``linear_mod`` only): a network computing a function of s = (a x + b y) mod p
  puts a Fourier frequency k*a in the embeddings of x and k*b in those of y (as in the modular-addition
  work of Nanda et al. 2023). The dominant frequencies f_x, f_y fix (a, b) up to a common multiplier and
  the sign of b; the 2(p - 1) multiples and the threshold c are fitted to the network's answers, instead
  of the p^2 pairs (a, b) a black-box search needs. Other token families are refused.
"""

from __future__ import annotations

import torch

from eis.errors import ToolRefusal
from eis.tools.base import register_tool
from eis.tools.rule_recovery.base import RuleAnswer, RuleTask, RuleTool
from eis.tools.rule_recovery.search import AXES, linear_mod_rule, regions, search_image
from eis.zoo.rules.grammar import templates
from eis.zoo.rules.models import logits


def candidate_directions(family: str, shape: tuple[int, ...], dataset: str) -> torch.Tensor:
    """(K, C*H*W) unit vectors: the family's candidate features in :func:`image_candidates` order."""
    c, h, w = shape
    if family == "template_band":
        vecs = templates(dataset).flatten(1).double()
    elif family == "region_mass":
        vecs = torch.zeros(len(regions(w)), c, h, w, dtype=torch.float64)
        for k, ((r0, r1), (c0, c1)) in enumerate(regions(w)):
            vecs[k, :, r0:r1, c0:c1] = 1
        vecs = vecs.flatten(1)
    else:  # centroid: a ramp along the axis, centred
        ramp = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
        vecs = torch.stack(
            [
                ramp[:, None].expand(h, w).expand(c, h, w).flatten(),
                ramp[None].expand(h, w).expand(c, h, w).flatten(),
            ]
        )
        assert len(vecs) == len(AXES)
    return vecs / vecs.norm(dim=1, keepdim=True).clamp(min=1e-12)


@register_tool
class GradientFeature(RuleTool):
    """The family's feature closest to the top singular direction of the input gradients."""

    name = "gradient_feature"
    summary = "input-gradient direction -> the family's nearest feature; thresholds from queries"
    n_inputs: int = 2048
    batch_size: int = 256

    def solve(self, task: RuleTask) -> RuleAnswer:
        if task.kind != "image":
            raise ToolRefusal("gradient_feature reads image rules; token inputs have no gradient")
        x = task.inputs[: self.n_inputs]
        dev = next(task.model.parameters()).device
        grads = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i : i + self.batch_size].to(dev).requires_grad_(True)
            out = logits(task.model, xb)
            (g,) = torch.autograd.grad((out[:, 1] - out[:, 0]).sum(), xb)
            grads.append(g.flatten(1).double().cpu())
        direction = torch.linalg.svd(torch.cat(grads), full_matrices=False)[2][0]
        cands = candidate_directions(task.family, tuple(x.shape[1:]), task.meta.get("dataset", "digits"))
        k = int((cands @ direction).abs().argmax())
        q = task.queries()
        rule, _ = search_image(task.family, q, task.answers(q), task.meta["dataset"], only=[k])
        return RuleAnswer.of_rule(rule)


def dominant_frequency(w: torch.Tensor) -> int:
    """The frequency f in [1, p/2] with the most power in the rows of ``w`` (p, d), mean removed."""
    power = torch.fft.rfft(w.double() - w.double().mean(0), dim=0).abs().pow(2).sum(1)
    return int(power[1:].argmax()) + 1


@register_tool
class FourierEmbedding(RuleTool):
    """(a, b) of a linear_mod rule from the embeddings' dominant frequencies; multiplier and c by queries."""

    name = "fourier_embedding"
    summary = "dominant Fourier frequencies of the x and y embeddings -> (a, b) up to a multiplier"

    def solve(self, task: RuleTask) -> RuleAnswer:
        if task.family != "linear_mod":
            raise ToolRefusal(f"fourier_embedding reads linear_mod rules only, not {task.family!r}")
        p = int(task.meta["p"])
        w_e = task.model.embed.W_E.detach().cpu()  # type: ignore[union-attr]
        fx, fy = dominant_frequency(w_e[:p]), dominant_frequency(w_e[p : 2 * p])
        m = torch.arange(1, p)
        ab = torch.cat([torch.stack([m * fx % p, m * fy % p], 1), torch.stack([m * fx % p, -m * fy % p], 1)])
        q = task.queries()
        rule, _ = linear_mod_rule(q, task.answers(q), p, ab=ab)
        return RuleAnswer.of_rule(rule)
