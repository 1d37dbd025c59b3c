"""The ImageNet-scale network beside the reference: SqueezeNet 1.0 with simple bypass.

    python -m models squeezenet1_0 squeezenet1_0_bypass resnet50 --size 224 --classes 1000

`SqueezeNet10Bypass` is the paper's best SqueezeNet 1.0 (Iandola et al. 2016, "SqueezeNet:
AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size", table 3): identity
("simple") bypasses around Fire 3, 5, 7 and 9, the Fire modules whose input and output have the
same number of channels (128, 256, 384, 512). The bypass adds no parameters: 1,248,424 for 1000
classes, as squeezenet1_0. Reported ImageNet accuracy: 60.4% top-1 / 82.5% top-5, against
57.5% / 80.3% without the bypass. It is torchvision's SqueezeNet 1.0 (ReLU after each convolution,
ceil-mode pools, dropout 0.5, a 1x1 conv head with ReLU, global average pooling, torchvision's
initialization) with the four bypasses added; parameter names are torchvision's, so its
squeezenet1_0 weights load into it.

ResNet-50 (`resnet50` in the registry, models/__init__.py) is torchvision's, registered so that
`bench model` and `bench train` figures can be set beside NVIDIA's published ResNet-50 AMP
throughput (DeepLearningExamples: 2,470 img/s on one A100).
"""

from __future__ import annotations

import torch
from torchvision.models.squeezenet import Fire, SqueezeNet

BYPASS_FIRES = (4, 7, 9, 12)  # positions of Fire 3, 5, 7, 9 in SqueezeNet 1.0's `features`


class BypassFire(Fire):
    """A Fire module plus its input: out = fire(x) + x (in and out channels are equal)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x  # fire's convolutions only read x; its in-place ReLUs act on new tensors


class SqueezeNet10Bypass(SqueezeNet):
    """SqueezeNet 1.0 with simple bypass around Fire 3, 5, 7, 9 (input N x 3 x H x W, e.g. 224 or 227)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__("1_0", num_classes=num_classes, dropout=dropout)
        for position in BYPASS_FIRES:
            fire = self.features[position]
            bypass = BypassFire(fire.inplanes, fire.squeeze.out_channels, fire.expand1x1.out_channels,
                                fire.expand3x3.out_channels)
            bypass.load_state_dict(fire.state_dict())  # keep torchvision's initialization
            self.features[position] = bypass
