"""Distributed training under `torchrun`: process group set-up from the environment, rank helpers.

Outside `torchrun` (no WORLD_SIZE in the environment) everything degrades to one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from attnscope.errors import InputError
from attnscope.modules import device_problem


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: torch.device) -> World:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); one process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(spec: str) -> torch.device:
    """"auto": this process's GPU if there is one (LOCAL_RANK under torchrun), else the CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    problem = device_problem(spec) if isinstance(spec, str) else f"{spec!r} is not a device name"
    if problem is not None:
        raise InputError(problem)
    return torch.device(spec)
