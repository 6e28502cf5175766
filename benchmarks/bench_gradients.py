"""Vanishing and exploding gradients, their cures, and BPTT by hand.

1. **Success table.** For T in {25, 50, 100, 200, 400} and four variants, the adding and
   copy-memory tasks, each run trained for a fixed time budget (``--budget`` seconds,
   default 60) by :func:`rnnlab.task_train.train_task`, one ``TaskRunConfig`` per run built
   as ``rnnlab tasks run`` builds it (the task runner's defaults: 1x128, one-hot input,
   Adam 1e-3, batch 50, fresh batches, 1000 validation sequences; ``max_steps`` 0, so the
   budget alone stops a run). The variants:

   * ``elman`` -- the vanilla tanh RNN with no cure at all (``--clip-norm 0``, PyTorch's
     uniform initialisation, no regulariser);
   * ``elman+cures`` -- the same cell with clipping to global norm 1, orthogonal
     recurrent initialisation and the norm-preserving regulariser of Pascanu et al.
     (2013), its weight ``--norm-reg`` (default 0.005) given for a sequence of 100 steps
     and scaled by 99 / (L - 1) for a sequence of L steps (L = T for adding, T + 2K for
     copy), because the regulariser sums L - 1 terms;
   * ``lstm`` and ``gru`` -- the task runner's defaults (clipping to norm 1 included).

   Each run records the final and best validation metric (MSE for adding, nats per step
   for copy), the trivial baseline, their ratio, success (metric < baseline / 10, at the
   last evaluation) and the optimiser steps that fitted in the budget.
2. **Gradient per time step.** (a) ``gradient_report`` for elman, lstm and gru at
   initialisation (one-hot language models of ``--lm-hidden`` units, random tokens);
   (b) the same three cells trained as character language models for ``--lm-steps``
   steps by :func:`rnnlab.train.train` on tiny-shakespeare (``--text``; skipped, with the
   reason, when the file is missing), then ``gradient_norms_per_step`` on their
   validation text, next to the curve of the same untrained model on the same text;
   (c) an exploding-gradient run: an Elman adding-task model whose recurrent weights are
   multiplied by ``--gain`` (default 3) at initialisation, trained with SGD with and
   without clipping to norm 1: the per-step curve at initialisation (gain 1 against
   ``--gain``), the pre-clip gradient norm of every training step, whether the loss went
   non-finite, the final validation metric.
3. **Hand BPTT's speed.** One forward and backward pass of :mod:`rnnlab.scratch` (NumPy,
   float64) against the PyTorch ``RNNLanguageModel`` (elman, one-hot, one layer, fused
   path, float32 and float64) with the same weights and sizes (H = 100, T = 25, V = 65,
   B = 1 and B = 32): steps per second, timed interleaved in one run (median over
   ``--repeats``), and the ratio torch / scratch. Before timing, the two are checked to
   give the same loss and gradients (float64).

The default run takes about 50 minutes on a 2-core machine (40 task runs of 60 s in
part 1, a few minutes for parts 2 and 3); ``--quick`` is a smoke test of a minute or two
(2 s budgets, T = 25, short runs) whose numbers mean nothing.

    .venv/bin/python benchmarks/bench_gradients.py                      # about 50 minutes
    .venv/bin/python benchmarks/bench_gradients.py --parts table --tasks adding --lengths 100 200
    .venv/bin/python benchmarks/bench_gradients.py --parts curves speed
    .venv/bin/python benchmarks/bench_gradients.py --quick              # smoke test

Writes ``benchmarks/results/gradients.json`` and ``gradients.md`` and, beside them, the
plots ``gradients_init.png``, ``gradients_trained.png`` and ``gradients_exploding.png``
(``--quick``: ``gradients_quick.*``; ``--out PATH.json`` puts all of them beside PATH,
named after its stem).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnlab import jsonio
from rnnlab import scratch as hand
from rnnlab import task_train
from rnnlab.checkpoint import load_model
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from rnnlab.data.corpus import load_corpus
from rnnlab.errors import TrainingError
from rnnlab.gradients import (gradient_norms_per_step, gradient_report, plot_gradient_norms, recurrent_spectra,
                              spectral_radius)
from rnnlab.nn import RNNLanguageModel, sequence_loss
from rnnlab.nn.init import recurrent_cells
from rnnlab.task_train import TaskConfig, TaskRunConfig, build_task_model, train_task
from rnnlab.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
CELLS = ("elman", "lstm", "gru")
VARIANTS = ("elman", "elman+cures", "lstm", "gru")
TASKS = ("adding", "copy")
LENGTHS = (25, 50, 100, 200, 400)
VOCAB = 65  # tiny-shakespeare's character set, for the speed test and the random-token curves

# what --quick changes (an option given on the command line wins)
QUICK = {"budget": 2.0, "lengths": [25], "lm_steps": 20, "grad_length": 50, "explode_steps": 40,
         "explode_length": 50, "speed_seconds": 0.3, "repeats": 2}
DEFAULTS = {"budget": 60.0, "lengths": list(LENGTHS), "lm_steps": 1000, "grad_length": 100, "explode_steps": 500,
            "explode_length": 100, "speed_seconds": 2.0, "repeats": 5}


def _fmt(v: Any, spec: str = ".3g") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


# ---------------------------------------------------------------------------------------------
# 1. the success table


def task_overrides(task: str, variant: str, length: int, budget: float, norm_reg: float, seed: int,
                   out: Path) -> dict[str, dict[str, Any]]:
    """The options of one run, section by section, over the task runner's defaults (as ``rnnlab tasks run``)."""
    cell = "elman" if variant.startswith("elman") else variant
    given: dict[str, dict[str, Any]] = {
        "task": {"name": task, "length": length},
        "model": {"cell": cell},
        "cures": {},
        "optim": {},
        "train": {"max_steps": 0, "time_budget": budget, "seed": seed, "out": str(out)},
    }
    if variant == "elman":
        given["optim"]["clip_norm"] = 0.0  # the vanilla RNN: no cure at all
    elif variant == "elman+cures":
        seq = TaskConfig(name=task, length=length).make()  # type: ignore[arg-type]
        steps = seq.sequence_length if task == "copy" else length  # type: ignore[attr-defined]
        given["optim"]["clip_norm"] = 1.0
        given["cures"] = {"recurrent_init": "orthogonal", "norm_reg": norm_reg * 99 / max(steps - 1, 1)}
    return given


