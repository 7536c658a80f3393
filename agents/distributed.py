"""Data parallelism under ``torchrun``: this process's place in the run, and every collective the trainer uses.

A plain ``python agents/grpo_train.py`` (or ``torchrun --nproc_per_node 1``) gets ``World()``, rank 0 of
1, and never touches ``torch.distributed``: every method of ``World`` is then a no-op or the identity,
so the training loop reads the same either way. With WORLD_SIZE > 1, ``setup_world`` joins the process
group (nccl on CUDA, one GPU per rank by LOCAL_RANK; gloo on CPU). What each rank does in a step is
described in ``agents/grpo_train.py`` and docs/training.md.
"""

from __future__ import annotations

import inspect
import os
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from agents.cli import ConfigError

DIST_TIMEOUT_S = 3600  # how long ranks wait at a collective (rank 0 may be evaluating or saving)


@dataclass
class World:
    """This process's place in a data-parallel run; rank 0 of 1 (no torch.distributed) when run plainly.

    Every collective is a method here, and each one is a no-op (or the identity) in a plain run, so the
    training loop reads the same either way. ``device`` is the device of this rank's policy ("cuda:<local
    rank>" under torchrun on GPUs), ``comm_device`` where collective tensors live (nccl needs CUDA).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str | None = None
    comm_device: str = "cpu"
    initialised: bool = False  # this process called init_process_group (and destroys it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence) -> list:
        """This rank's share of a list that is the same on every rank (strided: rank, rank + size, ...)."""
        return list(items[self.rank::self.size]) if self.distributed else list(items)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj: Any) -> list:
        """Every rank's (picklable) object, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def on_main(self, fn):
        """Run ``fn`` on rank 0 only and hand its result to every rank; its error is raised on every rank."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        result = error = None
        if self.main:
            try:
                result = fn()
            except Exception as exc:  # re-raised below, on every rank, after the broadcast
                error = exc
        box = [(result, None if error is None else (isinstance(error, ConfigError), str(error)))]
        dist.broadcast_object_list(box, src=0)
        result, failure = box[0]
        if error is not None:
            raise error
        if failure is not None:
            raise (ConfigError if failure[0] else RuntimeError)(failure[1] if failure[0] else
                                                                f"rank 0 failed: {failure[1]}")
        return result

    def broadcast_parameters(self, params: Sequence):
        """Copy rank 0's values of ``params`` to every rank (as DDP does when it wraps a model)."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for param in params:
                buffer = param.data.to(self.comm_device)
                dist.broadcast(buffer, src=0)
                if buffer is not param.data:
                    param.data.copy_(buffer)

    def reduce_gradients(self, params: Sequence, finite: bool, loss_sum: float) -> tuple[bool, float]:
        """Sum the gradients of ``params`` over ranks in place (one flat float32 all-reduce).

        A rank without gradients (no rollouts kept, or a non-finite loss) contributes zeros. Returns
        (every rank was finite, the summed loss); when some rank was not, the gradients are left as
        they are and the caller skips the step, on every rank alike.
        """
        import torch
        import torch.distributed as dist

        sizes = [p.numel() for p in params]
        flat = torch.zeros(sum(sizes) + 2, dtype=torch.float32, device=self.comm_device)
        offset = 0
        for param, size in zip(params, sizes):
            if finite and param.grad is not None:
                flat[offset:offset + size] = param.grad.detach().reshape(-1).to(flat.device, torch.float32)
            offset += size
        flat[-2] = 0.0 if finite else 1.0
        flat[-1] = loss_sum if finite else 0.0
        dist.all_reduce(flat)
        if float(flat[-2]) > 0:
            return False, float("nan")
        offset = 0
        for param, size in zip(params, sizes):
            grad = flat[offset:offset + size].view_as(param).to(param.device, param.dtype)
            if param.grad is None:
                param.grad = grad.clone()
            else:
                param.grad.copy_(grad)
            offset += size
        return True, float(flat[-1])


def setup_world(device: str = "auto") -> World:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU); else World().

    ``device`` is the configured one ("auto", "cuda", "cpu", ...): under torchrun "auto" and "cuda" become
    this rank's GPU, ``cuda:<LOCAL_RANK>``.
    """
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    import datetime

    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device in ("auto", "cuda"):
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu" if device == "auto" else device
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(torch.device(device))
    initialised = False
    if not dist.is_initialized():
        kwargs = {}
        if on_cuda and "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = torch.device(device)  # binds NCCL to this rank's GPU (torch >= 2.3)
        dist.init_process_group("nccl" if on_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=DIST_TIMEOUT_S), **kwargs)
        initialised = True
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, device=device,
                 comm_device=device if on_cuda else "cpu", initialised=initialised)


def teardown_world(world: World):
    if world.initialised:
        import torch.distributed as dist

        dist.destroy_process_group()


def seed_rank(seed: int, world: World, step: int = 0):
    """Give ranks other than 0 their own token-sampling streams (rank 0 keeps the plain run's)."""
    if world.rank == 0:
        return
    import torch

    python_seed, torch_seed = np.random.SeedSequence([seed, world.rank, step]).generate_state(2)
    random.seed(int(python_seed))
    torch.manual_seed(int(torch_seed))


def rng_state(world: World) -> dict:
    """This process's token-sampling RNG states (saved per rank in a distributed checkpoint)."""
    import torch

    on_cuda = str(world.device or "").startswith("cuda")
    return {"python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if on_cuda else None}

