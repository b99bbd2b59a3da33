"""Units a repair method can prune: the channels of the feature map the classifier head reads.

Fine-pruning (Liu et al. 2018) prunes "the last convolutional layer": the channels of the last 4-D
activation before the first fully connected layer. That activation is found by running the model once with
hooks on its leaf modules (so it works for any conv net that ends in a linear head: the zoo's cnn, whose
head flattens a C x H x W map, and its resnet, whose head reads a globally pooled C x 1 x 1 map). Pruning
channel c is baked into the weights by zeroing the head's input columns that read it: the architecture
and the state-dict keys stay the same, so the repaired weights load into the user's own factory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from eis.errors import ToolRefusal


@dataclasses.dataclass
class FeatureMap:
    """The last 4-D activation before the head: the module producing it, the head and the layout."""

    module: nn.Module  # leaf module whose output is the feature map
    head: nn.Linear  # the first linear layer reading it (flattened, channel-major)
    channels: int
    positions: int  # spatial positions per channel: head.in_features == channels * positions

    def keep_mask(self, pruned: Sequence[int]) -> torch.Tensor:
        """A 0/1 mask shaped like ``head.weight`` that zeroes the columns of the pruned channels."""
        mask = torch.ones(self.channels, self.positions, device=self.head.weight.device)
        if len(pruned):
            mask[torch.as_tensor(list(pruned), dtype=torch.long)] = 0
        return mask.reshape(1, -1).expand_as(self.head.weight).to(self.head.weight.dtype)

    def prune(self, pruned: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zero the head's columns of ``pruned`` channels; return the (parameter, mask) to keep them zero."""
        mask = self.keep_mask(pruned)
        with torch.no_grad():
            self.head.weight.mul_(mask)
        return [(self.head.weight, mask)]


def feature_map(model: nn.Module, x: torch.Tensor) -> FeatureMap:
    """The feature map of ``model`` (probed on ``x``); refuses models without a conv-to-linear head."""
    order: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def hook(mod: nn.Module, inp: tuple, out: object) -> None:
        if isinstance(out, torch.Tensor) and inp and isinstance(inp[0], torch.Tensor):
            order.append((mod, tuple(inp[0].shape), tuple(out.shape)))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x[:2])
    finally:
        for h in handles:
            h.remove()
    last4d: tuple[nn.Module, tuple[int, ...]] | None = None
    for mod, _, out_shape in order:
        if isinstance(mod, nn.Linear):
            if last4d is None:
                break
            c, h, w = last4d[1][1:]
            if mod.in_features == c * h * w:
                return FeatureMap(last4d[0], mod, c, h * w)
            break
        if len(out_shape) == 4:
            last4d = (mod, out_shape)
    raise ToolRefusal(
        "repair: the model has no conv feature map read by a linear head (needed to prune channels)"
    )


def channel_activations(model: nn.Module, fmap: FeatureMap, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, C) mean activation of each feature-map channel on each input, batched, without gradients."""
    got: list[torch.Tensor] = []
    handle = fmap.module.register_forward_hook(lambda m, i, o: got.append(o.detach().flatten(2).mean(2)))
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                model(x[i : i + batch_size])
    finally:
        handle.remove()
    return torch.cat(got)