def build_task_config(given: dict[str, dict[str, Any]]) -> TaskRunConfig:
    base = TaskRunConfig().to_dict()
    for section, values in given.items():
        base[section].update(values)
    return TaskRunConfig.from_dict(base).validate()


def command_line(given: dict[str, dict[str, Any]]) -> str:
    """The ``rnnlab tasks run`` command that builds the same config."""
    opts = [f"--{k.replace('_', '-')} {v}" for section, values in given.items() for k, v in values.items()
            if (section, k) not in (("task", "name"),)]
    return f"rnnlab tasks run {given['task']['name']} " + " ".join(opts)


def task_run(task: str, variant: str, length: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{task}-{variant}-{length}"
    given = task_overrides(task, variant, length, args.budget, args.norm_reg, args.seed, out)
    cfg = build_task_config(given)
    row: dict[str, Any] = {"task": task, "variant": variant, "length": length, "budget_s": args.budget,
                           "clip_norm": cfg.optim.clip_norm, "recurrent_init": cfg.cures.recurrent_init,
                           "norm_reg": cfg.cures.norm_reg}
    try:
        s = train_task(cfg, progress=False)
    except TrainingError as e:  # the loss stayed non-finite: the run failed, it is not an error of the benchmark
        row.update({"stopped": "non_finite", "error": str(e), "final": None, "best": None,
                    "baseline": cfg.task.make().baseline(), "ratio": None, "success": False, "best_success": False,
                    "steps": _last_step(out)})
    else:
        row.update({"stopped": s["stopped"], "final": s.get("val_loss"), "best": s["best_val_loss"],
                    "baseline": s["baseline"], "ratio": s.get("val_ratio"), "success": s["success"],
                    "best_success": s["best_success"], "acc": s.get("val_acc"), "steps": s["steps"],
                    "elapsed_s": s["elapsed_s"], "seqs_per_sec": s["seqs_per_sec"],
                    "skipped_steps": s["skipped_steps"], "metric": s["metric"]})
    row["command"] = command_line(given)
    row["config"] = cfg.to_dict()
    print(jsonio.dumps({k: v for k, v in row.items() if k not in ("config", "command")}), flush=True)
    return row


def _metrics(out: Path) -> list[dict[str, Any]]:
    p = out / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def _last_step(out: Path) -> int:
    return max((int(r.get("step", 0)) for r in _metrics(out)), default=0)


# ---------------------------------------------------------------------------------------------
# 2. gradient per time step: at initialisation, after training, and an exploding run


def lm_config(cell: str, text: Path, args: argparse.Namespace, out: Path) -> RunConfig:
    return RunConfig(data=DataConfig(data=str(text)),
                     model=ModelConfig(cell=cell, hidden_size=args.lm_hidden, num_layers=1, dropout=0.0,  # type: ignore[arg-type]
                                       input="onehot"),
                     optim=OptimConfig(),
                     train=TrainConfig(batch_size=32, seq_len=100, max_steps=args.lm_steps,
                                       eval_interval=args.lm_steps, log_interval=50, seed=args.seed,
                                       out=str(out))).validate()


def trained_curves(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Train one small character LM per cell; the per-step curve on validation text, before and after."""
    if not args.text.is_file():
        return {"skipped": f"{args.text} is missing (the shared tiny-shakespeare text)"}
    t_len, b = args.grad_length, args.grad_batch
    report: dict[str, Any] = {"config": {"length": t_len, "loss": "last", "batch_size": b,
                                         "hidden_size": args.lm_hidden, "lm_steps": args.lm_steps,
                                         "text": str(args.text)},
                              "steps": list(range(1, t_len + 1)), "cells": {}, "before": {}, "training": {}}
    for cell in CELLS:
        cfg = lm_config(cell, args.text, args, tmp / f"lm-{cell}")
        s = train(cfg, progress=False)
        model, vocab, ckpt = load_model(cfg.train.out)
        ids = vocab.encode(load_corpus(ckpt.config.data).val)
        need = b * (t_len + 1)
        if len(ids) < need:
            return {"skipped": f"the validation split has {len(ids)} characters; {need} needed"}
        rows = torch.from_numpy(np.asarray(ids[:need], dtype=np.int64).reshape(b, t_len + 1))  # (B, T+1)
        x, y = rows[:, :-1], rows[:, 1:]
        norms = gradient_norms_per_step(model.double(), x, loss="last", targets=y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)  # the very initialisation train() started from
            fresh = RNNLanguageModel(cfg.model, len(vocab)).double()
        before = gradient_norms_per_step(fresh, x, loss="last", targets=y)
        report["cells"][cell] = {"norms": [float(v) for v in norms], "spectra": recurrent_spectra(model),
                                 "first_over_last": float(norms[0] / norms[-1]) if norms[-1] > 0 else math.nan}
        report["before"][cell] = {"norms": [float(v) for v in before], "spectra": recurrent_spectra(fresh),
                                  "first_over_last": float(before[0] / before[-1]) if before[-1] > 0 else math.nan}
        report["training"][cell] = {k: v for k, v in s.items() if k != "run"}
        print(jsonio.dumps({"lm": cell, "steps": s["steps"], "val_bpc": s.get("val_bpc"),
                            "first_over_last_before": report["before"][cell]["first_over_last"],
                            "first_over_last_after": report["cells"][cell]["first_over_last"]}), flush=True)
    return report


@contextlib.contextmanager
def recurrent_gain(gain: float) -> Iterator[None]:
    """While active, every task model that ``train_task`` builds has its ``weight_hh`` multiplied by ``gain``."""
    original = task_train.build_task_model

    def build(cfg: TaskRunConfig, task: Any = None) -> Any:
        model = original(cfg, task)
        with torch.no_grad():
            for cell in recurrent_cells(model):
                cell.weight_hh.mul_(gain)
        return model

    with mock.patch.object(task_train, "build_task_model", build):
        yield


def init_task_curve(cfg: TaskRunConfig, gain: float, batch: int, seed: int) -> dict[str, Any]:
    """The per-step curve of the adding task's MSE at initialisation (the model ``train_task`` would start from)."""
    task = cfg.task.make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_task_model(cfg, task)
    with torch.no_grad():
        for cell in recurrent_cells(model):
            cell.weight_hh.mul_(gain)
    model = model.double()
    xb, yb = task.generate(batch, np.random.default_rng(seed))
    x = model.embed(torch.from_numpy(xb))  # (B, T, 2)
    y = torch.from_numpy(yb).double()  # (B,)

    def mse(out: torch.Tensor) -> torch.Tensor:  # top-layer outputs (B, T, H) -> per-example loss (B,)
        return (model.head(out[:, -1]).squeeze(-1) - y) ** 2

    norms = gradient_norms_per_step(model.rnn, x, loss_fn=mse)
    return {"gain": gain, "norms": [float(v) for v in norms],
            "radius": spectral_radius(model.rnn.cells[0].weight_hh),
            "first_over_last": float(norms[0] / norms[-1]) if norms[-1] > 0 else math.nan}


def exploding(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Elman on the adding task with a large recurrent gain, trained by SGD with and without clipping."""
    res: dict[str, Any] = {"config": {"task": "adding", "length": args.explode_length, "gain": args.gain,
                                      "optimizer": "sgd", "lr": args.explode_lr, "steps": args.explode_steps,
                                      "clip_norms": [0.0, 1.0]}, "runs": {}}
    curves = []
    for clip in (0.0, 1.0):
        out = tmp / f"explode-clip{clip:g}"
        given = {"task": {"name": "adding", "length": args.explode_length}, "model": {"cell": "elman"},
                 "cures": {}, "optim": {"optimizer": "sgd", "lr": args.explode_lr, "clip_norm": clip,
                                        "lr_schedule": "constant"},
                 "train": {"max_steps": args.explode_steps, "eval_interval": max(1, args.explode_steps // 5),
                           "log_interval": 1, "seed": args.seed, "out": str(out)}}
        cfg = build_task_config(given)
        if not curves:
            curves = [init_task_curve(cfg, g, args.grad_batch, args.seed) for g in (1.0, args.gain)]
        error = None
        with recurrent_gain(args.gain):
            try:
                s: dict[str, Any] | None = train_task(cfg, progress=False)
            except TrainingError as e:
                s, error = None, str(e)
        rows = [r for r in _metrics(out) if r.get("split") == "train"]
        val = [r for r in _metrics(out) if r.get("split") == "val"]
        gn = [math.nan if r.get("grad_norm") is None else float(r["grad_norm"]) for r in rows]
        losses = [math.nan if r.get("loss") is None else float(r["loss"]) for r in rows]
        finite_gn = [v for v in gn if math.isfinite(v)]
        run = {"clip_norm": clip, "command": command_line(given) + f"  (weight_hh x {args.gain:g} at init)",
               "stopped": "non_finite" if s is None else s["stopped"], "error": error,
               "steps": _last_step(out) if s is None else s["steps"],
               "skipped_steps": sum(1 for r in rows if r.get("skipped")) if s is None else s["skipped_steps"],
               "went_non_finite": any(not math.isfinite(v) for v in gn + losses),
               "final": None if s is None else s.get("val_loss"), "best": None if s is None else s["best_val_loss"],
               "baseline": 1 / 6, "success": bool(s and s["success"]),
               "grad_norm_max": max(finite_gn, default=math.nan),
               "grad_norm_median": statistics.median(finite_gn) if finite_gn else math.nan,
               "clipped_frac": (sum(1 for v in finite_gn if v > clip) / len(finite_gn)) if clip and finite_gn else 0.0,
               "train_steps": [int(r["step"]) for r in rows], "grad_norms": gn, "train_losses": losses,
               "val": [{"step": r.get("step"), "loss": r.get("loss")} for r in val]}
        res["runs"][f"clip {clip:g}" if clip else "no clipping"] = run
        print(jsonio.dumps({k: v for k, v in run.items() if k not in ("train_steps", "grad_norms", "train_losses",
                                                                        "val", "command", "error")}), flush=True)
    res["init"] = curves
    return res


def plot_exploding(res: dict[str, Any], path: Path) -> None:
    """Three panels: the per-step curve at initialisation; pre-clip gradient norms and training loss per step."""
    fig = Figure(figsize=(15, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax0, ax1, ax2 = fig.subplots(1, 3)
    for c in res["init"]:
        y = np.array(c["norms"], dtype=np.float64)
        y[~np.isfinite(y) | (y <= 0)] = np.nan
        ax0.plot(np.arange(1, len(y) + 1), y, label=f"gain {c['gain']:g} (ρ(W_hh) = {c['radius']:.2f})")
    ax0.set_title("at initialisation: ‖∂L/∂h_t‖ (adding, loss at T)", fontsize=10)
    ax0.set_xlabel("time step t")
    for name, run in res["runs"].items():
        steps = np.array(run["train_steps"], dtype=np.float64)
        for ax, key in ((ax1, "grad_norms"), (ax2, "train_losses")):
            y = np.array(run[key], dtype=np.float64)
            y[~np.isfinite(y) | (y <= 0)] = np.nan
            ax.plot(steps, y, label=name, linewidth=1)
    ax1.set_title(f"pre-clip global gradient norm (SGD, gain {res['config']['gain']:g})", fontsize=10)
    ax2.set_title("training MSE (baseline 1/6 dotted)", fontsize=10)
    ax2.axhline(1 / 6, linestyle=":", color="gray")
    for ax in (ax1, ax2):
        ax.set_xlabel("training step")
    for ax in (ax0, ax1, ax2):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# ---------------------------------------------------------------------------------------------
# 3. hand BPTT against the PyTorch Elman model


def steps_per_second(fn: Callable[[], Any], seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 3:
            return n / elapsed


def scratch_step(params: hand.Params, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    """One forward and backward pass of the hand-written model."""
    def step() -> None:
        _, cache = hand.forward(params, x, y)
        hand.backward(cache)
    return step


def torch_step(model: RNNLanguageModel, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One forward and backward pass of the PyTorch model (gradients reset first, as a training step does)."""
    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)  # (B, T, V)
        sequence_loss(logits, y).backward()
    return step


def speed(args: argparse.Namespace) -> dict[str, Any]:
    h, t_len, v = args.speed_hidden, args.speed_length, VOCAB
    params = hand.init_params(v, h, np.random.default_rng(args.seed))
    cfg = ModelConfig(cell="elman", hidden_size=h, num_layers=1, dropout=0.0, input="onehot")
    state = {k: torch.from_numpy(a) for k, a in hand.to_torch_state_dict(params).items()}
    models = {}
    for name, dtype in (("torch_float32", torch.float32), ("torch_float64", torch.float64)):
        m = RNNLanguageModel(cfg, v).to(dtype)
        m.load_state_dict(state)
        models[name] = m
    res: dict[str, Any] = {"config": {"hidden_size": h, "length": t_len, "vocab_size": v, "fused": cfg.fused,
                                      "seconds": args.speed_seconds, "repeats": args.repeats,
                                      "torch_threads": torch.get_num_threads()}, "rows": []}
    for b in args.speed_batches:
        rng = np.random.default_rng(args.seed + b)
        x_np, y_np = rng.integers(0, v, (b, t_len)), rng.integers(0, v, (b, t_len))  # (B, T) each
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

        # the same function: float64 loss and gradients of the two implementations
        loss_np, cache = hand.forward(params, x_np, y_np)
        grads = hand.backward(cache)
        m64 = models["torch_float64"]
        m64.zero_grad(set_to_none=True)
        loss_t = sequence_loss(m64(x)[0], y)
        loss_t.backward()
        named = dict(m64.named_parameters())
        grad_diff = max(float(np.abs(named[hand.TORCH_KEYS[n]].grad.numpy() - grads[n]).max())  # type: ignore[union-attr]
                        for n in hand.PARAM_NAMES)
        fns = {"scratch": scratch_step(params, x_np, y_np), **{k: torch_step(m, x, y) for k, m in models.items()}}
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):  # interleaved: A B C A B C ...
            for k, fn in fns.items():
                samples[k].append(steps_per_second(fn, args.speed_seconds))
        med = {k: statistics.median(s) for k, s in samples.items()}
        row = {"batch_size": b, "steps_per_sec": med, "chars_per_sec": {k: s * b * t_len for k, s in med.items()},
               "samples": samples,
               "ratio_torch32_over_scratch": med["torch_float32"] / med["scratch"],
               "ratio_torch64_over_scratch": med["torch_float64"] / med["scratch"],
               "loss_abs_diff": abs(loss_np - loss_t.item()), "grad_max_abs_diff": grad_diff}
        res["rows"].append(row)
        print(jsonio.dumps({k: v for k, v in row.items() if k not in ("samples", "chars_per_sec")}), flush=True)
    return res


# ---------------------------------------------------------------------------------------------
# the report


def markdown(res: dict[str, Any], names: dict[str, str]) -> str:
    c = res["config"]
    md = [f"# Vanishing and exploding gradients{' (quick smoke test, not a measurement)' if c['quick'] else ''}\n",
          f"{c['date']} on {c['machine']}, torch {c['torch']}, numpy {c['numpy']}, {c['threads']} torch threads; "
          f"load average at start {c['load_average_at_start'][0]:.2f}. Options in the JSON's config.\n"]
    if "table" in res:
        t = res["table"]
        md += [f"## 1. Success within {t['budget_s']:g} s per run\n",
               "Final validation metric after the budget (adding: MSE, baseline 0.167; copy: cross entropy in "
               "nats per step, baseline K ln S / (T + 2K)); ✓ = below baseline / 10. `elman`: no clipping, "
               "default initialisation; `elman+cures`: clip norm 1, orthogonal W_hh, norm-preserving "
               f"regulariser ({t['norm_reg']:g} at 100 steps, scaled by 99 / (L - 1)); `lstm`, `gru`: the task "
               "runner's defaults (clip norm 1). Each run's command is in the JSON.\n"]
        runs = t["runs"]
        lengths = sorted({r["length"] for r in runs})
        for task in t["tasks"]:
            rows = [r for r in runs if r["task"] == task]
            if not rows:
                continue
            md += [f"### {task}\n", "| variant | " + " | ".join(f"T = {n}" for n in lengths) + " |",
                   "|---|" + "---:|" * len(lengths)]
            for variant in t["variants"]:
                cells = []
                for n in lengths:
                    r = next((r for r in rows if r["variant"] == variant and r["length"] == n), None)
                    cells.append("" if r is None else f"{_fmt(r['final'], '.2g')} {'✓' if r['success'] else '✗'}")
                md.append(f"| {variant} | " + " | ".join(cells) + " |")
            md.append("")
            md += ["Steps in the budget / baseline / best metric:\n",
                   "| variant | T | steps | baseline | final | best | ratio | stopped |", "|---|---:|---:|---:|---:|---:|---:|---|"]
            md += [f"| {r['variant']} | {r['length']} | {r['steps']:,} | {r['baseline']:.3g} | {_fmt(r['final'])} | "
                   f"{_fmt(r['best'])} | {_fmt(r['ratio'])} | {r['stopped']} |" for r in rows]
            md.append("")
    if "curves" in res:
        cv = res["curves"]
        init = cv["init"]
        md += ["## 2. Gradient per time step\n",
               f"‖∂L/∂h_t‖ for the loss at the last step, mean over {init['config']['batch_size']} sequences, "
               f"T = {init['config']['length']}, one layer of {init['config']['hidden_size']}, float64.\n",
               f"At initialisation (random tokens, V = {init['config']['vocab_size']}):\n",
               f"![gradient per step at initialisation]({names['init']})\n"]
        tr = cv["trained"]
        if "skipped" in tr:
            md += [f"After training: skipped ({tr['skipped']}).\n"]
        else:
            md += [f"After {tr['config']['lm_steps']} steps of character-level training on tiny-shakespeare "
                   "(validation text):\n", f"![gradient per step after training]({names['trained']})\n"]
        md += ["| cell | ρ(W_hh) init | ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ init (random tokens) | same, untrained on text | "
               "same, trained | validation bits/char |", "|---|---:|---:|---:|---:|---:|"]
        for cell, e in init["cells"].items():
            sp = e["spectra"][0]
            rho = " / ".join(f"{g} {sp['radius'][g]:.2f}" for g in sp["gates"])
            before = after = bits = "–"
            if "skipped" not in tr and cell in tr["cells"]:
                before = _fmt(tr["before"][cell]["first_over_last"])
                after = _fmt(tr["cells"][cell]["first_over_last"])
                bits = _fmt(tr["training"][cell].get("val_bpc"), ".3f")
            md.append(f"| {cell} | {rho} | {_fmt(e['first_over_last'])} | {before} | {after} | {bits} |")
        md.append("")
        ex = cv["exploding"]
        ec = ex["config"]
        md += [f"### Exploding gradients: Elman, adding T = {ec['length']}, W_hh x {ec['gain']:g}, "
               f"SGD lr {ec['lr']:g}, {ec['steps']} steps\n",
               f"![exploding gradients with and without clipping]({names['exploding']})\n",
               "At initialisation: " + ", ".join(f"gain {c['gain']:g}: ρ(W_hh) = {c['radius']:.2f}, "
                                                  f"‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ = {_fmt(c['first_over_last'])}"
                                                  for c in ex["init"]) + ".\n",
               "| run | steps | pre-clip norm, median | max | clipped | non-finite | stopped | final MSE | ✓ |",
               "|---|---:|---:|---:|---:|---|---|---:|---|"]
        md += [f"| {name} | {r['steps']} | {_fmt(r['grad_norm_median'])} | {_fmt(r['grad_norm_max'])} | "
               f"{r['clipped_frac']:.0%} | {'yes' if r['went_non_finite'] else 'no'} ({r['skipped_steps']} skipped) | "
               f"{r['stopped']} | {_fmt(r['final'])} | {'✓' if r['success'] else '✗'} |"
               for name, r in ex["runs"].items()]
        md.append("")
    if "speed" in res:
        sp = res["speed"]
        sc = sp["config"]
        md += ["## 3. BPTT by hand (NumPy) against the PyTorch Elman model\n",
               f"One forward + backward pass (mean cross entropy over B x T), H = {sc['hidden_size']}, "
               f"T = {sc['length']}, V = {sc['vocab_size']}, same weights; median of {sc['repeats']} interleaved "
               f"timings of {sc['seconds']:g} s; torch on the fused path, {sc['torch_threads']} threads.\n",
               "| B | scratch (float64) steps/s | torch float32 steps/s | torch float64 steps/s | torch32 / scratch | "
               "torch64 / scratch | loss diff | max grad diff |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {r['batch_size']} | {r['steps_per_sec']['scratch']:,.0f} | {r['steps_per_sec']['torch_float32']:,.0f} | "
               f"{r['steps_per_sec']['torch_float64']:,.0f} | {r['ratio_torch32_over_scratch']:.2f} | "
               f"{r['ratio_torch64_over_scratch']:.2f} | {r['loss_abs_diff']:.1e} | {r['grad_max_abs_diff']:.1e} |"
               for r in sp["rows"]]
        md.append("")
    return "\n".join(md) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["table", "curves", "speed"], choices=["table", "curves", "speed"])
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny budgets and runs (numbers mean nothing)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON file; the Markdown and the PNGs go beside it, named after its stem "
                         "(default: benchmarks/results/gradients.json, gradients_quick.json with --quick)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the weights (train seed) and of the sampled inputs")
    g = ap.add_argument_group("1. success table")
    g.add_argument("--budget", type=float, default=None, help="seconds per run (default 60; 2 with --quick)")
    g.add_argument("--lengths", type=int, nargs="+", default=None, help=f"T values (default {' '.join(map(str, LENGTHS))})")
    g.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    g.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    g.add_argument("--norm-reg", type=float, default=0.005,
                   help="elman+cures: regulariser weight for a 100-step sequence, scaled by 99 / (L - 1)")
    g = ap.add_argument_group("2. gradient per time step")
    g.add_argument("--text", type=Path, default=SHARED / "tinyshakespeare" / "input.txt")
    g.add_argument("--lm-steps", type=int, default=None, help="training steps of each language model (default 1000)")
    g.add_argument("--lm-hidden", type=int, default=128, help="units of the language models (and the init curves)")
    g.add_argument("--grad-length", type=int, default=None, help="T of the gradient curves (default 100)")
    g.add_argument("--grad-batch", type=int, default=8, help="sequences the curves average over")
    g.add_argument("--gain", type=float, default=3.0, help="exploding run: W_hh multiplied by this at init")
    g.add_argument("--explode-length", type=int, default=None, help="exploding run: adding task T (default 100)")
    g.add_argument("--explode-steps", type=int, default=None, help="exploding run: SGD steps (default 500)")
    g.add_argument("--explode-lr", type=float, default=0.01, help="exploding run: SGD learning rate (momentum 0.9)")
    g = ap.add_argument_group("3. speed")
    g.add_argument("--speed-hidden", type=int, default=100)
    g.add_argument("--speed-length", type=int, default=25)
    g.add_argument("--speed-batches", type=int, nargs="+", default=[1, 32])
    g.add_argument("--speed-seconds", type=float, default=None, help="seconds per timing (default 2)")
    g.add_argument("--repeats", type=int, default=None, help="interleaved timings per variant (default 5)")
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.out is None:
        args.out = RESULTS / ("gradients_quick.json" if args.quick else "gradients.json")
    return args


