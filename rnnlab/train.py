"""Training a recurrent language model with truncated backpropagation through time.

:func:`train` is the one entry point the shells call. Each optimiser step reads the
next (B, T) batch of the B contiguous streams (:class:`~rnnlab.data.StreamBatcher`),
starts from the hidden state the previous batch left (detached: gradients flow back
T steps, values flow forward for ever), takes the mean next-token cross entropy,
clips the gradient and steps the optimiser. The state is reset to zeros only when
an epoch wraps around.

The loop itself is :func:`rnnlab.loop.run_loop`, shared with every other model;
this module is the language model's :class:`LanguageModelJob` and the setup around it.
Every ``eval_interval`` steps the whole validation split is scored, ``last`` is
checkpointed and ``best`` is kept. The checkpoint holds everything the loop needs to
continue bit for bit: weights, optimiser, schedule, RNG, data position and the
carried state. Ctrl-C (SIGINT) or SIGTERM finishes the current step, checkpoints
and returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnlab.checkpoint import BEST, LANGUAGE_MODEL, LAST, Checkpoint, load_checkpoint, read_config, save_checkpoint
from rnnlab.config import RunConfig
from rnnlab.data.batches import StreamBatcher
from rnnlab.data.corpus import build_vocab, load_corpus
from rnnlab.data.tokens import map_corpus, wants_mmap
from rnnlab.data.vocab import Vocab
from rnnlab.distributed import SINGLE, Dist, from_env, shutdown, world_size
from rnnlab.errors import CheckpointError, ConfigError, DataError
from rnnlab.evaluate import LN2, evaluate_tokens, token_metrics, unit_for
from rnnlab.engine import run_job
from rnnlab.loop import (
    RESUMABLE_CHANGES,
    LoopResult,
    TrainState,
    lr_multiplier,
    make_optimizer,
    resolve_device,
    resume_point,
    starting_config,
    with_overrides,
)
from rnnlab.feeding import make_feeding
from rnnlab.gradients import norm_preserving_penalty
from rnnlab.nn.init import init_gate_bias, init_recurrent
from rnnlab.nn.models import RNNLanguageModel, sequence_loss
from rnnlab.nn.stack import StackState, detach_state

__all__ = ["RESUMABLE_CHANGES", "LanguageModelJob", "TrainState", "lr_multiplier", "make_optimizer", "resume_config",
           "train"]


class LanguageModelJob:
    """Truncated BPTT over B contiguous streams: the :class:`~rnnlab.loop.Job` of a language model.

    Batch i is the (B, T) window i of every stream (:class:`~rnnlab.data.StreamBatcher`);
    the model starts from the state batch i - 1 left, detached, so gradients flow back
    T steps and values flow forward for ever. The state is reset to zeros when an epoch
    starts, and after a skipped step (a non-finite state must not leak on).

    In a distributed run (``dist``) this rank trains rows ``dist.rows(B)`` of every
    batch and carries their state; a checkpoint gathers the state of all B streams.
    """

    def __init__(self, cfg: RunConfig, model: RNNLanguageModel, vocab: Vocab, train_ids: np.ndarray,
                 val_ids: np.ndarray, device: torch.device, carry: StackState | None = None, dist: Dist = SINGLE):
        self.cfg, self.model, self.vocab, self.device = cfg, model, vocab, device
        self.dist, self.rows = dist, dist.rows(cfg.train.batch_size)
        self.val_ids = val_ids
        self.batcher = StreamBatcher(train_ids, cfg.train.batch_size, cfg.train.seq_len)
        self.batches_per_epoch = self.batcher.batches_per_epoch
        self.unit = unit_for(cfg.data.level)
        self.items = "chars" if cfg.data.level == "char" else "words"
        self.carry = carry
        self._new_carry: StackState | None = None
        self._nll: float | None = None  # the cross entropy alone, when a penalty is added to it
        # what the network reads at each step (rnnlab.feeding); teacher forcing keeps the fused fast path below
        self.feeding = make_feeding(cfg.feeding.feeding, model=model, **cfg.feeding.options())
        self.teacher = cfg.feeding.feeding == "teacher"
        synchronise = getattr(self.feeding, "synchronise", None)  # a strategy with parameters of its own
        if dist.enabled and synchronise is not None:
            synchronise(dist.average_, dist.broadcast_)

    def start_epoch(self, epoch: int) -> None:
        if epoch > 0:  # the streams wrap around: a new epoch starts from a zero state
            self.carry = None

    def train_loss(self, epoch: int, index: int) -> tuple[torch.Tensor, int, dict[str, float]]:
        xb, yb = self.batcher.batch(index)
        xb, yb = xb[self.rows], yb[self.rows]  # this rank's streams (all of them in one process)
        x = torch.from_numpy(xb).to(self.device, non_blocking=True)  # (B, T)
        y = torch.from_numpy(yb).to(self.device, non_blocking=True)  # (B, T)
        state = self.carry if self.carry is not None else self.model.initial_state(x.shape[0])
        reg = self.cfg.cures.norm_reg
        if not self.teacher:  # a feeding strategy: the loop does not know which one
            r = self.feeding.loss(self.model, x, y, state, step=epoch * self.batches_per_epoch + index)
            self._new_carry, self._nll = r.state, r.nll
            return r.loss, x.numel(), r.logs
        if reg <= 0:
            logits, self._new_carry = self.model(x, state)  # (B, T, V)
            self._nll = None
            return sequence_loss(logits, y), x.numel(), {}  # mean nats per token over (B, T)
        # the norm-preserving regulariser needs every h_t the recurrence ran through: step by step
        hs, self._new_carry = self.model.rnn.steps(self.model.embed(x), state)  # T x (B, H)
        out = F.dropout(torch.stack(hs, dim=1), self.model.cfg.dropout, self.model.training)  # (B, T, H)
        nll = sequence_loss(self.model.decoder(out), y)
        penalty = norm_preserving_penalty(hs, nll)
        self._nll = nll.item()
        return nll + reg * penalty, x.numel(), {"norm_penalty": penalty.item()}

    def step_done(self, ok: bool) -> None:
        self.carry = detach_state(self._new_carry) if ok else None
        self._new_carry = None

    def train_metrics(self, loss: float) -> dict[str, float]:
        if self._nll is not None:  # the loss minimised holds the penalty; report the model's fit alone
            nll = self.dist.mean_values({"nll": self._nll})["nll"]  # every rank's, as the loss is
            return {**token_metrics(nll, self.cfg.data.level), "objective": loss}
        return token_metrics(loss, self.cfg.data.level)

    def evaluate(self) -> dict[str, float]:
        tc = self.cfg.train
        val = evaluate_tokens(self.model, self.val_ids, tc.eval_batch_size, tc.seq_len, "validation split")
        return token_metrics(val["loss"], self.cfg.data.level)

    def save(self, path: Path, train_state: dict[str, Any], optimizer: torch.optim.Optimizer,
             rng: dict[str, torch.Tensor]) -> None:
        carry = self.carry
        if self.dist.enabled and carry is not None:  # every rank's streams, in stream order
            carry = tuple(tuple(self.dist.gather_rows(t) for t in layer) for layer in carry)
        if self.dist.is_main:
            save_checkpoint(path, model=self.model, config=self.cfg, vocab=self.vocab, train_state=train_state,
                            optimizer=optimizer, carry=carry, rng=rng,
                            feeding=None if self.teacher else self.feeding.state_dict())


def resume_config(out: str | Path, overrides: dict[str, dict[str, Any]] | None = None, kind: type | None = None
                  ) -> Any:
    """The config of the run in ``out`` (from its last checkpoint: a :class:`RunConfig`, or a
    classifier's config for a classifier run), with ``overrides`` applied section by section and
    ``resume`` set. :func:`train` then refuses overrides that would change what the run learns.
    Where ``out`` holds no checkpoint yet, the run's config.json (a run killed before its first
    checkpoint) or else ``kind``'s defaults (a :class:`RunConfig`'s) take its place."""
    path = Path(out)
    last = resume_point(path) if path.is_dir() or not path.exists() else path
    if last is None:  # no checkpoint yet: the run starts, from the settings of its config.json if it has one
        return starting_config(path, kind or RunConfig, overrides)
    stored = read_config(last, prefer=LAST)
    return with_overrides(type(stored), stored.to_dict(), overrides)


def _recorded_split(out: Path) -> dict[str, Any] | None:
    """The run's ``split.json`` (None if it has none); a damaged one is refused, as the corpus cannot be checked."""
    p = out / "split.json"
    if not p.exists():
        return None
    try:
        stored = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{p} is damaged (not a JSON object), so the corpus cannot be checked against the "
                              f"run; restore it or start a new run")
    return stored


