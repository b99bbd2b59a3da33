"""Architecture registry: factories ``(in_channels, num_classes, image_size) -> nn.Module``.

The built-ins are small so that everything runs offline on 2 CPU cores; any ``nn.Module`` factory with
the same signature can be registered and used by every suite, tool and track::

    import torch.nn as nn
    from eis.zoo.archs import ARCHS

    @ARCHS.register("mlp")
    def mlp(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 64), nn.ReLU(),
                             nn.Linear(64, num_classes))
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from eis.registry import Registry

ArchFactory = Callable[[int, int, int], nn.Module]
ARCHS: Registry[ArchFactory] = Registry("arch")


class SmallCNN(nn.Module):
    """Plain conv net: three conv/ReLU stages (widths w, 2w, 4w) with max-pooling, then an MLP head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(),
        )
        side = image_size // 4
        pool = side >= 8
        self.classifier = nn.Sequential(
            nn.MaxPool2d(2) if pool else nn.Identity(),
            nn.Flatten(),
            nn.Linear(4 * w * (side // 2 if pool else side) ** 2, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Residual block with BatchNorm and one in-place ReLU module used twice (stresses hook-based tools)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out)


class SmallResNet(nn.Module):
    """A small ResNet: stem, three residual stages, global average pooling, linear head."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 16) -> None:
        super().__init__()
        w = width
        stride = 2 if image_size >= 32 else 1  # keeps 32x32 inputs affordable on 2 CPU cores
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        self.layer1 = BasicBlock(w, w, 1)
        self.layer2 = BasicBlock(w, 2 * w, 2)
        self.layer3 = BasicBlock(2 * w, 4 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class MixerBlock(nn.Module):
    """One MLP-Mixer block: a token-mixing MLP across patches, then a channel-mixing MLP, each residual."""

    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.tokens = nn.Sequential(
            nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.channels = nn.Sequential(
            nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, tokens, dim)
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class SmallMixer(nn.Module):
    """A small MLP-Mixer (Tolstikhin et al. 2021): 4x4 patches embedded linearly, two mixer blocks, mean
    over patches, linear head; a third architecture family with no convolution after the patch embedding."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dim: int = 64,
        depth: int = 2,
        patch: int = 4,
    ) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)  # a linear map of each patch
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, dim // 2, 2 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


ARCHS.register("cnn", SmallCNN)
ARCHS.register("cnn-wide", functools.partial(SmallCNN, width=24))
ARCHS.register("resnet", SmallResNet)
ARCHS.register("mixer", SmallMixer)


def build_arch(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Instantiate a registered architecture."""
    return ARCHS.get(name)(in_channels, num_classes, image_size)