def main() -> int:
    args = parse_args(sys.argv[1:])
    stem = args.out.with_suffix("")
    pngs = {k: Path(f"{stem}_{k}.png") for k in ("init", "trained", "exploding")}
    res: dict[str, Any] = {"config": {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(), "quick": args.quick,
        "args": {k: (v if isinstance(v, (int, float, bool, list)) else str(v)) for k, v in vars(args).items()}}}
    print(json.dumps(res["config"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "table" in args.parts:
            runs = [task_run(task, variant, n, args, tmp) for task in args.tasks for n in args.lengths
                    for variant in args.variants]
            res["table"] = {"budget_s": args.budget, "norm_reg": args.norm_reg, "tasks": args.tasks,
                            "variants": args.variants, "lengths": args.lengths, "runs": runs}
        if "curves" in args.parts:
            init = gradient_report(cells=CELLS, hidden_size=args.lm_hidden, length=args.grad_length, seed=args.seed,
                                   batch_size=args.grad_batch, vocab_size=VOCAB, loss="last")
            plot_gradient_norms(init, pngs["init"], title=f"at initialisation: ‖∂L/∂h_t‖, loss at T = "
                                                          f"{args.grad_length}, H = {args.lm_hidden}")
            print(jsonio.dumps({"init": {c: e["first_over_last"] for c, e in init["cells"].items()}}), flush=True)
            trained = trained_curves(args, tmp)
            if "skipped" in trained:
                print(f"bench_gradients: trained curves skipped: {trained['skipped']}", file=sys.stderr)
            else:
                plot_gradient_norms(trained, pngs["trained"],
                                    title=f"after {args.lm_steps} steps on tiny-shakespeare: ‖∂L/∂h_t‖, loss at T = "
                                          f"{args.grad_length}")
            ex = exploding(args, tmp)
            plot_exploding(ex, pngs["exploding"])
            res["curves"] = {"init": init, "trained": trained, "exploding": ex,
                             "plots": {k: p.name for k, p in pngs.items()
                                       if k != "trained" or "skipped" not in trained}}
        if "speed" in args.parts:
            res["speed"] = speed(args)
    res["config"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(jsonio.dumps(res, indent=2) + "\n")
    md = markdown(res, {k: p.name for k, p in pngs.items()})
    args.out.with_suffix(".md").write_text(md)
    print(md)
    print(f"written to {args.out} and {args.out.with_suffix('.md')}"
          + (f", plots {', '.join(p.name for k, p in pngs.items() if k in res['curves']['plots'])}"
             if "curves" in res else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
