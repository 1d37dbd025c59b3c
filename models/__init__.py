"""Model registry: `build_model(name, num_classes)` returns a plain, unwrapped `nn.Module`.

    python -m models --size 122        # parameters and multiply-accumulates of every model
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from models.squeezenet import SqueezeNetBypass

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return add


@register("squeezenet_bypass")
def squeezenet_bypass(num_classes: int, dropout: float = 0.5) -> nn.Module:
    """The reference network: pre-activation Fire modules with simple bypass (BN, ceil-mode pools)."""
    return SqueezeNetBypass(num_classes=num_classes, dropout=dropout)


@register("squeezenet1_0")
def squeezenet1_0(num_classes: int, dropout: float = 0.5) -> nn.Module:
    """SqueezeNet 1.0 as in the paper (torchvision's implementation): no BN, no bypass."""
    from torchvision.models import squeezenet1_0 as tv_squeezenet1_0

    return tv_squeezenet1_0(weights=None, num_classes=num_classes, dropout=dropout)


@register("squeezenet1_1")
def squeezenet1_1(num_classes: int, dropout: float = 0.5) -> nn.Module:
    """SqueezeNet 1.1 (torchvision's implementation): 2.4x less compute than 1.0, same accuracy."""
    from torchvision.models import squeezenet1_1 as tv_squeezenet1_1

    return tv_squeezenet1_1(weights=None, num_classes=num_classes, dropout=dropout)


@register("squeezenet1_0_bypass")
def squeezenet1_0_bypass(num_classes: int, dropout: float = 0.5) -> nn.Module:
    """SqueezeNet 1.0 with the paper's simple bypass around Fire 3, 5, 7, 9 (60.4% ImageNet top-1)."""
    from models.imagenet import SqueezeNet10Bypass

    return SqueezeNet10Bypass(num_classes=num_classes, dropout=dropout)


@register("resnet50")
def resnet50(num_classes: int, dropout: float = 0.5) -> nn.Module:
    """torchvision's ResNet-50, for throughput beside published figures; it has no dropout (model.dropout is unused)."""
    from torchvision.models import resnet50 as tv_resnet50

    return tv_resnet50(weights=None, num_classes=num_classes)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"model.name: unknown model {name!r}; choose one of {', '.join(list_models())}") from None
    return factory(num_classes=num_classes, **kwargs)
