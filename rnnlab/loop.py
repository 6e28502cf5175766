"""The training loop every rnnlab model shares.

A *job* says what is trained: its model, how one training batch becomes a loss, how
the model is scored, and what a checkpoint holds (:class:`Job`). :func:`run_loop`
does everything else, the same way for a language model, a sequence classifier or a
long-memory task: the learning-rate schedule (a pure function of the step), gradient
clipping (by value, then by global norm, the pre-clip norm and the clipped fraction
logged), skipping a step whose loss or gradient is not finite, the progress bar,
``metrics.jsonl``, evaluation and checkpoints every ``eval_interval`` steps, stop
conditions (steps, epochs, seconds), a checkpoint every ``checkpoint_interval_s`` seconds
besides (``last`` only), and Ctrl-C/SIGTERM (finish the step, checkpoint, return).
Resuming restores the optimiser, the :class:`TrainState` and the RNG from the checkpoint
(:func:`restore`), so a stopped and resumed run equals an uninterrupted one; where the run
folder holds no checkpoint yet, ``--resume`` starts the run (:func:`resume_from`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from rnnlab import jsonio
from rnnlab.allocator import keep_large_blocks
from rnnlab.checkpoint import BEST, LAST, atomic_write
from rnnlab.config import PATH_FIELDS, OptimConfig, TrainConfig, absolute_path, from_dict
from rnnlab.distributed import SINGLE, Dist, launched
from rnnlab.errors import CheckpointError, ConfigError, OutputError, TrainingError
from rnnlab.plots import plot_curves, read_metrics

# Config keys that a resumed run may change: where and how long it runs, not what it learns.
# (eval_interval is not among them: it drives the plateau schedule.)
RESUMABLE_CHANGES = {"max_steps", "max_epochs", "time_budget", "log_interval", "plot_interval_s", "resume", "threads",
                     "device", "eval_batch_size", "out", "mmap", "checkpoint_interval_s", "stop_on_success"}


# schedules: pure functions of the step ----------------------------------------------------

def lr_multiplier(step: int, cfg: OptimConfig, horizon: int, time_frac: float | None = None) -> float:
    """The learning rate at ``step`` as a fraction of ``cfg.lr`` (before any plateau decay).

    Linear warm-up over ``warmup_steps``; then ``constant``/``plateau`` stay at 1 and
    ``cosine`` falls to ``min_lr_ratio`` at step ``horizon`` and stays there. A run
    limited only by ``--time-budget`` has no step horizon (``horizon`` 0): there cosine
    follows ``time_frac``, the fraction of the budget spent (so it depends on the
    machine's speed, and such a run is reproducible only up to timing).
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule != "cosine":
        return 1.0
    if horizon:
        if horizon <= cfg.warmup_steps:
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / (horizon - cfg.warmup_steps))
    elif time_frac is not None:
        frac = min(1.0, max(0.0, time_frac))
    else:
        return 1.0
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


def warn_schedule_change(optim: OptimConfig, tc: TrainConfig, started: TrainConfig, state: TrainState) -> None:
    """Warn where a resumed run's new stop condition changes its cosine schedule without saying so: the
    step horizon is kept (the rate stays at its minimum past it); a time budget changed moves the rate."""
    if optim.lr_schedule != "cosine" or optim.decay_steps:
        return
    if state.horizon and tc.max_steps and tc.max_steps != state.horizon:
        warnings.warn(f"the cosine schedule keeps the horizon of {state.horizon} steps set when the run started "
                      f"(the learning rate stays at its minimum after it); start a run with --decay-steps to "
                      f"choose the horizon yourself", stacklevel=3)
    elif not state.horizon and tc.time_budget and started.time_budget and tc.time_budget != started.time_budget:
        before, now = (optim.lr * lr_multiplier(state.step, optim, 0, state.elapsed / b) * state.lr_scale
                       for b in (started.time_budget, tc.time_budget))
        warnings.warn(f"the cosine schedule follows the time budget: with --time-budget {tc.time_budget:g} instead "
                      f"of {started.time_budget:g} the learning rate moves from {before:.3g} to {now:.3g}; start a "
                      f"run with --decay-steps for a schedule in steps", stacklevel=3)


