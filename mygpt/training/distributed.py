"""Running as one of several processes under torchrun (DistributedDataParallel), or alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    """This process's place among `world_size` training processes (rank 0 speaks for all)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (to fill a cache: tokens, a download); then the others."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all processes."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch_dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one."""
        return self.sum([float(flag)])[0] > 0

    def shared_seed(self) -> int:
        """A seed drawn from rank 0's global RNG, the same on every process.

        Drawn as torch's DataLoader and RandomSampler draw theirs, so a single process
        consumes the global RNG exactly as the book's loaders do.
        """
        seed = torch.empty((), dtype=torch.int64).random_()
        if self.enabled:
            torch_dist.broadcast(seed, src=0)
        return int(seed.item())

    def gather(self, obj: object) -> list[object]:
        """Every process's `obj`, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join torchrun's process group if launched by it; the process's share and its device.

    CUDA processes use one GPU each (LOCAL_RANK) over NCCL; others use gloo.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(), device
    ctx = Dist(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    torch_dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        device_id=device if device.type == "cuda" else None,
    )
    return ctx, device


def shutdown_distributed(ctx: Dist) -> None:
    if ctx.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
