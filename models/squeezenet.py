"""SqueezeNet family: the pre-activation bypass network of the reference recipe and the classics.

Pure `nn.Module`s: no DDP, AMP, device or data logic here (wrapping happens in pipeline.training.trainer).

`SqueezeNetBypass` follows the public Chainer SqueezeNet-on-CIFAR-10 result (92.63%): Fire modules
built from BatchNorm -> ReLU -> Conv units, identity bypasses around fire3/5/7/9, ceil-mode pools,
a BN-ReLU-Conv 1x1 head and global average pooling. For 10 classes it has 747,146 parameters and
~249.4 M conv multiply-accumulates per 122x122 image; feature maps go 122 -> 60 -> 31 -> 16 -> 9.
"""

from __future__ import annotations

import torch
from torch import nn

# Chainer's BatchNormalization defaults, which the reference used.
BN_EPS = 2e-5
BN_MOMENTUM = 0.1


class BNReLUConv(nn.Sequential):
    """Pre-activation unit: BatchNorm -> ReLU -> Conv2d (with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),  # acts on BN's fresh output, never on a tensor the bypass keeps
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=True),
        )


class Fire(nn.Module):
    """squeeze 1x1 -> (expand 1x1 || expand 3x3), concatenated on channels; optional identity bypass."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: bool = False) -> None:
        super().__init__()
        if bypass and in_channels != expand1x1 + expand3x3:
            raise ValueError(f"a bypass needs in_channels == expand channels, got {in_channels} vs {expand1x1 + expand3x3}")
        self.squeeze = BNReLUConv(in_channels, squeeze, 1)
        self.expand1x1 = BNReLUConv(squeeze, expand1x1, 1)
        self.expand3x3 = BNReLUConv(squeeze, expand3x3, 3, padding=1)
        self.bypass = bypass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.squeeze(x)
        out = torch.cat([self.expand1x1(h), self.expand3x3(h)], dim=1)
        return out + x if self.bypass else out


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)


class SqueezeNetBypass(nn.Module):
    """SqueezeNet with simple bypass and pre-activation Fire modules (input N x 3 x H x W)."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=7, stride=2, padding=2, bias=True),  # no BN/ReLU of its own
            _pool(),
            Fire(96, 16, 64, 64),
            Fire(128, 16, 64, 64, bypass=True),
            Fire(128, 32, 128, 128),
            _pool(),
            Fire(256, 32, 128, 128, bypass=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192, bypass=True),
            Fire(384, 64, 256, 256),
            _pool(),
            Fire(512, 64, 256, 256, bypass=True),
        )
        self.dropout = nn.Dropout(dropout)  # on fire9's output + bypass sum
        self.head = BNReLUConv(512, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)  # global average pooling gives the logits
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan-in) conv weights, zero biases; BatchNorm at identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.features(x))
        return torch.flatten(self.pool(self.head(x)), 1)