# the run's position, saved in every checkpoint ---------------------------------------------

@dataclass
class TrainState:
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # completed passes over the training split
    batch: int = 0  # next batch index within the epoch
    elapsed: float = 0.0  # seconds of training, summed over resumes
    tokens: int = 0  # training items seen (tokens for a language model, sequences for a classifier)
    best_val: float = math.inf  # best validation criterion (the loss, unless the job chooses another)
    lr_scale: float = 1.0  # plateau decay applied so far
    plateau_best: float = math.inf  # best loss among scheduled evaluations (drives the plateau schedule)
    plateau_bad: int = 0  # scheduled evaluations since the last improvement
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    last_eval_step: int = -1
    horizon: int = 0  # the cosine schedule's length in steps, fixed when the run starts (0: by time)
    train_time: float = 0.0  # seconds spent in training steps alone (for items per second)
    solved_step: int = -1  # the step of the first evaluation that reached the job's goal (``success``); -1: none yet
    solved_elapsed: float = 0.0  # ``elapsed`` at that step: the time to success


def new_state(optim: OptimConfig, train: TrainConfig, batches_per_epoch: int) -> TrainState:
    """The state a fresh run starts from; the cosine horizon is the first stop condition in steps."""
    epochs_steps = int(math.ceil(train.max_epochs * batches_per_epoch)) if train.max_epochs else 0
    limits = [s for s in (train.max_steps, epochs_steps) if s]
    cosine = optim.lr_schedule == "cosine"
    return TrainState(horizon=(optim.decay_steps or (min(limits) if limits else 0)) if cosine else 0)


class Job(Protocol):
    """What :func:`run_loop` trains. The loop never looks inside the model or the batches."""

    model: torch.nn.Module
    batches_per_epoch: int
    unit: str  # the headline metric of the progress bar and the curves ("bpc", "bpw", "loss", ...)
    items: str  # what a training item is, for the speed shown ("chars", "words", "seqs")

    def start_epoch(self, epoch: int) -> None:
        """Called before the first batch of every epoch (reset a carried state, reshuffle)."""

    def train_loss(self, epoch: int, index: int) -> tuple[torch.Tensor, int, dict[str, float]]:
        """Batch ``index`` of ``epoch``: (the scalar loss to minimise, the items it covers, extras to log)."""

    def step_done(self, ok: bool) -> None:
        """After the optimiser step (``ok``) or after a skipped step (not ``ok``)."""

    def train_metrics(self, loss: float) -> dict[str, float]:
        """The training row's metrics from the batch loss (must hold ``unit``)."""

    def evaluate(self) -> dict[str, float]:
        """Score the validation split: ``loss`` and metrics. ``best`` is the checkpoint with the lowest
        ``criterion`` if the job gives one (e.g. 1 - accuracy), else the lowest ``loss``."""

    def save(self, path: Path, train_state: dict[str, Any], optimizer: torch.optim.Optimizer,
             rng: dict[str, torch.Tensor]) -> None:
        """Write a checkpoint holding everything needed to continue. Called on every rank of a
        distributed run (to gather what the ranks hold apart); rank 0 alone writes."""


class _JobForward(torch.nn.Module):
    """A job's training loss as a module's forward, so that ``DistributedDataParallel`` sees it:
    whatever the job runs (fused, stepped, a feeding strategy), the gradients are averaged over ranks."""

    def __init__(self, job: Job):
        super().__init__()
        self.model = job.model  # registers the parameters DDP synchronises
        self._job = job

    def forward(self, epoch: int, index: int) -> tuple[torch.Tensor, int, dict[str, float]]:
        return self._job.train_loss(epoch, index)


