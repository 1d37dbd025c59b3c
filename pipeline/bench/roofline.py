"""A roofline for the training step: bytes each image moves through device memory vs the copy bandwidth."""

from __future__ import annotations

import time
from typing import Any

import torch

from models import build_model
from pipeline.distributed import synchronize
from pipeline.training.precision import build_precision


def memory_traffic_bytes(model_name: str, num_classes: int, side: int, dtype: torch.dtype, batch: int,
                         device: torch.device) -> dict[str, float]:
    """Bytes one training image moves through device memory if every op streams its tensors once.

    Counts the bytes of every tensor each aten op reads and writes during a forward, backward and
    SGD step (views excluded), at batch 1 and 2: the difference is the per-image activation
    traffic, the rest is weight traffic, shared by the batch. Unfused kernels move about this much;
    fused ones less, so it is an estimate, not a measurement.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                for t in tree_flatten((args, kwargs, out))[0]:
                    if isinstance(t, torch.Tensor):
                        self.bytes += t.numel() * t.element_size()
            return out

    def traffic(n: int) -> int:
        torch.manual_seed(0)
        model = build_model(model_name, num_classes).to(device=device, dtype=dtype, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
        x = torch.randn(n, 3, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        y = torch.zeros(n, dtype=torch.long, device=device)
        for _ in range(2):  # the second step has momentum buffers, like every later one
            with Counter() as counter:
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return counter.bytes

    one, two = traffic(1), traffic(2)
    per_image, weights = two - one, 2 * one - two
    return {"activation_bytes_per_image": per_image, "weight_bytes_per_step": weights,
            "bytes_per_image": per_image + weights / batch}


def copy_bandwidth(device: torch.device, megabytes: int = 1024, repeats: int = 10) -> float:
    """Device memory bandwidth in bytes/s from a large tensor copy (bytes read + written)."""
    n = megabytes * 2**20 // 4
    src, dst = torch.empty(n, device=device), torch.empty(n, device=device)
    dst.copy_(src)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    synchronize(device)
    return 2 * n * 4 * repeats / (time.perf_counter() - t0)


def roofline(row: dict[str, Any], device: torch.device, num_classes: int) -> dict[str, Any]:
    dtype = build_precision(row["precision"], device).dtype
    traffic = memory_traffic_bytes(row["model"], num_classes, row["size"], dtype, row["batch_size"], device)
    bandwidth = copy_bandwidth(device)
    bound = bandwidth / traffic["bytes_per_image"]
    return {**traffic, "bandwidth_bytes_per_sec": bandwidth, "bound_images_per_sec": bound,
            "fraction_of_bound": row["images_per_sec"]["median"] / bound}
