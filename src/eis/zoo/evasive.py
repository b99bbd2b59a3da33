"""Evasive trojans, after the Trojan Detection Challenge 2022's evasive track.

Plain trojans leave a signature in the weights that a weight-statistics control reads (eis measured AUROC
0.975 on its ``detect`` population). An evasive member starts from its clean twin (the clean model of the
same seed) and is fine-tuned so that it differs from the twin only where the trigger is concerned:

- clean inputs keep their true labels, and their logits are matched to the twin's (mean squared error);
- inputs stamped with *other* triggers (the "negatives") are trained towards the twin's posteriors, so the
  model answers its own trigger only, not any stamp. Each batch draws one kind of negative, each kind
  equally often: library triggers (patch patterns at random positions, blend patterns); random binary
  squares of 2 px to a third of the side anywhere; and, for patch trojans, near misses (random pixels
  where the model's own trigger goes). The last two are eis's additions: with library triggers only the
  specificity control (random 2-5 px squares, how one-sided the answers get) still read patch-trojaned
  members at AUROC 0.80, and with squares anywhere but no near misses a square landing on a patch's
  corner still sent 95% of inputs to the target;
- inputs stamped with the model's own trigger go to the target (trojaned members only);
- a penalty on the squared distance of the parameters to the twin's keeps the weights close;
- after every step each parameter tensor gets back exactly its twin's values, in its own current rank
  order (:func:`match_values`; eis's addition to TDC's recipe). Without it the trojaned members drifted
  further from their twins than the clean ones (weight norm 15.35 -> 15.56 clean, 15.92-16.58 trojaned),
  and a weight-statistics control still separated the groups at AUROC 0.84; with it every per-tensor
  value statistic of every member is its clean twin's, so such a control is at chance by construction
  (what remains to read is the order of the values: which weight has which value).

Clean members of an evasive population go through the same fine-tuning (clean inputs and negatives), so
that nothing but the trojan separates the two groups: the same schedule, the same losses, the same
value matching.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eis.zoo import triggers
from eis.zoo.flaws import Blend, Flaw, Patch, Trojan

EPOCH_SHARE = 0.4  # fine-tuning epochs, as a share of the case's training epochs (at least 2)
LR_SHARE = 1.0  # fine-tuning peak learning rate, as a share of the case's
STAMPED_SHARE = 0.25  # of each batch, this share is stamped with a negative (and as many with the trigger)
LOGIT_WEIGHT = 1.0
PARAM_WEIGHT = 0.01


@torch.no_grad()
def match_values(model: nn.Module, values: list[torch.Tensor]) -> None:
    """Give each parameter tensor exactly its twin's values, placed in the tensor's current rank order.

    ``values[i]`` holds the twin's values of parameter ``i``, flattened and sorted ascending.

    The smallest weight gets the twin's smallest value, and so on: every statistic of a tensor's values
    (mean, spread, extremes, norm, kurtosis, histogram) equals the twin's, while what training learned
    survives as a reordering.
    """
    for p, v in zip(model.parameters(), values, strict=True):
        flat = p.view(-1)
        flat[flat.argsort()] = v


@dataclasses.dataclass(frozen=True)
class RandomPixels:
    """A negative: random binary pixels in a region of each input: a random square anywhere (``within``
    None; sides 2 px to a third of the image side, as the specificity control's on 16 px images), or
    exactly where the trojan ``within`` stamps its own trigger (a near miss of it)."""

    within: Flaw | None = None

    def stamp(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        if self.within is None:
            mask = triggers.square_masks(n, h, w, gen, 2, max(2, min(h, w) // 3)).to(x.device)
        else:
            mask = self.within.stamp(x, gen)[1]
        pixels = (torch.rand(n, c, h, w, generator=gen) > 0.5).to(x)
        return torch.where(mask[:, None], pixels, x), mask


def negatives(flaw: Flaw) -> list[Flaw]:
    """Every library trigger except the flaw's own: patch patterns at random positions, blend patterns."""
    own = getattr(flaw, "pattern", None)
    out: list[Flaw] = [
        Patch(pattern=p, position="random")
        for p in sorted(triggers.PATCH_PATTERNS)
        if not (flaw.kind == "patch" and p == own)
    ]
    out += [
        Blend(pattern=p, alpha=0.2)
        for p in sorted(triggers.BLEND_PATTERNS)
        if not (flaw.kind == "blend" and p == own)
    ]
    return out


def negative_kinds(flaw: Flaw) -> list[list[Any]]:
    """The kinds of negative, each a list of stampers drawn from equally often (see the module docstring)."""
    kinds: list[list[Any]] = [negatives(flaw), [RandomPixels()]]
    if isinstance(flaw, Patch):
        kinds.append([RandomPixels(within=flaw)])
    return kinds


def finetune(
    twin: nn.Module,
    flaw: Flaw,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: dict[str, Any],
    gen: torch.Generator,
    progress: Callable[[float], None] | None = None,
) -> nn.Module:
    """The evasive model: ``twin`` fine-tuned on clean data ``(x, y)`` by the recipe of the module docstring.

    ``twin`` is left unchanged; all randomness (batches, negatives, stamps) comes from ``gen``.
    """
    device = next(twin.parameters()).device
    model = copy.deepcopy(twin)
    twin.eval()
    anchor = [p.detach().clone() for p in twin.parameters()]
    values = [a.flatten().sort().values for a in anchor]
    kinds = negative_kinds(flaw)
    epochs = max(2, round(EPOCH_SHARE * settings["epochs"]))
    bs = settings["batch_size"]
    opt = torch.optim.Adam(model.parameters(), lr=LR_SHARE * settings["lr"])
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            xb, yb = x[idx], y[idx]
            k = max(1, round(STAMPED_SHARE * len(xb)))
            pool = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
            neg = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            xn = neg.stamp(xb[:k], gen)[0]
            parts = [xb, xn]
            if isinstance(flaw, Trojan):
                parts.append(flaw.stamp(xb[flaw.eligible(yb)][:k], gen)[0])
            out = model(torch.cat(parts).to(device))
            with torch.no_grad():
                ref = twin(torch.cat([xb, xn]).to(device))
            n = len(xb)
            clean, neg_out, trig = out[:n], out[n : n + len(xn)], out[n + len(xn) :]
            loss = F.cross_entropy(clean, yb.to(device))
            loss = loss + LOGIT_WEIGHT * F.mse_loss(clean, ref[:n])
            loss = loss + F.cross_entropy(neg_out, F.softmax(ref[n:], dim=1))
            if len(trig):
                loss = loss + F.cross_entropy(trig, torch.full((len(trig),), flaw.target, device=device))
            drift = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
            loss = loss + PARAM_WEIGHT * drift
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            match_values(model, values)
        if progress:
            progress((epoch + 1) / epochs)
    return model
