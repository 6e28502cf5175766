"""Many processes: ``torchrun --nproc_per_node=N -m rnnlab train ...``.

:func:`from_env` reads what ``torchrun`` (``torch.distributed.run``) puts in the
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...) and
joins the process group: gloo on CPU, nccl on CUDA. Without those variables it
returns :data:`SINGLE`, a one-process :class:`Dist` whose collectives do nothing,
so the training loop has no second code path.

The contract, for a language model with global batch B on W ranks:

* rank r trains streams ``[r B/W, (r+1) B/W)`` of the same B contiguous streams a
  single process would lay out (B must be a multiple of W);
* each rank's loss is the mean over its own streams; ``DistributedDataParallel``
  averages the gradients, so the step is the step of the mean over all B streams:
  training equals one process with batch B up to the order of float additions
  (the tests check the loss curve and the final weights). Random draws (dropout,
  sampled feeding) come from each rank's own generator, so those runs are
  equally valid but not equal to one process;
* a feeding strategy with parameters of its own (professor forcing's discriminator)
  starts from rank 0's and averages their gradients over ranks the same way;
* the logged training numbers (loss and a strategy's extras) are means over ranks;
* stop decisions (time budget, Ctrl-C) are agreed on by all ranks every step, the
  validation split is scored by rank 0 and its result broadcast;
* rank 0 alone writes checkpoints, ``metrics.jsonl``, plots and the progress bar;
  the carried hidden state of all B streams is gathered into the checkpoint, so a
  run resumes with any number of ranks.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rnnlab.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place among ``world`` ranks (``world == 1``: no process group)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` streams that this rank trains."""
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (itself in one process)."""
        if not self.enabled:
            return value
        v = value.detach().clone().reshape(1).to(torch.float64)
        dist.all_reduce(v)
        return v[0] / self.world

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over ranks, in place (nothing in one process)."""
        if not self.enabled:
            return
        for t in tensors:
            dist.all_reduce(t)
            t.div_(self.world)

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite each tensor with rank 0's, in place (nothing in one process)."""
        if not self.enabled:
            return
        for t in tensors:
            dist.broadcast(t, src=0)

    def mean_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each number's mean over ranks (every rank passes the same keys); ``values`` itself in one process."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        v = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._device())
        dist.all_reduce(v)
        return dict(zip(keys, (v / self.world).tolist()))

    def agree(self, code: int) -> int:
        """The largest of every rank's ``code``: one decision that all ranks take together."""
        if not self.enabled:
            return code
        t = torch.tensor([code], dtype=torch.int64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``(b, ...)`` rows stacked in rank order: ``(world * b, ...)``."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend() == "nccl" else torch.device("cpu")


SINGLE = Dist()


def world_size() -> int:
    """How many ranks ``torchrun`` started (1 without it); readable before joining the group."""
    try:
        w = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None
    if w < 1:
        raise ConfigError(f"WORLD_SIZE={w}: need at least one process")
    return w


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one rank."""
    return world_size() > 1


def from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on CUDA) and return this
    rank's :class:`Dist` and device (``cuda:LOCAL_RANK`` on GPUs); :data:`SINGLE` without torchrun."""
    if not launched():
        return SINGLE, device
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ConfigError("WORLD_SIZE is set but RANK is missing or not a number: start many processes "
                          "with torchrun --nproc_per_node=N -m rnnlab train ...") from None
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} has no GPU of its own ({torch.cuda.device_count()} visible): "
                              f"give torchrun --nproc_per_node at most the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(world=world, rank=rank, local_rank=local), device


def shutdown(d: Dist) -> None:
    """Leave the process group (after the last collective).

    The DistributedDataParallel wrapper and its reducer sit in reference cycles; collected
    only at interpreter exit, after the group is gone, gloo's worker threads can still hold
    their work and abort the process ("terminate called without an active exception", seen
    once in CI). So they are collected first, while the group is alive."""
    if d.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
