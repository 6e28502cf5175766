"""One setup sequence for every kind of run: a job is a recipe on this engine.

:func:`run_job` is what ``rnnlab train``, ``rnnlab classify train`` and ``rnnlab tasks
run`` do, in this order, whatever they train:

1. the run folder and device (:func:`~rnnlab.loop.start_run`);
2. resume or start (:func:`~rnnlab.loop.resume_from`: the last checkpoint, or none
   where the folder holds none yet), the checkpoint read by the recipe and its settings
   checked against the command's (:func:`~rnnlab.loop.check_resume_config`);
3. the recipe's data (:meth:`Recipe.prepare`), with the checkpoint's vocabulary;
4. the seed, the model (the checkpoint's, or the recipe's fresh one), the device, the
   optimiser;
5. the job (:class:`~rnnlab.loop.Job`), before the run folder exists, so that one that
   cannot be built leaves none;
6. the run folder, then the training state: restored from the checkpoint (optimiser, RNG,
   ``metrics.jsonl``; a changed schedule warned about once) or new;
7. ``config.json`` first, then the recipe's other files of a new run;
8. :func:`~rnnlab.loop.run_loop`;
9. the summary every run gives (folder, why it stopped, steps, epochs, time, speed,
   skipped steps, parameters), completed by the recipe (:meth:`Recipe.summary`).

Under ``torchrun`` (a recipe that is ``distributed``: the language model) rank 0 alone
makes the folder and writes the files, every rank restores the state, and the ranks wait
for each other where one needs another's files.

A recipe lists only what differs: how its checkpoints are read, its data, its fresh model,
its job, its files, its progress-bar label and its part of the summary. A new kind of run
is a new recipe, not a new copy of this sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from rnnlab.checkpoint import write_json
from rnnlab.distributed import SINGLE, Dist
from rnnlab.loop import (
    Job,
    LoopResult,
    TrainState,
    check_resume_config,
    make_optimizer,
    new_state,
    open_run_folder,
    restore,
    resume_from,
    run_loop,
    start_run,
    warn_schedule_change,
)

__all__ = ["Recipe", "run_job"]


class Recipe(Protocol):
    """What one kind of run adds to :func:`run_job`; ``cfg`` is its validated config (with a ``train`` section)."""

    cfg: Any
    distributed: bool  # trains under torchrun with more than one process (start_run refuses it otherwise)
    stop_on_success: bool  # stop at the first evaluation that reports success
    speed_key: str  # the summary's speed is "<speed_key>_per_sec" (tokens, seqs)

    def load(self, path: Path) -> Any:
        """Read and check this kind's checkpoint at ``path`` (a foreign kind is a CheckpointError)."""

    def prepare(self, out: Path, ckpt: Any | None, dist: Dist) -> None:
        """Read the data (with the checkpoint's vocabulary and classes when resuming; a resumed run's data
        checked against what it recorded)."""

    def build(self) -> torch.nn.Module:
        """A fresh model, its initialisation applied (torch's RNG is seeded)."""

    def job(self, model: torch.nn.Module, device: torch.device, ckpt: Any | None, dist: Dist) -> Job:
        """The :class:`~rnnlab.loop.Job`, with any state of its own restored from ``ckpt``."""

    def files(self) -> dict[str, Any]:
        """JSON files a new run writes beside config.json (vocabulary, split record, task)."""

    def desc(self) -> str:
        """The progress bar's label."""

    def summary(self, out: Path, result: LoopResult, state: TrainState, job: Job, device: torch.device,
                dist: Dist) -> dict[str, Any]:
        """This kind's part of the summary (its metrics, a test split scored)."""


def run_job(recipe: Recipe, progress: bool = True, dist: Dist = SINGLE, device: torch.device | None = None
            ) -> dict[str, Any]:
    """Train (or, with ``train.resume``, continue) ``recipe``'s run in ``train.out``; the summary.

    ``device`` is the one ``dist`` was set up on (a distributed run's own GPU); by default the config's.
    """
    cfg = recipe.cfg
    tc = cfg.train
    out, own_device = start_run(tc, distributed=recipe.distributed)
    device = device or own_device
    ckpt = None
    last = resume_from(tc, cfg.to_dict(), dist)
    if last is not None:
        ckpt = recipe.load(last)
        check_resume_config(ckpt.config.to_dict(), cfg.to_dict())
    recipe.prepare(out, ckpt, dist)

    torch.manual_seed(tc.seed)
    model = ckpt.build_model() if ckpt else recipe.build()
    model.to(device)
    optimizer = make_optimizer(model, cfg.optim)
    job = recipe.job(model, device, ckpt, dist)  # before the folder: a job that cannot be built leaves none
    if dist.is_main:
        open_run_folder(out)
    dist.barrier()
    if ckpt:
        state = restore(ckpt, optimizer, out, write_log=dist.is_main, batches_per_epoch=job.batches_per_epoch)
        if dist.is_main:  # once, not once a process
            warn_schedule_change(cfg.optim, tc, ckpt.config.train, state)
    else:
        state = new_state(cfg.optim, tc, job.batches_per_epoch)
    if dist.is_main:
        # config.json first: a folder holding any file of a run holds its config (loop.start_run tells a run's
        # folder, killed before its first checkpoint, from another program's files by it)
        write_json(out / "config.json", cfg.to_dict())  # on resume the stop conditions may differ
        if not ckpt:
            for name, content in recipe.files().items():
                write_json(out / name, content)
    if dist.rank:  # the other ranks draw their own dropout masks and samples
        torch.manual_seed(tc.seed + 7919 * dist.rank + state.step)

    result = run_loop(job, cfg.optim, tc, out, state, optimizer, progress, desc=recipe.desc(), dist=dist,
                      stop_on_success=recipe.stop_on_success)
    bpe = job.batches_per_epoch
    summary: dict[str, Any] = {
        "run": str(out), "stopped": result.stopped, "steps": state.step,
        "epochs": round(state.epoch + state.batch / bpe, 4), "elapsed_s": round(state.elapsed, 2),
        f"{recipe.speed_key}_per_sec": round(state.tokens / max(state.train_time, 1e-9), 1),
        "skipped_steps": state.skipped, "parameters": sum(p.numel() for p in model.parameters()),
    }
    if result.stopped == "interrupted":
        summary["signal"] = result.signal
    summary.update(recipe.summary(out, result, state, job, device, dist))
    return summary
