r"""Training RNNs on the long-memory tasks (:mod:`rnnlab.tasks`) with the loop every model shares.

:func:`train_task` trains a :class:`TaskModel` on the adding, copy-memory or
temporal-order problem of any length T with :func:`rnnlab.loop.run_loop`: the same
optimisers, schedules, clipping (its pre-clip norm and clipped fraction logged),
progress bar, ``metrics.jsonl``, checkpoints and exact resume as the language model and
the classifier. Its config, :class:`~rnnlab.config.TaskRunConfig` (re-exported here), is one of
the typed configs of :mod:`rnnlab.config`. What is task-specific lives in :class:`TaskJob`:

* **Data.** By default every training batch is a fresh draw from the task's generator,
  seeded by ``(data_seed, epoch, batch)`` alone (:meth:`TaskJob.batch`), so a resumed run
  sees the very batches an uninterrupted one would; an "epoch" is then ``train_size``
  sequences, a unit of progress only. With ``fresh = False`` one fixed training set of
  ``train_size`` sequences is drawn once and reshuffled every epoch. The validation set
  (``val_size`` sequences) is fixed by ``data_seed`` and never overlaps the training
  draws' seeds.
* **Loss.** The task's own metric, so the training loss and the validation score are
  the same quantity: adding, the mean squared error of one prediction per sequence;
  temporal order, the cross entropy (nats per sequence) of the class after the last
  step; copy, the mean cross entropy over every output step (nats per step), as the
  task's baseline is defined.
* **Score.** Every evaluation reports the metric as ``loss``, the trivial ``baseline``,
  ``ratio`` = loss / baseline (the headline unit: the task is solved below
  1 / :data:`rnnlab.tasks.SUCCESS_FACTOR` = 0.1), ``success`` (1.0 or 0.0) and, for the
  classification tasks, ``acc`` (of the class; for copy, of the K recalled symbols).
* **Cures** (:class:`CuresConfig`): the initialisation of the recurrent weights
  (:func:`rnnlab.nn.init.init_recurrent`: default, orthogonal or identity) and the
  norm-preserving regulariser of Pascanu, Mikolov & Bengio (2013)
  (:func:`rnnlab.gradients.norm_preserving_penalty`), added to the loss with weight
  ``norm_reg`` and logged as ``norm_penalty``. The regulariser needs the per-step states
  of the recurrence, so with ``norm_reg > 0`` training runs the unrolled path
  (``RecurrentStack.step``) whatever ``model.fused`` says; evaluation always uses
  ``model.fused`` (the two paths compute the same function).

A checkpoint is one safetensors file in the format of :mod:`rnnlab.checkpoint` (kind
``"task"``): weights, optimiser, RNG and JSON metadata (config, task, position). The
language-model and classifier loaders refuse it by its kind; :func:`load_task_checkpoint`
reads it.

Shapes: values (B, T, F) float or ids (B, T) int64 in; outputs (B,) for adding, (B, C)
for temporal order, (B, L, C) for copy (L = T + 2K).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.checkpoint import (
    BEST,
    LAST,
    CheckpointKind,
    join_optimizer,
    read_checkpoint,
    register_kind,
    write_checkpoint,
)
from rnnlab.config import CuresConfig, ModelConfig, TaskConfig, TaskRunConfig
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.gradients import norm_preserving_penalty
from rnnlab.engine import run_job
from rnnlab.loop import resume_point, starting_config, with_overrides
from rnnlab.nn.init import init_gate_bias, init_recurrent
from rnnlab.nn.stack import RecurrentStack
from rnnlab.plots import read_metrics
from rnnlab.tasks import Task

TASK = "task"
"""The ``kind`` of a task checkpoint."""

__all__ = ["TASK", "CuresConfig", "TaskCheckpoint", "TaskConfig", "TaskJob", "TaskModel", "TaskRunConfig",
           "build_task_model", "load_task_checkpoint", "resume_task_config", "save_task_checkpoint", "train_task"]


DEFAULT_TIME_BUDGET = 300.0
"""Seconds a task run trains for when no stop condition is given (and it does not stop on success first)."""


# the model ----------------------------------------------------------------------------------------

class TaskModel(nn.Module):
    r"""An RNN for a long-memory task: input layer, recurrent stack, one linear output layer.

    .. math::
        e_t = x_t \ (\text{values}) \ \text{or}\ E[x_t] \ \text{or}\ \operatorname{onehot}(x_t) \ (\text{ids}),
        \qquad h_t = \text{stack}(e_t, h_{t-1}), \qquad h_0 = 0

    and the output, from the kind of the task:

    * regression (adding): :math:`\hat y = w^\top \text{drop}(h_T) + b`, (B,); loss: MSE;
    * classification (temporal order): logits :math:`W \text{drop}(h_T) + b`, (B, C); loss:
      cross entropy;
    * sequence (copy): logits at every step :math:`W \text{drop}(h_t) + b`, (B, L, C);
      loss: cross entropy averaged over all B * L steps.

    Each loss is the task's metric (:meth:`rnnlab.tasks.Task.score`) on the batch.
    """

    def __init__(self, cfg: ModelConfig, task: Task):
        super().__init__()
        self.cfg = cfg
        self.kind, self.input_kind = task.kind, task.input_kind
        self.input_size, self.output_size = task.input_size, task.output_size
        self.embedding: nn.Embedding | None = None
        if self.input_kind == "ids" and cfg.input == "embedding":
            self.embedding = nn.Embedding(self.input_size, cfg.embedding_size)
            width = cfg.embedding_size
        else:
            width = self.input_size
        self.rnn = RecurrentStack(cfg.cell, width, cfg.hidden_size, cfg.num_layers, cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, self.output_size)

    def embed(self, x: Tensor) -> Tensor:
        """Values (B, T, F) pass through (in the model's dtype); ids (B, T) -> (B, T, I)."""
        if self.input_kind == "values":
            return x.to(self.head.weight.dtype)
        if self.embedding is not None:
            return self.embedding(x)
        return F.one_hot(x, self.input_size).to(self.head.weight.dtype)

    def readout(self, out: Tensor) -> Tensor:
        """Top-layer outputs (B, T, H) -> the task's outputs: (B,), (B, C) or (B, T, C)."""
        if self.kind != "sequence":
            out = out[:, -1]  # (B, H): the state after the last step
        y = self.head(F.dropout(out, self.cfg.dropout, self.training))
        return y.squeeze(-1) if self.kind == "regression" else y

    def forward(self, x: Tensor, fused: bool | None = None) -> Tensor:
        """The outputs for inputs x (whole sequences); ``fused`` defaults to the config."""
        out, _ = self.rnn(self.embed(x), fused=self.cfg.fused if fused is None else fused)  # (B, T, H)
        return self.readout(out)

    def forward_steps(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The same outputs through ``RecurrentStack.step``, and the top layer's states h_1..h_T, each (B, H),
        as the recurrence ran through them (what :func:`~rnnlab.gradients.norm_preserving_penalty` needs)."""
        e = self.embed(x)  # (B, T, I)
        p = self.head.weight
        hs, _ = self.rnn.steps(e, self.rnn.initial_state(e.shape[0], p.device, p.dtype))  # T x (B, H)
        return self.readout(torch.stack(hs, dim=1)), hs  # outputs, T x (B, H)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The task's metric on a batch: MSE, or the mean cross entropy (per sequence or per step)."""
        if self.kind == "regression":
            return F.mse_loss(outputs, targets.to(outputs.dtype))
        return F.cross_entropy(outputs.reshape(-1, self.output_size), targets.reshape(-1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_task_model(cfg: TaskRunConfig, task: Task | None = None) -> TaskModel:
    """A fresh :class:`TaskModel` for ``cfg`` with its recurrent and gate initialisations applied (torch's
    global RNG); chrono's T_max is ``cures.chrono_max``, else the task's sequence length."""
    task = task or cfg.task.make()
    model = TaskModel(cfg.model, task)
    init_recurrent(model, cfg.cures.recurrent_init)
    return init_gate_bias(model, cfg.cures.gate_init, cfg.cures.chrono_max or task.sequence_length)  # type: ignore[return-value]


# the job ------------------------------------------------------------------------------------------

# streams of the data seed: each use of randomness has its own, so none repeats another
_VAL, _FRESH, _FIXED, _ORDER = 0, 1, 2, 3


class TaskJob:
    """The :class:`~rnnlab.loop.Job` of a long-memory task: generated batches, the task's metric."""

    def __init__(self, cfg: TaskRunConfig, model: TaskModel, task: Task, device: torch.device):
        self.cfg, self.model, self.task, self.device = cfg, model, task, device
        tk = cfg.task
        self.batch_size = cfg.train.batch_size
        self.batches_per_epoch = max(1, tk.train_size // self.batch_size)  # a fixed set drops its last part-batch
        self.unit, self.items = "ratio", "seqs"
        self.baseline = task.baseline()
        self.val_x, self.val_y = task.generate(tk.val_size, np.random.default_rng([tk.data_seed, _VAL]))
        self.train_x: np.ndarray | None = None
        self.train_y: np.ndarray | None = None
        if not tk.fresh:
            self.train_x, self.train_y = task.generate(tk.train_size, np.random.default_rng([tk.data_seed, _FIXED]))
        self._order: np.ndarray | None = None
        self._order_epoch = -1
        self._task_loss = math.nan

    def start_epoch(self, epoch: int) -> None:
        """A fixed training set's order for this epoch: a function of (data seed, epoch) alone."""
        if not self.cfg.task.fresh:
            self._order = np.random.default_rng([self.cfg.task.data_seed, _ORDER, epoch]).permutation(
                self.cfg.task.train_size)
            self._order_epoch = epoch

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Training batch ``index`` of ``epoch`` (inputs, targets): the same arrays in every run with this config."""
        tk = self.cfg.task
        if tk.fresh:
            return self.task.generate(self.batch_size, np.random.default_rng([tk.data_seed, _FRESH, epoch, index]))
        if self._order_epoch != epoch:  # resumed in the middle of an epoch
            self.start_epoch(epoch)
        assert self._order is not None and self.train_x is not None and self.train_y is not None
        idx = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.train_x[idx], self.train_y[idx]

    def train_loss(self, epoch: int, index: int) -> tuple[Tensor, int, dict[str, float]]:
        xb, yb = self.batch(epoch, index)
        x = torch.from_numpy(xb).to(self.device)  # (B, T, F) or (B, T)
        y = torch.from_numpy(yb).to(self.device)  # (B,) or (B, L)
        reg = self.cfg.cures.norm_reg
        extra: dict[str, float] = {}
        if reg > 0:
            outputs, hs = self.model.forward_steps(x)  # the unrolled path: the penalty needs every h_t
            loss = self.model.loss(outputs, y)
            penalty = norm_preserving_penalty(hs, loss)
            extra["norm_penalty"] = penalty.item()
            total = loss + reg * penalty
        else:
            loss = total = self.model.loss(self.model(x), y)
        self._task_loss = loss.item()
        return total, len(xb), extra

    def step_done(self, ok: bool) -> None:
        pass

    def train_metrics(self, loss: float) -> dict[str, float]:
        """The task's metric on the batch (without the regulariser) and its ratio to the baseline."""
        m = {"loss": self._task_loss, "ratio": self._task_loss / self.baseline}
        if self.cfg.cures.norm_reg > 0:
            m["objective"] = loss  # what was minimised: the metric plus norm_reg times the penalty
        return m

    @torch.no_grad()
    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for inputs ``x`` (N, ...), in evaluation mode, batch by batch: (N,), (N, C) or (N, L, C)."""
        was_training = self.model.training
        self.model.eval()
        chunks = []
        try:
            for s in range(0, len(x), self.cfg.train.eval_batch_size):
                xb = torch.from_numpy(x[s:s + self.cfg.train.eval_batch_size]).to(self.device)
                chunks.append(self.model(xb).double().cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(chunks)

    def evaluate(self) -> dict[str, float]:
        """The validation set's metric (``loss``), ``baseline``, ``ratio``, ``success`` and (classes) ``acc``."""
        out = self.outputs(self.val_x)
        metric = self.task.score(out, self.val_y)
        m = {"loss": metric, "baseline": self.baseline, "ratio": metric / self.baseline,
             "success": float(self.task.success(metric))}
        if self.task.kind == "classification":
            m["acc"] = float((out.argmax(-1) == self.val_y).mean())
        elif self.task.kind == "sequence":
            k = self.cfg.task.copy_len  # the K recalled symbols at the end of each sequence
            m["acc"] = float((out[:, -k:].argmax(-1) == self.val_y[:, -k:]).mean())
        return m

    def save(self, path: Path, train_state: dict[str, Any], optimizer: torch.optim.Optimizer,
             rng: dict[str, Tensor]) -> None:
        save_task_checkpoint(path, self.model, self.cfg, self.task, train_state, optimizer, rng)


# checkpoints --------------------------------------------------------------------------------------

def save_task_checkpoint(path: str | os.PathLike[str], model: TaskModel, cfg: TaskRunConfig, task: Task,
                         train_state: dict[str, Any] | None = None, optimizer: torch.optim.Optimizer | None = None,
                         rng: dict[str, Tensor] | None = None) -> None:
    """One safetensors file (atomic): weights, optimiser, RNG; JSON metadata for the config, task and position."""
    meta = {"config": cfg.to_dict(), "task": task.to_dict(), "train_state": train_state or {}}
    write_checkpoint(path, TASK, model, meta, optimizer, rng)


@dataclass
class TaskCheckpoint:
    """What a task checkpoint holds, parsed and checked (what :func:`rnnlab.loop.restore` reads)."""

    path: Path
    config: TaskRunConfig
    train_state: dict[str, Any]
    tensors: dict[str, Tensor] = field(repr=False)
    optimizer: dict[str, Any] | None = field(default=None, repr=False)

    def model_state(self) -> dict[str, Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def rng(self) -> dict[str, Tensor]:
        return {k[len("rng."):]: v for k, v in self.tensors.items() if k.startswith("rng.")}

    def optimizer_state(self) -> dict[str, Any] | None:
        return None if self.optimizer is None else join_optimizer(self.tensors, self.optimizer)

    def build_model(self) -> TaskModel:
        """The model with these weights; a :class:`CheckpointError` if they do not fit the config."""
        model = TaskModel(self.config.model, self.config.task.make())
        try:
            model.load_state_dict(self.model_state(), strict=True)
        except RuntimeError as e:
            detail = " ".join(line.strip() for line in str(e).strip().splitlines()[:3])
            raise CheckpointError(f"{self.path}: weights do not match its config ({detail[:300]})") from None
        return model


def load_task_checkpoint(path: str | os.PathLike[str], prefer: str = BEST) -> TaskCheckpoint:
    """Read and check a task checkpoint (a file, or a run folder's best, else last, checkpoint)."""
    stored = read_checkpoint(path, (TASK,), prefer)  # refuses foreign files, other formats, versions and kinds
    p = stored.path
    try:
        config = TaskRunConfig.from_dict(stored.json("config")).validate()
    except ConfigError as e:
        raise CheckpointError(f"{p}: stored config is invalid: {e}") from None
    train_state = stored.json("train_state")
    optimizer = stored.json("optimizer", None)
    if not isinstance(train_state, dict) or (optimizer is not None and not isinstance(optimizer, dict)):
        raise CheckpointError(f"{p}: training state is malformed")
    return TaskCheckpoint(p, config, train_state, stored.tensors, optimizer)


register_kind(CheckpointKind(TASK, "a long-memory task run", "rnnlab tasks run", load_task_checkpoint))


def resume_task_config(out: str | os.PathLike[str], overrides: dict[str, dict[str, Any]] | None = None
                       ) -> TaskRunConfig:
    """The config of the task run in ``out`` (from its last checkpoint), ``overrides`` applied section by
    section and ``resume`` set; :func:`train_task` then refuses overrides that change what the run learns.
    Where ``out`` holds no checkpoint yet, its config.json or else the defaults (:func:`rnnlab.loop.starting_config`)."""
    path = Path(out)
    last = resume_point(path) if path.is_dir() or not path.exists() else path
    if last is None:
        return starting_config(path, TaskRunConfig, overrides)
    return with_overrides(TaskRunConfig, load_task_checkpoint(last, prefer=LAST).config.to_dict(), overrides)


# the entry point ----------------------------------------------------------------------------------

def _last_evaluation(out: Path) -> dict[str, Any]:
    """The metrics of the run's last logged evaluation (empty if it has none)."""
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r.get("split") == "val"]
    return {k: v for k, v in rows[-1].items() if k not in ("split", "step", "epoch", "elapsed", "best")} if rows else {}


def train_task(cfg: TaskRunConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or, with ``cfg.train.resume``, continue) the task run in ``cfg.train.out``.

    A run given no stop condition (no steps, epochs or time budget) trains for
    :data:`DEFAULT_TIME_BUDGET` seconds, and says so in a warning. With
    ``task.stop_on_success`` (the default) it stops at the first evaluation that solves the task.

    Returns a summary: the task, steps, epochs, why it stopped (``success``, ``time_budget``,
    ``max_steps``, ...), the last evaluation's validation metrics (``val_loss``,
    ``val_ratio``, ``val_success``, ...), ``success`` (the last evaluation solved the task:
    metric below baseline / 10), ``steps_to_success`` and ``time_to_success_s`` (the first
    evaluation that solved it; None if none did), the baseline and the threshold, and the best
    validation metric with its success.
    """
    tc = cfg.train
    if not (tc.max_steps or tc.max_epochs or tc.time_budget):
        tc.time_budget = DEFAULT_TIME_BUDGET
        warnings.warn(f"no stop condition given: training for at most {DEFAULT_TIME_BUDGET:g} s "
                      f"(give --time-budget, --max-steps or --max-epochs to choose)", stacklevel=2)
    cfg.validate()
    return run_job(TaskRecipe(cfg), progress)


class TaskRecipe:
    """A long-memory task run on :func:`rnnlab.engine.run_job`: generated data, the task's model and summary."""

    distributed, speed_key = False, "seqs"

    def __init__(self, cfg: TaskRunConfig):
        self.cfg, self.task = cfg, cfg.task.make()
        self.stop_on_success = cfg.task.stop_on_success

    def load(self, path: Path) -> TaskCheckpoint:
        return load_task_checkpoint(path)

    def prepare(self, out: Path, ckpt: TaskCheckpoint | None, dist: Any) -> None:
        pass  # every sequence is generated from the data seed

    def build(self) -> TaskModel:
        return build_task_model(self.cfg, self.task)

    def job(self, model: TaskModel, device: torch.device, ckpt: TaskCheckpoint | None, dist: Any) -> TaskJob:
        return TaskJob(self.cfg, model, self.task, device)  # draws the validation set

    def files(self) -> dict[str, Any]:
        return {"task.json": self.task.to_dict()}

    def desc(self) -> str:
        m = self.cfg.model
        return f"{self.task.name} T={self.task.length} {m.cell} {m.num_layers}x{m.hidden_size}"

    def summary(self, out: Path, result: Any, state: Any, job: TaskJob, device: torch.device, dist: Any
                ) -> dict[str, Any]:
        task = self.task
        last = result.last_val or _last_evaluation(out)  # a resumed run that stopped at once: its last evaluation
        return {
            "task": task.name, "length": task.length, "cell": self.cfg.model.cell, "metric": task.metric,
            "baseline": task.baseline(), "success_threshold": task.success_threshold(),
            **{f"val_{k}": v for k, v in last.items()},
            "success": bool(last.get("success", 0.0)),
            "best_val_loss": state.best_val, "best_success": task.success(state.best_val),
            "steps_to_success": state.solved_step if state.solved_step >= 0 else None,
            "time_to_success_s": round(state.solved_elapsed, 2) if state.solved_step >= 0 else None,
        }
