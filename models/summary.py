"""Parameter counts, multiply-accumulates and feature-map sizes of the registered models.

    python -m models --size 122            # every model at 122x122
    python -m models squeezenet_bypass --size 128 --classes 100
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import build_model, list_models


@dataclass
class ModelSummary:
    name: str
    params: int  # trainable parameters
    macs: int  # multiply-accumulates of one forward pass, per image (conv and linear layers)
    output_shape: tuple[int, ...]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, size: int) -> int:
    """Per-image multiply-accumulates of one forward pass at size x size (torch's FLOP counter / 2)."""
    model = model.eval()
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def spatial_trace(model: nn.Module, size: int) -> list[int]:
    """Side of the feature map entering the network and leaving each down-sampling layer."""
    sides = [size]
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
        for m in model.modules()
        if isinstance(m, (nn.MaxPool2d,)) or (isinstance(m, nn.Conv2d) and m.stride[0] > 1)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return sides


def summarize(name: str, size: int, num_classes: int = 10) -> ModelSummary:
    model = build_model(name, num_classes=num_classes)
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, size, size))
    return ModelSummary(name, count_params(model), count_macs(model, size), tuple(out.shape))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models (default: all of {', '.join(list_models())})")
    parser.add_argument("--size", type=int, default=122, help="input side in pixels (default 122)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    args = parser.parse_args(argv)
    print(f"{'model':<20} {'params':>12} {'MMACs/image':>12}  {'feature-map sides':<28} (input {args.size}x{args.size})")
    for name in args.names or list_models():
        s = summarize(name, args.size, args.classes)
        trace = " -> ".join(str(v) for v in spatial_trace(build_model(name, args.classes), args.size))
        print(f"{s.name:<20} {s.params:>12,} {s.macs / 1e6:>12.1f}  {trace:<28}")


if __name__ == "__main__":
    main()