# pieces every job's setup uses ----------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {name!r} (rnnlab runs on CPUs and CUDA GPUs)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} GPU(s)")
    return device


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.weight_decay \
            else torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def rng_state() -> dict[str, torch.Tensor]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    return rng


def set_rng_state(rng: dict[str, torch.Tensor]) -> None:
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def check_resume_config(stored: dict[str, dict[str, Any]], given: dict[str, dict[str, Any]]) -> None:
    """A resumed run learns what it learned before: only stop conditions and logging may change."""
    diffs = []
    for section in stored:
        for key, val in stored[section].items():
            now = given.get(section, {}).get(key)
            if section == "data" and key in PATH_FIELDS:  # the same file, named from another folder
                val, now = absolute_path(val), absolute_path(now)
            if key not in RESUMABLE_CHANGES and now != val:
                diffs.append(f"{key}: the run has {val!r}, the command gives {now!r}")
    if diffs:
        raise ConfigError(["--resume continues the run with its own settings; only stop conditions and logging "
                           "may change"] + diffs)


def start_run(tc: TrainConfig, distributed: bool = False) -> tuple[Path, torch.device]:
    """The run folder and device of a run about to start: threads and the allocator set, and a clear error for a
    folder that already holds a run (unless resuming), an ``--out`` that is a file, or a
    ``torchrun`` launch of a job that trains in one process only (not ``distributed``)."""
    if not distributed and launched():
        raise ConfigError("this command trains in one process; torchrun with more than one process is "
                          "supported by rnnlab train (the language model)")
    out = Path(tc.out)
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    keep_large_blocks()  # a step's large buffers reused, not mapped afresh (rnnlab.allocator)
    if not tc.resume and ((out / LAST).exists() or (out / BEST).exists()):
        raise ConfigError(f"run folder {out} already holds a run: add --resume to continue it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if not tc.resume:
        _refuse_foreign_files(out)
    return out, device


RUN_FILES = ("config.json", "vocab.json", "split.json", "task.json", "metrics.jsonl", "curves.png")  # what runs write


def saved_run_config(out: Path) -> dict[str, Any] | None:
    """The settings in ``out``'s config.json where it is a run's (a run writes it before its other files, so a run
    killed before its first checkpoint leaves it), else None (no file, or another program's)."""
    try:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(cfg, dict) and isinstance(cfg.get("train"), dict) and isinstance(cfg.get("model"), dict)
    return cfg if ok else None


def _refuse_foreign_files(out: Path) -> None:
    """Refuse a folder holding files of a run's names that no run wrote (a run would overwrite them)."""
    clash = [n for n in RUN_FILES if (out / n).exists()] if out.is_dir() else []
    if clash and saved_run_config(out) is None:
        raise ConfigError(f"--out {out} holds {', '.join(clash)}, not written by a run; a run would overwrite "
                          f"{'it' if len(clash) == 1 else 'them'}: choose another --out")


def resume_point(out: Path) -> Path | None:
    """What ``--resume`` continues in ``out``: its last checkpoint, or None where the folder holds no checkpoint
    yet (no folder, an empty one, the config.json, vocab.json and split.json of a run killed before its first
    checkpoint, a checkpoint's temporary file left by a kill during that write): such a run starts afresh."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if (out / LAST).exists():
        return out / LAST
    if (out / BEST).exists():  # a run writes last first; a best alone means last was removed
        raise CheckpointError(f"nothing to resume: {out} holds {BEST} but not {LAST}, which a resume continues "
                              f"from; restore it, or choose another --out")
    return None


def starting_config(out: Path, kind: type, overrides: dict[str, dict[str, Any]] | None = None) -> Any:
    """The config of a run that ``--resume`` starts (``out`` holds no checkpoint yet, :func:`resume_point`): the
    settings of its config.json (a run killed before its first checkpoint) or else ``kind``'s defaults, with
    ``overrides`` applied section by section and ``resume`` set, as a ``kind``."""
    base = saved_run_config(out) or kind().to_dict()
    if set(base) != set(kind().to_dict()):
        raise ConfigError(f"--out {out} holds a run of another kind (its config.json has the sections "
                          f"{', '.join(sorted(base))}), not a {kind.__name__}")
    return with_overrides(kind, base, overrides)


def with_overrides(kind: type, base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]] | None,
                   resume: bool = True) -> Any:
    """``base`` (a config's JSON form) with ``overrides`` applied section by section and ``train.resume`` set
    to ``resume``, as a ``kind`` (unknown keys and wrong types refused)."""
    for section, values in (overrides or {}).items():
        base[section].update(values)
    base["train"]["resume"] = resume
    return from_dict(kind, base)


def resume_from(tc: TrainConfig, config: dict[str, dict[str, Any]], dist: Dist = SINGLE) -> Path | None:
    """The checkpoint a run continues from: with ``tc.resume``, the last checkpoint in ``tc.out``, or None where
    the folder holds none yet (:func:`resume_point`), and then the run starts, saying so in a warning. So one
    command line, repeated after a kill at any moment, starts the run or continues it.

    A folder whose config.json (a run killed before its first checkpoint) has other settings than ``config``
    is refused as a checkpoint with other settings is (:func:`check_resume_config`), and so are files of
    another program. Without ``tc.resume``: None (:func:`start_run` refused a folder holding a run).
    Rank 0 looks at the folder and every rank takes its answer, errors included, so that all ranks of a
    ``torchrun`` restart agree even where one of them looked after rank 0 had begun to write."""
    if not tc.resume:
        return None
    out = Path(tc.out)
    answer: tuple[str, Any] = ("", None)
    if dist.is_main:
        try:
            point = resume_point(out)
            if point is None:
                stored = saved_run_config(out)
                if stored is not None:
                    check_resume_config(stored, config)
                else:
                    _refuse_foreign_files(out)
            answer = ("checkpoint" if point else "start", str(point) if point else None)
        except (ConfigError, CheckpointError) as e:
            answer = ("error", e)
    kind, value = dist.broadcast(answer)
    if kind == "error":
        raise value
    if kind == "start" and dist.is_main:
        warnings.warn(f"--resume: {out} holds no checkpoint yet; the run starts from the beginning", stacklevel=2)
    return Path(value) if value else None


def open_run_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create run folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise CheckpointError(f"run folder {out} is not writable")


def _check_train_state(values: Any, batches_per_epoch: int | None) -> list[str]:
    """What is wrong with a stored training state (nothing: ``[]``), checked against :class:`TrainState`."""
    if not isinstance(values, dict):
        return ["it is not an object"]
    fields = TrainState.__dataclass_fields__
    problems = [f"unknown field {k!r}" for k in values if k not in fields]
    unbounded = ("best_val", "plateau_best")  # infinite until a first evaluation
    for k, v in values.items():
        if k not in fields or isinstance(v, bool):
            if isinstance(v, bool):
                problems.append(f"{k} is {v!r}")
            continue
        if fields[k].type == "int":
            if not (isinstance(v, int) and v >= (-1 if k in ("last_eval_step", "solved_step") else 0)):
                problems.append(f"{k} is {v!r}, not a count")
        elif not isinstance(v, (int, float)) or math.isnan(v) or \
                (k not in unbounded and not (math.isfinite(v) and v >= 0)):
            problems.append(f"{k} is {v!r}")
    if batches_per_epoch is not None and isinstance(values.get("batch"), int) and values["batch"] > batches_per_epoch:
        problems.append(f"batch {values['batch']} lies beyond the {batches_per_epoch} batches of an epoch")
    return problems


def _check_optimizer(optimizer: torch.optim.Optimizer, stored: dict[str, Any]) -> list[str]:
    """What keeps ``stored`` from fitting ``optimizer``: its groups' settings and state tensors' shapes."""
    fresh = optimizer.state_dict()
    groups = stored.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        return ["its parameter groups differ from the model's"]
    problems = []
    for g, f in zip(groups, fresh["param_groups"]):
        for k, v in f.items():
            w = g.get(k) if isinstance(g, dict) else None
            if k == "params":
                if not isinstance(w, list) or len(w) != len(v):
                    problems.append("its parameter groups differ from the model's")
            elif v is not None and (type(w) is not type(v) and not (isinstance(v, (int, float)) and
                                                                    isinstance(w, (int, float)))
                                    or isinstance(v, (tuple, list)) and len(w) != len(v)):
                problems.append(f"setting {k} is {w!r}")
    params = [p for grp in optimizer.param_groups for p in grp["params"]]
    for i, st in (stored.get("state") or {}).items():
        if not (isinstance(i, int) and 0 <= i < len(params)) or not isinstance(st, dict):
            problems.append(f"state for parameter {i!r} has no parameter")
            continue
        for k, t in st.items():
            if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape != params[i].shape:
                problems.append(f"{k} of parameter {i} has shape {tuple(t.shape)}, the parameter "
                                f"{tuple(params[i].shape)}")
    return problems


def restore(ckpt: Any, optimizer: torch.optim.Optimizer, out: Path, write_log: bool = True,
            batches_per_epoch: int | None = None) -> TrainState:
    """Put the optimiser, the RNG and ``metrics.jsonl`` (unless not ``write_log``: a rank other
    than 0) back where checkpoint ``ckpt`` left them. Everything is checked before anything
    changes: a damaged training state or optimiser state is a :class:`CheckpointError`."""
    problems = _check_train_state(ckpt.train_state, batches_per_epoch)
    if problems:
        raise CheckpointError(f"{ckpt.path}: training state is malformed ({'; '.join(problems[:3])}); "
                              f"the file is corrupt")
    if ckpt.optimizer is not None:
        stored = ckpt.optimizer_state()
        problems = _check_optimizer(optimizer, stored)
        if problems:
            raise CheckpointError(f"{ckpt.path}: optimiser state does not fit the model "
                                  f"({'; '.join(problems[:3])})")
        try:
            optimizer.load_state_dict(stored)
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{ckpt.path}: optimiser state does not fit the model ({e})") from None
    state = TrainState(**ckpt.train_state)
    set_rng_state(ckpt.rng())
    if not write_log:
        return state
    rows, skips = [], 0
    for r in read_metrics(out / "metrics.jsonl"):
        skips += bool(r.get("skipped"))  # a skip logs the step before it: keep only those the checkpoint counted
        if r.get("step", 0) <= state.step and not (r.get("skipped") and skips > state.skipped):
            rows.append(r)
    atomic_write(out / "metrics.jsonl", "".join(jsonio.dumps(r) + "\n" for r in rows).encode("utf-8"))
    return state


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class LoopResult:
    stopped: str  # success, max_steps, max_epochs, time_budget, interrupted or non_finite
    last_val: dict[str, float] | None  # the last evaluation's metrics
    signal: int | None  # the signal that interrupted the run


# the loop --------------------------------------------------------------------------------------

LIMITS = ("max_steps", "max_epochs", "time_budget")  # the stops a larger limit (--max-steps, ...) moves on
STOPS = ("", "success", "max_steps", "max_epochs", "time_budget", "interrupted")  # codes the ranks agree on (the largest wins)

STOP_WORDS = {"success": "solved", "max_steps": "step limit", "max_epochs": "epoch limit",
              "time_budget": "time budget", "interrupted": "interrupted", "non_finite": "non-finite loss"}
"""What the progress bar says stopped a run."""


def run_loop(job: Job, optim: OptimConfig, tc: TrainConfig, out: Path, state: TrainState,
             optimizer: torch.optim.Optimizer, progress: bool = True, desc: str = "",
             dist: Dist = SINGLE, stop_on_success: bool = False) -> LoopResult:
    """Train ``job`` from ``state`` until a stop condition; checkpoint into ``out``.

    Each step: the learning rate of the schedule, ``job.train_loss``, backward, clip by
    value then by global norm, and the optimiser step, unless the loss or the gradient is
    not finite (then the step is skipped and counted; ``max_bad_steps`` in a row stop
    the run with a :class:`~rnnlab.errors.TrainingError` that names the last good
    checkpoint). Every ``eval_interval`` steps ``job.evaluate`` scores the validation
    split, ``last`` is checkpointed and ``best`` kept. The run always ends on a checkpoint.

    A job whose evaluation reports ``success`` (a long-memory task) has the step and the
    elapsed time of its first successful evaluation recorded in the state
    (``solved_step``, ``solved_elapsed``); with ``stop_on_success`` the run stops there.

    With ``dist`` (a ``torchrun`` launch, :mod:`rnnlab.distributed`) the job's loss runs
    inside ``DistributedDataParallel``, the logged loss is the mean over ranks, the ranks
    agree on when to stop, rank 0 scores the validation split and alone writes the log,
    the plots, the progress bar and (through ``job.save``) the checkpoints.
    """
    bpe = job.batches_per_epoch
    main = dist.is_main
    # what a time budget counts: wall-clock seconds, or this process's CPU seconds (all its threads)
    clock = time.process_time if tc.clock == "cpu" else time.perf_counter
    metrics_f = None
    if main:
        try:
            metrics_f = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in finally)
        except OSError as e:
            raise CheckpointError(f"cannot write {out / 'metrics.jsonl'}: {e.strerror or e}") from None

    def log(row: dict[str, Any]) -> None:
        if metrics_f is not None:
            try:
                metrics_f.write(jsonio.dumps(row) + "\n")
                metrics_f.flush()
            except OSError as e:  # a full disk: one line, as for a checkpoint (the last one is intact)
                raise CheckpointError(f"cannot write {out / 'metrics.jsonl'}: {e.strerror or e}") from None

    def note(msg: str) -> None:
        if main:
            tqdm.write(msg)

    def checkpoint(best: bool) -> None:
        args = dict(train_state=asdict(state), optimizer=optimizer, rng=rng_state())
        # best first: killed between the two, the old last resumes and redoes both; the other way round,
        # last would record a best_val that best.safetensors never received
        if best:
            job.save(out / BEST, **args)
        job.save(out / LAST, **args)

    def evaluate_and_save(scheduled: bool) -> dict[str, float]:
        """Score the validation split, checkpoint, plot. Only scheduled evaluations move the
        plateau schedule, so where a run stops (and resumes) does not change how it trains."""
        m = dist.broadcast(job.evaluate() if main else None)
        crit = m.get("criterion", m["loss"])
        if state.solved_step < 0 and m.get("success", 0.0) >= 1.0:
            state.solved_step, state.solved_elapsed = state.step, state.elapsed
        improved = crit < state.best_val
        if improved:
            state.best_val = crit
        if scheduled:
            state.plateau_bad = 0 if crit < state.plateau_best else state.plateau_bad + 1
            state.plateau_best = min(state.plateau_best, crit)
            if optim.lr_schedule == "plateau" and state.plateau_bad > optim.plateau_patience:
                state.lr_scale *= optim.plateau_factor
                state.plateau_bad = 0
        state.last_eval_step = state.step
        log({"split": "val", "step": state.step, "epoch": state.epoch + state.batch / bpe,
             "elapsed": round(state.elapsed, 3), **m, "best": improved})
        checkpoint(best=improved)
        if time.monotonic() - drawn[1] >= tc.plot_interval_s:
            draw()
        return m

    # the evaluation step curves.png shows, and when it was drawn (time.monotonic): the first drawing waits
    # plot_interval_s too, so a short run (a task solved in seconds) pays for matplotlib once, at its end
    drawn = [-1, time.monotonic() if tc.plot_interval_s else -math.inf]

    def draw() -> None:
        """Redraw curves.png from metrics.jsonl (matplotlib takes a second or two: at most every
        ``plot_interval_s`` seconds while the run trains, and once at its end)."""
        drawn[:] = [state.last_eval_step, time.monotonic()]
        if not main:
            return
        try:
            plot_curves(out / "metrics.jsonl", out / "curves.png", job.unit)
        except OSError as e:  # an OutputError names the file and the cause already
            raise CheckpointError(str(e) if isinstance(e, OutputError)
                                  else f"cannot write {out / 'curves.png'}: {e.strerror or e}") from None

    limits = [s for s in (tc.max_steps, int(math.ceil(tc.max_epochs * bpe)) if tc.max_epochs else 0) if s]
    params = [p for p in job.model.parameters() if p.requires_grad]
    bar = tqdm(total=min(limits) if limits else None, initial=state.step, disable=not (progress and main),
               unit="step", dynamic_ncols=True, desc=desc)
    forward = job.train_loss
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(_JobForward(job))  # averages the gradients over ranks in backward
    stopped = ""
    post: dict[str, str] = {}
    consecutive_bad = 0
    window = {"items": 0, "time": 0.0, "clipped": 0, "steps": 0}
    last_val: dict[str, float] | None = None
    job.model.train()
    first_step = state.step  # a resumed run starts where it was saved
    try:
        with _StopFlag() as flag:
            if dist.broadcast(not (out / LAST).exists()):  # a run killed before its first evaluation resumes too
                checkpoint(best=False)
            saved_at = time.monotonic()  # the last checkpoint's wall time (checkpoint_interval_s)
            while True:
                if stop_on_success and state.solved_step >= 0:
                    stopped = "success"
                elif tc.max_steps and state.step >= tc.max_steps:
                    stopped = "max_steps"
                elif tc.max_epochs and state.epoch + state.batch / bpe >= tc.max_epochs - 1e-12:
                    stopped = "max_epochs"
                elif tc.time_budget and state.elapsed >= tc.time_budget:
                    stopped = "time_budget"
                elif flag.signal is not None:
                    stopped = "interrupted"
                if dist.enabled:  # wall time and signals differ between ranks: all stop at the same step
                    stopped = STOPS[dist.agree(STOPS.index(stopped))]
                if stopped:
                    if state.step == first_step > 0 and stopped in LIMITS:
                        note(f"nothing to train: the run had reached its {STOP_WORDS[stopped]} already; resume with "
                             f"a larger --{stopped.replace('_', '-')} to train on")
                    break
                t0 = clock()
                if state.batch >= bpe:
                    state.epoch, state.batch = state.epoch + 1, 0
                if state.batch == 0:
                    job.start_epoch(state.epoch)
                time_frac = state.elapsed / tc.time_budget if tc.time_budget else None
                lr = optim.lr * lr_multiplier(state.step, optim, state.horizon, time_frac) * state.lr_scale
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss, items, extra = forward(state.epoch, state.batch)
                items *= dist.world  # every rank trains as many
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                raw_norm, value_clipped = None, False
                if optim.clip_value > 0:  # clamping would turn an Inf into clip_value: judge the gradient before
                    grads = [p.grad for p in params if p.grad is not None]
                    raw_norm = float(torch.nn.utils.get_total_norm(grads))
                    value_clipped = float(torch.nn.utils.get_total_norm(grads, norm_type=math.inf)) > optim.clip_value
                    torch.nn.utils.clip_grad_value_(params, optim.clip_value)
                max_norm = optim.clip_norm if optim.clip_norm > 0 else math.inf
                norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))  # the norm before clipping by norm
                gnorm = norm if raw_norm is None else raw_norm  # the norm before any clipping: what is logged
                step_clipped = value_clipped or (optim.clip_norm > 0 and norm > optim.clip_norm)
                loss_v = dist.mean(loss).item()  # the same on every rank, as the averaged gradient is
                state.batch += 1
                if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
                    state.skipped += 1
                    consecutive_bad += 1
                    job.step_done(ok=False)
                    note(f"step {state.step}: non-finite loss or gradient (loss {loss_v}, gradient norm "
                               f"{gnorm}); step skipped ({state.skipped} so far)")
                    log({"split": "train", "step": state.step, "skipped": True, "loss": loss_v, "grad_norm": gnorm})
                    state.elapsed += clock() - t0
                    if consecutive_bad >= tc.max_bad_steps:
                        stopped = "non_finite"
                        break
                    continue
                consecutive_bad = 0
                optimizer.step()
                job.step_done(ok=True)
                state.step += 1
                state.tokens += items
                dt = clock() - t0
                state.elapsed += dt
                state.train_time += dt
                window["items"] += items
                window["time"] += dt
                window["steps"] += 1
                window["clipped"] += int(step_clipped)
                if state.step % tc.log_interval == 0 or state.step == 1:
                    m = job.train_metrics(loss_v)
                    extra = dist.mean_values(extra)  # rank 0 logs every rank's mean
                    speed = window["items"] / max(window["time"], 1e-9)
                    clipped = window["clipped"] / window["steps"]
                    log({"split": "train", "step": state.step, "epoch": state.epoch + state.batch / bpe,
                         "elapsed": round(state.elapsed, 3), **m, **extra, "lr": lr, "grad_norm": gnorm,
                         "clipped_frac": clipped, f"{job.items}_per_sec": speed})
                    post = {"loss": f"{loss_v:.3f}"}
                    if job.unit != "loss":
                        post[job.unit] = f"{m[job.unit]:.3f}"
                    post.update({f"{job.items}/s": f"{speed:,.0f}", "gnorm": f"{gnorm:.2f}", "clip": f"{clipped:.0%}"})
                    if last_val:
                        post[f"val_{job.unit}"] = f"{last_val[job.unit]:.3f}"
                    bar.set_postfix(post, refresh=False)
                    window = {"items": 0, "time": 0.0, "clipped": 0, "steps": 0}
                bar.update(1)
                if state.step % tc.eval_interval == 0:
                    t1 = clock()
                    last_val = evaluate_and_save(scheduled=True)
                    state.elapsed += clock() - t1
                    saved_at = time.monotonic()
                    if post:  # the bar shows this evaluation from now on, the run's last one included
                        post[f"val_{job.unit}"] = f"{last_val[job.unit]:.3f}"
                        bar.set_postfix(post, refresh=False)
                elif tc.checkpoint_interval_s and dist.agree(
                        int(time.monotonic() - saved_at >= tc.checkpoint_interval_s)):
                    # by time: last alone, no evaluation (the plateau schedule moves only at eval_interval steps),
                    # so where these fall does not change what the run learns
                    t1 = clock()
                    checkpoint(best=False)
                    state.elapsed += clock() - t1
                    saved_at = time.monotonic()
            # still inside the signal guard: a second Ctrl-C here cannot lose the checkpoint
            if stopped == "interrupted":
                checkpoint(best=False)  # save first; the validation pass can wait for the resume
            elif stopped == "non_finite":
                last = out / LAST
                raise TrainingError(
                    f"the loss or gradient was non-finite for {tc.max_bad_steps} steps in a row; stopped. "
                    + (f"The last good checkpoint is {last}." if last.exists() else "No checkpoint was written yet.")
                    + " Start a new run with a lower --lr or --clip-norm.")
            elif dist.broadcast(state.last_eval_step != state.step or not (out / LAST).exists()):
                last_val = evaluate_and_save(scheduled=False)
            else:
                checkpoint(best=False)
            if stopped != "interrupted" and drawn[0] != state.last_eval_step:
                draw()  # the curves of the whole run
        caught = flag.signal
        if stopped in STOP_WORDS:
            bar.set_postfix({**post, "stopped": STOP_WORDS[stopped]}, refresh=True)
    finally:
        bar.close()
        if metrics_f is not None:
            try:
                metrics_f.close()
            except OSError:  # the row that could not be written is still buffered; its error is on its way
                pass
    return LoopResult(stopped, last_val, caught)
