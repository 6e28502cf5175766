"""Training a recurrent language model with truncated backpropagation through time.

:func:`train` is the one entry point the shells call. Each optimiser step reads the
next (B, T) batch of the B contiguous streams (:class:`~rnnlab.data.StreamBatcher`),
starts from the hidden state the previous batch left (detached: gradients flow back
T steps, values flow forward for ever), takes the mean next-token cross entropy,
clips the gradient and steps the optimiser. The state is reset to zeros only when
an epoch wraps around.

Every ``eval_interval`` steps the whole validation split is scored, ``last`` is
checkpointed and ``best`` is kept. The checkpoint holds everything the loop needs to
continue bit for bit: weights, optimiser, schedule, RNG, data position and the
carried state. Ctrl-C (SIGINT) or SIGTERM finishes the current step, checkpoints
and returns.
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
from typing import Any

import torch
from tqdm.auto import tqdm

from rnnlab import jsonio
from rnnlab.checkpoint import (BEST, LAST, Checkpoint, atomic_write, load_checkpoint, read_config, save_checkpoint,
                               write_json)
from rnnlab.config import OptimConfig, RunConfig, from_dict
from rnnlab.data.batches import StreamBatcher
from rnnlab.data.corpus import Corpus, build_vocab, load_corpus
from rnnlab.errors import CheckpointError, ConfigError, DataError, TrainingError
from rnnlab.evaluate import LN2, evaluate_tokens, token_metrics, unit_for
from rnnlab.nn.models import RNNLanguageModel, sequence_loss
from rnnlab.nn.stack import StackState, detach_state
from rnnlab.plots import plot_curves, read_metrics

# Config sections that a resumed run may change: where and how long it runs, not what it learns.
# (eval_interval is not among them: it drives the plateau schedule.)
RESUMABLE_CHANGES = {"max_steps", "max_epochs", "time_budget", "log_interval", "resume", "threads", "device",
                     "eval_batch_size", "out"}


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


# the run's position, saved in every checkpoint ---------------------------------------------

@dataclass
class TrainState:
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # completed passes over the training split
    batch: int = 0  # next batch index within the epoch
    elapsed: float = 0.0  # seconds of training, summed over resumes
    tokens: int = 0  # training tokens seen
    best_val: float = math.inf  # best validation loss (nats per token)
    lr_scale: float = 1.0  # plateau decay applied so far
    plateau_best: float = math.inf  # best loss among scheduled evaluations (drives the plateau schedule)
    plateau_bad: int = 0  # scheduled evaluations since the last improvement
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    last_eval_step: int = -1
    horizon: int = 0  # the cosine schedule's length in steps, fixed when the run starts (0: by time)
    train_time: float = 0.0  # seconds spent in training steps alone (for characters per second)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {name!r}") from None
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


def _rng_state() -> dict[str, torch.Tensor]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    return rng


def _set_rng_state(rng: dict[str, torch.Tensor]) -> None:
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def _check_resume_config(stored: RunConfig, given: RunConfig) -> None:
    """A resumed run learns what it learned before: only stop conditions and logging may change."""
    diffs = []
    s, g = stored.to_dict(), given.to_dict()
    for section in s:
        for key, val in s[section].items():
            if key not in RESUMABLE_CHANGES and g[section][key] != val:
                diffs.append(f"{key}: the run has {val!r}, the command gives {g[section][key]!r}")
    if diffs:
        raise ConfigError(["--resume continues the run with its own settings; only stop conditions and logging "
                           "may change"] + diffs)


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


def resume_config(out: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """The config of the run in ``out`` (from its last checkpoint), with ``overrides`` applied
    section by section and ``resume`` set. :func:`train` then refuses overrides that would
    change what the run learns."""
    base = read_config(Path(out) / LAST if Path(out).is_dir() else out, prefer=LAST).to_dict()
    for section, values in (overrides or {}).items():
        base[section].update(values)
    base["train"]["resume"] = True
    return from_dict(RunConfig, base)


def _open_run_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create run folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise CheckpointError(f"run folder {out} is not writable")


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint a run resumes from (they will be written again)."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write(path, "".join(jsonio.dumps(r) + "\n" for r in rows).encode("utf-8"))


def _load_resume(out: Path, cfg: RunConfig, corpus: Corpus) -> Checkpoint:
    if not (out / LAST).exists():
        raise CheckpointError(f"nothing to resume: {out / LAST} does not exist")
    ckpt = load_checkpoint(out / LAST)
    _check_resume_config(ckpt.config, cfg)
    split = out / "split.json"
    if split.exists():
        try:
            stored = json.loads(split.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            stored = None
        keys = [k for k in ("sha256", "train_sha256", "val_sha256", "test_sha256") if k in corpus.record]
        if stored is not None and any(stored.get(k) != corpus.record[k] for k in keys):
            raise DataError(f"the corpus has changed since the run in {out} started (its checksum differs from "
                            f"split.json); resume needs the same text")
    return ckpt


def train(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or, with ``cfg.train.resume``, continue) the run in ``cfg.train.out``.

    Returns a summary: steps, epochs, why it stopped, validation (and test) loss in
    nats and bits per token, training speed, and the run folder.
    """
    cfg.validate()
    tc = cfg.train
    out = Path(tc.out)
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if not tc.resume and ((out / LAST).exists() or (out / BEST).exists()):
        raise ConfigError(f"run folder {out} already holds a run: add --resume to continue it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")

    corpus = load_corpus(cfg.data)
    ckpt = _load_resume(out, cfg, corpus) if tc.resume else None
    vocab = ckpt.vocab if ckpt else build_vocab(corpus, cfg.data.level, cfg.data.min_count)
    train_ids = vocab.encode(corpus.train)
    val_ids = vocab.encode(corpus.val)
    test_ids = vocab.encode(corpus.test) if corpus.test else None
    for name, ids in (("validation split", val_ids), ("test split", test_ids)):
        if ids is not None and len(ids) < 2:
            raise DataError(f"the {name} has {len(ids)} token(s); scoring it needs at least 2")
    batcher = StreamBatcher(train_ids, tc.batch_size, tc.seq_len)
    bpe = batcher.batches_per_epoch

    torch.manual_seed(tc.seed)
    model = ckpt.build_model() if ckpt else RNNLanguageModel(cfg.model, len(vocab))
    model.to(device)
    optimizer = make_optimizer(model, cfg.optim)
    carry: StackState | None = None
    _open_run_folder(out)
    if ckpt:
        if ckpt.optimizer is not None:
            try:
                optimizer.load_state_dict(ckpt.optimizer_state())
            except (ValueError, KeyError, RuntimeError) as e:
                raise CheckpointError(f"{ckpt.path}: optimiser state does not fit the model ({e})") from None
        try:
            state = TrainState(**ckpt.train_state)
        except TypeError:
            raise CheckpointError(f"{ckpt.path}: training state is malformed") from None
        if cfg.optim.lr_schedule == "cosine" and not cfg.optim.decay_steps and state.horizon and \
                tc.max_steps and tc.max_steps != state.horizon:
            warnings.warn(f"the cosine schedule keeps the horizon of {state.horizon} steps set when the run started "
                          f"(the learning rate stays at its minimum after it); start a run with --decay-steps to "
                          f"choose the horizon yourself", stacklevel=2)
        c = ckpt.carry()
        carry = tuple(tuple(t.to(device) for t in layer) for layer in c) if c else None
        _set_rng_state(ckpt.rng())
        _trim_metrics(out / "metrics.jsonl", state.step)
    else:
        epochs_steps = int(math.ceil(tc.max_epochs * bpe)) if tc.max_epochs else 0
        stop_steps = min(s for s in (tc.max_steps, epochs_steps) if s) if (tc.max_steps or epochs_steps) else 0
        cosine = cfg.optim.lr_schedule == "cosine"
        state = TrainState(horizon=(cfg.optim.decay_steps or stop_steps) if cosine else 0)
        write_json(out / "vocab.json", vocab.to_dict())
        write_json(out / "split.json", corpus.record)
    write_json(out / "config.json", cfg.to_dict())  # on resume the stop conditions may differ

    unit = unit_for(cfg.data.level)
    try:
        metrics_f = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in finally)
    except OSError as e:
        raise CheckpointError(f"cannot write {out / 'metrics.jsonl'}: {e.strerror or e}") from None

    def log(row: dict[str, Any]) -> None:
        metrics_f.write(jsonio.dumps(row) + "\n")
        metrics_f.flush()

    limits = [s for s in (tc.max_steps, int(math.ceil(tc.max_epochs * bpe)) if tc.max_epochs else 0) if s]
    bar_total = min(limits) if limits else None

    def checkpoint(best: bool) -> None:
        args = dict(model=model, config=cfg, vocab=vocab, train_state=asdict(state), optimizer=optimizer,
                    carry=carry, rng=_rng_state())
        save_checkpoint(out / LAST, **args)
        if best:
            save_checkpoint(out / BEST, **args)

    def evaluate_and_save(scheduled: bool) -> dict[str, float]:
        """Score the whole validation split, checkpoint, plot. Only scheduled evaluations move the
        plateau schedule, so where a run stops (and resumes) does not change how it trains."""
        val = evaluate_tokens(model, val_ids, tc.eval_batch_size, tc.seq_len, "validation split")
        improved = val["loss"] < state.best_val
        if improved:
            state.best_val = val["loss"]
        if scheduled:
            state.plateau_bad = 0 if val["loss"] < state.plateau_best else state.plateau_bad + 1
            state.plateau_best = min(state.plateau_best, val["loss"])
            if cfg.optim.lr_schedule == "plateau" and state.plateau_bad > cfg.optim.plateau_patience:
                state.lr_scale *= cfg.optim.plateau_factor
                state.plateau_bad = 0
        state.last_eval_step = state.step
        m = token_metrics(val["loss"], cfg.data.level)
        log({"split": "val", "step": state.step, "epoch": state.epoch + state.batch / bpe,
             "elapsed": round(state.elapsed, 3), **m, "best": improved})
        checkpoint(best=improved)
        plot_curves(out / "metrics.jsonl", out / "curves.png", unit)
        return m

    params = list(model.parameters())
    bar = tqdm(total=bar_total, initial=state.step, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"{cfg.model.cell} {cfg.model.num_layers}x{cfg.model.hidden_size}")
    stopped = ""
    consecutive_bad = 0
    window = {"tokens": 0, "time": 0.0, "clipped": 0, "steps": 0}
    last_val: dict[str, float] | None = None
    model.train()
    try:
        with _StopFlag() as flag:
            while True:
                if tc.max_steps and state.step >= tc.max_steps:
                    stopped = "max_steps"
                elif tc.max_epochs and state.epoch + state.batch / bpe >= tc.max_epochs - 1e-12:
                    stopped = "max_epochs"
                elif tc.time_budget and state.elapsed >= tc.time_budget:
                    stopped = "time_budget"
                elif flag.signal is not None:
                    stopped = "interrupted"
                if stopped:
                    break
                t0 = time.perf_counter()
                if state.batch >= bpe:  # the streams wrap around: a new epoch starts from a zero state
                    state.epoch, state.batch, carry = state.epoch + 1, 0, None
                xb, yb = batcher.batch(state.batch)
                x = torch.from_numpy(xb).to(device, non_blocking=True)  # (B, T)
                y = torch.from_numpy(yb).to(device, non_blocking=True)  # (B, T)
                time_frac = state.elapsed / tc.time_budget if tc.time_budget else None
                lr = cfg.optim.lr * lr_multiplier(state.step, cfg.optim, state.horizon, time_frac) * state.lr_scale
                for g in optimizer.param_groups:
                    g["lr"] = lr
                logits, new_carry = model(x, carry if carry is not None else model.initial_state(x.shape[0]))
                loss = sequence_loss(logits, y)  # mean nats per character over (B, T)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.clip_value > 0:
                    torch.nn.utils.clip_grad_value_(params, cfg.optim.clip_value)
                max_norm = cfg.optim.clip_norm if cfg.optim.clip_norm > 0 else math.inf
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))  # the norm before clipping
                loss_v = loss.item()
                state.batch += 1
                if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
                    state.skipped += 1
                    consecutive_bad += 1
                    carry = None  # a non-finite state must not leak into the next batch
                    tqdm.write(f"step {state.step}: non-finite loss or gradient (loss {loss_v}, gradient norm "
                               f"{gnorm}); step skipped ({state.skipped} so far)")
                    log({"split": "train", "step": state.step, "skipped": True, "loss": loss_v, "grad_norm": gnorm})
                    state.elapsed += time.perf_counter() - t0
                    if consecutive_bad >= tc.max_bad_steps:
                        stopped = "non_finite"
                        break
                    continue
                consecutive_bad = 0
                optimizer.step()
                carry = detach_state(new_carry)
                state.step += 1
                state.tokens += x.numel()
                dt = time.perf_counter() - t0
                state.elapsed += dt
                state.train_time += dt
                window["tokens"] += x.numel()
                window["time"] += dt
                window["steps"] += 1
                window["clipped"] += int(cfg.optim.clip_norm > 0 and gnorm > cfg.optim.clip_norm)
                if state.step % tc.log_interval == 0 or state.step == 1:
                    m = token_metrics(loss_v, cfg.data.level)
                    speed = window["tokens"] / max(window["time"], 1e-9)
                    clipped = window["clipped"] / window["steps"]
                    log({"split": "train", "step": state.step, "epoch": state.epoch + state.batch / bpe,
                         "elapsed": round(state.elapsed, 3), **m, "lr": lr, "grad_norm": gnorm,
                         "clipped_frac": clipped, "tokens_per_sec": speed})
                    post = {"loss": f"{loss_v:.3f}", unit: f"{m[unit]:.3f}", "chars/s": f"{speed:,.0f}",
                            "gnorm": f"{gnorm:.2f}", "clip": f"{clipped:.0%}"}
                    if last_val:
                        post[f"val_{unit}"] = f"{last_val[unit]:.3f}"
                    bar.set_postfix(post, refresh=False)
                    window = {"tokens": 0, "time": 0.0, "clipped": 0, "steps": 0}
                bar.update(1)
                if state.step % tc.eval_interval == 0:
                    t1 = time.perf_counter()
                    last_val = evaluate_and_save(scheduled=True)
                    state.elapsed += time.perf_counter() - t1
            # still inside the signal guard: a second Ctrl-C here cannot lose the checkpoint
            if stopped == "interrupted":
                checkpoint(best=False)  # save first; the validation pass can wait for the resume
            elif stopped == "non_finite":
                last = out / LAST
                raise TrainingError(
                    f"the loss or gradient was non-finite for {tc.max_bad_steps} steps in a row; stopped. "
                    + (f"The last good checkpoint is {last}." if last.exists() else "No checkpoint was written yet.")
                    + " Start a new run with a lower --lr or --clip-norm.")
            elif state.last_eval_step != state.step or not (out / LAST).exists():
                last_val = evaluate_and_save(scheduled=False)
            else:
                checkpoint(best=False)
        caught = flag.signal
    finally:
        bar.close()
        metrics_f.close()

    summary: dict[str, Any] = {
        "run": str(out), "stopped": stopped, "steps": state.step, "epochs": round(state.epoch + state.batch / bpe, 4),
        "elapsed_s": round(state.elapsed, 2), "tokens_per_sec": round(state.tokens / max(state.train_time, 1e-9), 1),
        "skipped_steps": state.skipped, "parameters": model.num_parameters(), "vocab_size": len(vocab),
        "val_loss": last_val["loss"] if last_val else None, f"val_{unit}": last_val[unit] if last_val else None,
        "best_val_loss": state.best_val, f"best_val_{unit}": state.best_val / LN2,
    }
    if stopped == "interrupted":
        summary["signal"] = caught
    if test_ids is not None and (out / BEST).exists() and stopped != "interrupted":
        best = load_checkpoint(out / BEST).build_model().to(device)
        t = evaluate_tokens(best, test_ids, tc.eval_batch_size, tc.seq_len, "test split")
        summary.update({"test_loss": t["loss"], f"test_{unit}": t["bits"]})
    return summary