def check_same_corpus(out: Path, record: dict[str, Any], needs: str = "resume") -> None:
    """Refuse a corpus whose checksums differ from those the run in ``out`` recorded in split.json."""
    stored = _recorded_split(out)
    keys = [k for k in ("sha256", "train_sha256", "val_sha256", "test_sha256") if k in record]
    if stored is not None and any(stored.get(k) != record[k] for k in keys):
        raise DataError(f"the corpus has changed since the run in {out} started (its checksum differs from "
                        f"split.json); {needs} needs the same text")


def _load_ids(cfg: RunConfig, out: Path, ckpt: Checkpoint | None, dist: Dist
              ) -> tuple[Vocab, np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """The vocabulary, the token ids of each split and the split's record: read into memory, or
    through a memory map of a token file in the run folder (:mod:`rnnlab.data.tokens`)."""
    if wants_mmap(cfg.data):
        stored = _recorded_split(out) if ckpt else None
        expect = stored.get("sha256") if stored else None
        m = None
        if dist.is_main:  # rank 0 writes the token file; the others then find it ready
            m = map_corpus(cfg.data, out, ckpt.vocab if ckpt else None, expect)
        dist.barrier()
        if m is None:
            m = map_corpus(cfg.data, out, ckpt.vocab if ckpt else None, expect)
        return m.vocab, m.train, m.val, None, m.record
    corpus = load_corpus(cfg.data)
    if ckpt:
        check_same_corpus(out, corpus.record)
    vocab = ckpt.vocab if ckpt else build_vocab(corpus, cfg.data.level, cfg.data.min_count)
    test = vocab.encode(corpus.test) if corpus.test else None
    return vocab, vocab.encode(corpus.train), vocab.encode(corpus.val), test, corpus.record


def train(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or, with ``cfg.train.resume``, continue) the run in ``cfg.train.out``.

    Returns a summary: steps, epochs, why it stopped, validation (and test) loss in
    nats and bits per token, training speed, and the run folder.
    """
    cfg = cfg.validate().with_absolute_paths()  # config.json then finds the data from any folder
    tc = cfg.train
    if cfg.feeding.feeding != "professor":  # the strategy's options (a schedule's k, ...) checked before any file
        make_feeding(cfg.feeding.feeding, **cfg.feeding.options())  # professor's need the model; config checks them
    folder = cfg.data.data
    if folder and Path(folder).is_dir() and Path(tc.out).resolve().is_relative_to(Path(folder).resolve()):
        raise ConfigError(f"--out {tc.out} lies inside the corpus folder {folder}: the run's own files would be read "
                          "as text; put the run elsewhere")
    world = world_size()  # torchrun's processes: check what they need before they join
    if world > 1:
        if tc.batch_size % world:
            raise ConfigError(f"--batch-size {tc.batch_size} must be a multiple of the {world} processes "
                              f"(each trains its own batch_size / {world} streams)")
    dist, device = from_env(resolve_device(tc.device))
    try:
        summary = run_job(LanguageModelRecipe(cfg), progress, dist, device)
    finally:
        shutdown(dist)
    if dist.enabled:
        summary.update({"world_size": dist.world, "rank": dist.rank})
    return summary


class LanguageModelRecipe:
    """A language model's run on :func:`rnnlab.engine.run_job`: a corpus, its vocabulary and token ids, B streams
    whose state is carried (restored per rank from the checkpoint), the test split scored at the end."""

    distributed, stop_on_success, speed_key = True, False, "tokens"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def load(self, path: Path) -> Checkpoint:
        return load_checkpoint(path).expect(LANGUAGE_MODEL)

    def prepare(self, out: Path, ckpt: Checkpoint | None, dist: Dist) -> None:
        self.vocab, self.train_ids, self.val_ids, self.test_ids, self.record = _load_ids(self.cfg, out, ckpt, dist)
        for name, ids in (("validation split", self.val_ids), ("test split", self.test_ids)):
            if ids is not None and len(ids) < 2:
                raise DataError(f"the {name} has {len(ids)} token(s); scoring it needs at least 2")

    def build(self) -> RNNLanguageModel:
        cfg = self.cfg
        model = init_recurrent(RNNLanguageModel(cfg.model, len(self.vocab)), cfg.cures.recurrent_init)
        return init_gate_bias(model, cfg.cures.gate_init, cfg.cures.chrono_max or cfg.train.seq_len)

    def job(self, model: RNNLanguageModel, device: torch.device, ckpt: Checkpoint | None, dist: Dist
            ) -> LanguageModelJob:
        tc, carry = self.cfg.train, None
        if ckpt:
            c = ckpt.carry()  # the state of all B streams: this rank takes its own
            if c and c[0][0].shape[0] != tc.batch_size:
                raise CheckpointError(f"{ckpt.path}: the carried state is for {c[0][0].shape[0]} streams, the run "
                                      f"has batch_size {tc.batch_size}; the file is corrupt")
            rows = dist.rows(tc.batch_size)
            carry = tuple(tuple(t[rows].to(device) for t in layer) for layer in c) if c else None
        job = LanguageModelJob(self.cfg, model, self.vocab, self.train_ids, self.val_ids, device, carry, dist)
        if ckpt and ckpt.feeding_state() is not None:
            job.feeding.load_state_dict(ckpt.feeding_state())  # professor forcing's discriminator, where it stood
        return job

    def files(self) -> dict[str, Any]:
        return {"vocab.json": self.vocab.to_dict(), "split.json": self.record}

    def desc(self) -> str:
        m = self.cfg.model
        return f"{m.cell} {m.num_layers}x{m.hidden_size}"

    def summary(self, out: Path, result: LoopResult, state: TrainState, job: LanguageModelJob,
                device: torch.device, dist: Dist) -> dict[str, Any]:
        unit, last_val = job.unit, result.last_val
        dist.barrier()  # rank 0's last checkpoint is on disk before anyone reads it
        summary: dict[str, Any] = {
            "vocab_size": len(self.vocab),
            "val_loss": last_val["loss"] if last_val else None, f"val_{unit}": last_val[unit] if last_val else None,
            "best_val_loss": state.best_val, f"best_val_{unit}": state.best_val / LN2,
        }
        if self.test_ids is not None and dist.is_main and (out / BEST).exists() and result.stopped != "interrupted":
            best = load_checkpoint(out / BEST).build_model().to(device)
            t = evaluate_tokens(best, self.test_ids, self.cfg.train.eval_batch_size, self.cfg.train.seq_len,
                                "test split")
            summary.update({"test_loss": t["loss"], f"test_{unit}": t["bits"]})
        return summary
