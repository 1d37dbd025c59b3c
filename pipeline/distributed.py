"""Process-group setup for torchrun (or a plain single process), the few collectives we use, device sync.

Reads RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT through torch's env:// rendezvous).
One process per GPU on `cuda:LOCAL_RANK` with NCCL; CPU processes use gloo. A separate gloo
group carries the small host-side messages (metric sums at logging boundaries, stop requests,
checkpoint gathering) so they never touch the GPU stream.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipeline.errors import LaunchError


@dataclass(frozen=True)
class DistInfo:
    rank: int  # global rank
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_control_group: Any = None


def init_distributed(backend: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group torchrun describes in the environment (none for a single process)."""
    global _control_group
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise LaunchError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = resolve_backend(backend, device)
        if backend == "nccl" and device.type != "cuda":
            raise LaunchError("dist.backend: nccl needs CUDA; use dist.backend=gloo (or auto) on CPU")
        timeout = datetime.timedelta(seconds=timeout_s)
        kwargs = {"device_id": device} if backend == "nccl" else {}
        store = _restart_scoped_store(world_size, timeout)
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world_size)
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        _control_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return DistInfo(rank, world_size, local_rank, device)


def resolve_backend(backend: str, device: torch.device) -> str:
    """dist.backend: auto = nccl for a process on a GPU, gloo on the CPU."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


def _restart_scoped_store(world_size: int, timeout: datetime.timedelta) -> Any:
    """The torchrun agent's store, with keys scoped to this restart round (None outside torchrun).

    torchrun's agent shares one TCPStore with its workers and keeps it across restarts, without a
    per-round prefix. After `--max-restarts` relaunches the workers, a rank can read the
    transport address a dead rank of the previous round published and fail to connect
    ("Gloo connectFullMesh failed ... Connection refused"). A prefix per round avoids stale keys.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"squeezenet-dali/restart-{restart}", store)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): only at measurement boundaries."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def destroy() -> None:
    global _control_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _control_group = None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier(group=_control_group)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a small CPU tensor over ranks, in place (host values read at logging boundaries)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_control_group)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of a small CPU tensor over ranks, in place."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_control_group)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any rank (a CPU message; no GPU sync)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group)
    return bool(t.item())


class PendingFlag:
    """A max-reduce of a flag over ranks, started and not yet waited for (`start_any_rank`)."""

    def __init__(self, flag: bool) -> None:
        self.tensor = torch.tensor([1 if flag else 0], dtype=torch.int32)
        self.work = (dist.all_reduce(self.tensor, op=dist.ReduceOp.MAX, group=_control_group, async_op=True)
                     if dist.is_initialized() else None)

    def result(self) -> bool:
        if self.work is not None:
            self.work.wait()
        return bool(self.tensor.item())


def start_any_rank(flag: bool) -> PendingFlag:
    """`any_rank` without waiting: the message travels while the caller works; `.result()` reads it."""
    return PendingFlag(flag)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step each
    rank still holds the statistics of its own last batch. Evaluation and checkpoints must all
    use the same ones.
    """
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_control_group)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on `dst` (None elsewhere)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst, group=_control_group)
    return out
