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
from typing import Any

import torch
from torch import nn

from eis.errors import EisError
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


class _ChannelsLast(torch.autograd.Function):
    """The input in channels-last layout, its gradient handed back in the ordinary (contiguous) layout, so
    that a caller's ``.view`` on an input gradient works as for any other model."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class ResNet18(nn.Module):
    """The standard ResNet-18 topology (He et al. 2016, as torchvision builds it): a 7x7 stride-2 stem and
    3x3 stride-2 max-pool, four stages of two basic blocks (widths w, 2w, 4w, 8w; stride 2 from the second
    on), global average pooling, a linear head. ``width`` 64 is the standard network (11.2M parameters);
    narrower ones keep the topology for CPU budgets.

    Weights and activations are held channels-last (NHWC), the layout the CPU's and cuDNN's convolution
    kernels run fastest in: 1.31x the speed of the default layout for a training step and 1.22x for an
    input-gradient pass of the width-16 network at 64 px on one CPU thread
    (``benchmarks/bench_realistic.py --layout``). Values agree with the default layout to float rounding; a
    layer's activations seen through hooks are channels-last tensors (use ``reshape``, not ``view``).
    ``channels_last=False`` keeps the default layout (the benchmark's reference)."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = 64, channels_last: bool = True
    ) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, cin = [], w
        for k, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if k == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _ChannelsLast.apply(x) if self.channels_last else x
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class Attention(nn.Module):
    """Multi-head self-attention written out (no fused kernel), so hooks and double backward see each step."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, dim)
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, t, d))


class ViTBlock(nn.Module):
    """A pre-norm transformer block: attention, then a 4x MLP with GELU, each residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A Vision Transformer (Dosovitskiy et al. 2021): non-overlapping ``patch`` x ``patch`` patches embedded
    linearly, a class token and learned position embeddings, ``depth`` pre-norm blocks, the class token's
    final norm into a linear head. The defaults are ViT-Tiny's width and heads (dim 192, 3 heads) at depth
    6 with 8 px patches."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        patch: int = 8,
    ) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.embed = self.make_embed(in_channels, dim, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @staticmethod
    def make_embed(in_channels: int, dim: int, patch: int) -> nn.Module:
        """The patch embedding: one ``patch`` x ``patch`` stride-``patch`` convolution (a linear map of each
        patch) to ``dim`` channels."""
        return nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class ConvStemViT(ViT):
    """A ViT with a convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers See Better"):
    the patchify convolution replaced by log2(``patch``) 3x3 stride-2 convolutions with BatchNorm and ReLU
    (channels doubling up to ``dim``: dim/4, dim/2, dim for 8 px patches) and a final 1x1 convolution to
    ``dim``; the class token, position embeddings, blocks and head are the ViT's. A plain ViT trained from
    scratch on a few thousand images stays at chance; the stem's locality prior is the field's fix. Per the
    paper the registered ones (``vit-tiny-c``, ``vit-tiny-c-d96``) have one block fewer (depth 5), which
    keeps the compute about that of the patchify ViT at depth 6."""

    @staticmethod
    def make_embed(in_channels: int, dim: int, patch: int) -> nn.Module:
        """The convolutional stem: 3x3 stride-2 conv/BatchNorm/ReLU stages, then a 1x1 conv to ``dim``."""
        stages = patch.bit_length() - 1
        if patch != 2**stages or stages < 1 or dim % 2 ** (stages - 1):
            raise EisError(
                f"a conv stem wants a patch of 2, 4, 8, ... and dim divisible by {patch // 2}; "
                f"got patch {patch}, dim {dim}"
            )
        layers: list[nn.Module] = []
        cin = in_channels
        for k in range(stages):
            cout = dim >> (stages - 1 - k)
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout)]
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        layers.append(nn.Conv2d(cin, dim, 1))
        return nn.Sequential(*layers)


ARCHS.register("cnn", SmallCNN)
ARCHS.register("cnn-wide", functools.partial(SmallCNN, width=24))
ARCHS.register("resnet", SmallResNet)
ARCHS.register("mixer", SmallMixer)
# the realistic tier: the field's topologies; the full widths want a GPU, the narrow ones run on 2 CPU cores
ARCHS.register("resnet18", ResNet18)
ARCHS.register("resnet18-w16", functools.partial(ResNet18, width=16))
ARCHS.register("vit-tiny", ViT)
ARCHS.register("vit-tiny-d96", functools.partial(ViT, dim=96, heads=3))
ARCHS.register("vit-tiny-c", functools.partial(ConvStemViT, depth=5))
ARCHS.register("vit-tiny-c-d96", functools.partial(ConvStemViT, dim=96, heads=3, depth=5))


def build_arch(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Instantiate a registered architecture."""
    return ARCHS.get(name)(in_channels, num_classes, image_size)
