"""Training speed on the CPU: rnnlab's training step against a plain PyTorch loop.

What one run measures, in this order:

1. the machine's achieved float32 ``torch.mm`` rate for the shapes a batch-64 step
   multiplies (the best of them is the *measured peak*);
2. for every cell (elman, lstm, gru) and size (2x128, 2x512), one training step --
   forward, ``sequence_loss``, backward, ``clip_grad_norm_(5)``, Adam step, carried
   state detached, exactly as :func:`rnnlab.train.train` does it -- of
   :class:`rnnlab.nn.RNNLanguageModel` on the fused path (the training default) and on
   the generic unroller (``fused=False``), and of the plain PyTorch model
   ``nn.Embedding -> nn.RNN/LSTM/GRU -> nn.Linear`` trained by the plain loop;
3. the analytic matrix-multiply FLOPs of a step, hence GFLOP/s and the fraction of the
   measured and the theoretical peak.

The variants of one configuration are timed interleaved (A B C A B C ...), and each
number is the median over the repeats, because timings on shared machines drift.
Results go to ``benchmarks/results/speed.{json,md}`` (``--quick``: ``speed_quick.*``,
so a smoke test never overwrites a real run).

Expect (2-core AMD EPYC Zen 3, torch 2.13 CPU): plain ``nn.LSTM`` 2x512 about 4,700
chars/s (about 92 GFLOP/s), 2x128 about 39,000 chars/s. The goal: the rnnlab fused
step is never slower than the plain loop (ratio >= 1, up to noise of a few percent).

    .venv/bin/python benchmarks/bench_speed.py            # the full run, about 10 minutes
    .venv/bin/python benchmarks/bench_speed.py --quick    # smoke test, under 30 s
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.allocator import keep_large_blocks
from rnnlab.config import ModelConfig, OptimConfig
from rnnlab.feeding import make_feeding
from rnnlab.nn import RNNLanguageModel, detach_state, kernels, paths, sequence_loss
from rnnlab.nn.cells import CELL_TYPES
from rnnlab.train import make_optimizer

THEORETICAL_PEAK_GFLOPS = 156.0  # 2 cores x 2 FMA pipes x 8 float32 lanes x 2 FLOP x ~2.45 GHz (Zen 3, AVX2)
VOCAB = 65  # tiny-shakespeare's character set
PLAIN_RNN = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}  # the torch module a plain user would pick
# rnnlab fused path, plain PyTorch loop, rnnlab's fused path with the C++ kernels off (rnnlab.nn.kernels: the Python
# loops for Elman and GRU, torch.nn.LSTM for an LSTM small enough to run in the kernel), rnnlab generic unroller, one character per call of nn.LSTM (the style of
# spro/char-rnn.pytorch), and rnnlab free running (the model's own sampled output fed back, rnnlab.feeding)
VARIANTS = ("rnnlab", "plain", "loops", "unfused", "onechar", "free")
SLOW = ("unfused", "onechar", "free")  # timed for --unfused-steps steps per repeat


# ---------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    """'model name' from /proc/cpuinfo, with family/model (the hypervisor often hides the rest)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            info.setdefault(key.strip(), val.strip())
    except OSError:
        return platform.processor() or "unknown"
    return f"{info.get('model name', 'unknown')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def git_commit() -> str | None:
    """HEAD of the checkout being measured (read-only; None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RSS:
    """Peak resident memory of this process, in MB, over a stretch of code.

    ``resource.getrusage(...).ru_maxrss`` is the process's high-water mark; on Linux
    writing 5 to ``/proc/self/clear_refs`` resets it, so each timed stretch reports its
    own peak. Where that is not allowed the peak is cumulative (``resettable`` False).
    """

    def __init__(self) -> None:
        self.resettable = self.reset()
        self.overall = self.peak()

    @staticmethod
    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux

    def reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def measure(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """Run ``fn(*args, **kwargs)``; return its result and the peak RSS (MB) while it ran."""
        self.overall = max(self.overall, self.peak())
        if self.resettable:
            self.reset()
        result = fn(*args, **kwargs)
        p = self.peak()
        self.overall = max(self.overall, p)
        return result, p


def cpu_seconds() -> float:
    """User + system CPU time of this process: divided by wall time x threads it says how much
    of the machine the run got (well below 1: other work took cores, the timings are suspect)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------
# 1. achieved matrix-multiply rate


def bench_mm(m: int, k: int, n: int, repeats: int, min_time: float) -> dict[str, Any]:
    """float32 (m, k) @ (k, n) into a preallocated output: GFLOP/s per repeat, median and best."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    c = torch.empty(m, n)
    flops = 2.0 * m * n * k
    for _ in range(3):  # warm-up: thread pool, page faults, packing buffers
        torch.mm(a, b, out=c)
    t0 = time.perf_counter()
    torch.mm(a, b, out=c)
    iters = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b, out=c)
        rates.append(flops * iters / (time.perf_counter() - t0) / 1e9)
    return {"shape": f"({m}, {k}) x ({k}, {n})", "m": m, "k": k, "n": n, "iters": iters,
            "gflops_runs": rates, "gflops": statistics.median(rates), "gflops_best": max(rates)}


def matmul_shapes(batch: int, seq_len: int, hidden: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The products of an LSTM step (4 gates) at this size: (what, (m, k, n))."""
    bt, g = batch * seq_len, 4 * hidden
    return [("input projection, all T steps at once", (bt, hidden, g)),
            ("recurrent projection, one time step", (batch, hidden, g)),
            ("weight gradient of the input projection", (g, bt, hidden))]


# ---------------------------------------------------------------------------------------------
# 2. the training steps


def step_flops(cell: str, input_size: int, hidden: int, num_layers: int, vocab: int, batch: int,
               seq_len: int) -> dict[str, float]:
    """Matrix-multiply FLOPs of one training step, counted analytically.

    Forward, per product 2*m*n*k with m = B*T rows: per layer the input projection
    (I -> G*H) and the recurrent projection (H -> G*H), then the decoder (H -> V); the
    embedding is a lookup. Backward costs twice the forward (the gradient with respect
    to the input and to the weight, each a product of the same size). Element-wise gate
    arithmetic, the softmax and Adam are not counted.
    """
    g = CELL_TYPES[cell].gates * hidden
    bt = batch * seq_len
    inp = sum(2.0 * bt * (input_size if k == 0 else hidden) * g for k in range(num_layers))
    rec = num_layers * 2.0 * bt * hidden * g
    dec = 2.0 * bt * hidden * vocab
    fwd = inp + rec + dec
    return {"input_projection": inp, "recurrent_projection": rec, "decoder": dec, "forward": fwd,
            "backward": 2 * fwd, "total": 3 * fwd}


class PlainLM(nn.Module):
    """The baseline a PyTorch user writes first: Embedding -> nn.RNN/LSTM/GRU -> Linear."""

    def __init__(self, cell: str, vocab: int, embedding_size: int, hidden: int, num_layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding_size)
        self.rnn = PLAIN_RNN[cell](embedding_size, hidden, num_layers=num_layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        out, state = self.rnn(self.embedding(tokens), state)  # (B, T, H)
        return self.decoder(out), state  # (B, T, V)


class OneCharLM(PlainLM):
    """The same network fed one character per call, as spro/char-rnn.pytorch trains it."""

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        outs = []
        for t in range(tokens.shape[1]):
            out, state = self.rnn(self.embedding(tokens[:, t:t + 1]), state)  # (B, 1, H)
            outs.append(self.decoder(out))  # (B, 1, V)
        return torch.cat(outs, dim=1), state  # (B, T, V)


def detach_plain(state: Any) -> Any:
    return tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()


class Trainer:
    """One model, its optimiser and its carried state; :meth:`run` times ``n`` training steps.

    The step is the one in :func:`rnnlab.train.train`: forward from the carried state,
    mean cross entropy, zero_grad, backward, clip_grad_norm_, read loss and norm (as the
    trainer does, for its logs), optimiser step, carry the detached state.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: Any,
                 detach: Callable[[Any], Any], batches: list[Tensor], clip_norm: float):
        self.model, self.optimizer, self.state, self.detach = model, optimizer, state, detach
        self.batches, self.clip_norm, self.i = batches, clip_norm, 0
        self.params = list(model.parameters())
        model.train()

    def step(self) -> float:
        tokens = self.batches[self.i % len(self.batches)]  # (B, T+1)
        self.i += 1
        x, y = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        loss, new_state = self.loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm))
        loss_v = loss.item()
        self.optimizer.step()
        self.state = self.detach(new_state)
        return loss_v if math.isfinite(gnorm) else math.nan

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        logits, new_state = self.model(x, self.state)  # (B, T, V)
        return sequence_loss(logits, y), new_state

    def run(self, n: int) -> float:
        """Seconds per step, averaged over ``n`` steps."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        return (time.perf_counter() - t0) / n


class LoopTrainer(Trainer):
    """The same step with :mod:`rnnlab.nn.kernels` switched off: the Elman and GRU recurrences in Python loops, the
    LSTM on ``torch.nn.LSTM``."""

    def run(self, n: int) -> float:
        with kernels.disabled():
            return super().run(n)


class FeedTrainer(Trainer):
    """The same step with the loss of a feeding strategy (:mod:`rnnlab.feeding`), as the trainer runs it."""

    def __init__(self, *args: Any, feeding: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.feeding, self.generator = feeding, torch.Generator().manual_seed(0)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        r = self.feeding.loss(self.model, x, y, self.state, step=self.i, generator=self.generator)
        return r.loss, r.state


def make_trainers(cell: str, hidden: int, num_layers: int, batches: list[Tensor], seed: int,
                  with_unfused: bool) -> tuple[dict[str, Trainer], dict[str, int]]:
    optim_cfg = OptimConfig()  # Adam, lr 2e-3, clip norm 5: the training defaults
    batch = batches[0].shape[0]
    trainers: dict[str, Trainer] = {}
    params: dict[str, int] = {}
    for variant in VARIANTS:
        if variant in SLOW and not with_unfused:
            continue
        net = paths.Network(CELL_TYPES[cell], hidden, num_layers)
        if variant == "loops" and not (kernels.available() and paths.training(
                paths.Machine.of(batches[0].device, torch.float32), net).path == "sequences"):
            continue  # nothing of this step runs in the kernels: "rnnlab" is this already
        torch.manual_seed(seed)
        if variant in ("plain", "onechar"):
            emb = ModelConfig().embedding_size
            model: nn.Module = (PlainLM if variant == "plain" else OneCharLM)(cell, VOCAB, emb, hidden, num_layers)
            opt = torch.optim.Adam(model.parameters(), lr=optim_cfg.lr)
            trainers[variant] = Trainer(model, opt, None, detach_plain, batches, optim_cfg.clip_norm)
        elif variant == "free":
            lm = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=hidden, num_layers=num_layers, dropout=0.0), VOCAB)
            trainers[variant] = FeedTrainer(lm, make_optimizer(lm, optim_cfg), lm.initial_state(batch), detach_state,
                                            batches, optim_cfg.clip_norm, feeding=make_feeding("free-sample"))
        else:
            cfg = ModelConfig(cell=cell, hidden_size=hidden, num_layers=num_layers, dropout=0.0,
                              fused=(variant != "unfused"))  # no dropout: the same network as the plain one
            lm = RNNLanguageModel(cfg, VOCAB)
            trainers[variant] = (LoopTrainer if variant == "loops" else Trainer)(
                lm, make_optimizer(lm, optim_cfg), lm.initial_state(batch), detach_state, batches, optim_cfg.clip_norm)
        params[variant] = sum(p.numel() for p in trainers[variant].params)
    return trainers, params


def bench_config(cell: str, hidden: int, args: argparse.Namespace, rss: RSS, peak_mm: float) -> dict[str, Any]:
    g = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, VOCAB, (args.batch_size, args.seq_len + 1), generator=g) for _ in range(4)]
    trainers, params = make_trainers(cell, hidden, args.num_layers, batches, args.seed, args.unfused_steps > 0)
    steps = {"rnnlab": args.steps, "plain": args.steps, "loops": args.steps, **{v: args.unfused_steps for v in SLOW}}
    flops = step_flops(cell, ModelConfig().embedding_size, hidden, args.num_layers, VOCAB, args.batch_size,
                       args.seq_len)
    times: dict[str, list[float]] = {v: [] for v in trainers}
    peaks: dict[str, float] = {v: 0.0 for v in trainers}
    for v, tr in trainers.items():  # warm-up: allocator, Adam state, oneDNN primitives
        _, p = rss.measure(tr.run, max(1, args.warmup if v not in SLOW else min(args.warmup, 1)))
        peaks[v] = max(peaks[v], p)
    busy: dict[str, list[float]] = {v: [0.0, 0.0] for v in trainers}  # CPU seconds, wall seconds
    names = list(trainers)
    for r in range(args.repeats):  # interleaved: rnnlab plain unfused, plain rnnlab unfused, ...
        for v in (names if r % 2 == 0 else [names[1], names[0], *names[2:]]):
            c0 = cpu_seconds()
            sec, p = rss.measure(trainers[v].run, steps[v])
            busy[v][0] += cpu_seconds() - c0
            busy[v][1] += sec * steps[v]
            times[v].append(sec)
            peaks[v] = max(peaks[v], p)
    chars = args.batch_size * args.seq_len
    variants = {}
    for v, ts in times.items():
        med = statistics.median(ts)
        variants[v] = {
            "steps_per_repeat": steps[v], "sec_per_step_runs": ts, "sec_per_step": med,
            "spread": (max(ts) - min(ts)) / med, "chars_per_sec": chars / med, "gflops": flops["total"] / med / 1e9,
            "frac_measured_peak": flops["total"] / med / 1e9 / peak_mm,
            "frac_theoretical_peak": flops["total"] / med / 1e9 / THEORETICAL_PEAK_GFLOPS,
            "peak_rss_mb": peaks[v], "parameters": params[v],
            "cpu_share": busy[v][0] / busy[v][1] / torch.get_num_threads(),
        }
    pair = [p / r for r, p in zip(times["rnnlab"], times["plain"])]  # speed ratio per interleaved pair
    out = {"cell": cell, "hidden_size": hidden, "num_layers": args.num_layers, "flops_per_step": flops,
           "variants": variants,
           "rnnlab_over_plain": statistics.median(pair),
           "rnnlab_over_plain_runs": pair}
    if "loops" in times:  # the C++ kernels against the same step in Python loops, per interleaved pair
        out["kernels_over_loops_runs"] = [p / r for r, p in zip(times["rnnlab"], times["loops"])]
        out["kernels_over_loops"] = statistics.median(out["kernels_over_loops_runs"])
    if "unfused" in times:
        out["fused_over_unfused"] = variants["rnnlab"]["chars_per_sec"] / variants["unfused"]["chars_per_sec"]
    if "free" in times:  # the goal: free running at least 0.6x the teacher-forced (fused) speed
        out["free_over_teacher"] = variants["free"]["chars_per_sec"] / variants["rnnlab"]["chars_per_sec"]
    return out


# ---------------------------------------------------------------------------------------------
# reporting


def table(results: dict[str, Any]) -> list[str]:
    """The results as Markdown table lines (also printed to the terminal)."""
    names = {"rnnlab": "rnnlab fused", "plain": "plain torch", "loops": "rnnlab fused, kernels off",
             "unfused": "rnnlab unfused",
             "onechar": "one char per call", "free": "rnnlab free running"}
    lines = [("| cell | size | variant | ms/step | spread | chars/s | GFLOP/s | of mm peak | of 156 | vs plain "
              "| peak RSS MB | CPU share |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in results["configs"]:
        plain = c["variants"]["plain"]["chars_per_sec"]
        for v, m in c["variants"].items():
            ratio = c["rnnlab_over_plain"] if v == "rnnlab" else m["chars_per_sec"] / plain
            lines.append(f"| {c['cell']} | {c['num_layers']}x{c['hidden_size']} | {names[v]} | "
                         f"{1e3 * m['sec_per_step']:,.1f} | {m['spread']:.0%} | {m['chars_per_sec']:,.0f} | "
                         f"{m['gflops']:.1f} | {m['frac_measured_peak']:.0%} | {m['frac_theoretical_peak']:.0%} | "
                         f"{ratio:.2f} | {m['peak_rss_mb']:,.0f} | {m['cpu_share']:.0%} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    mm = "\n".join(f"| {r['shape']} | {r['what']} | {r['gflops']:.1f} | {r['gflops_best']:.1f} |"
                   for r in results["matmul"])
    return f"""# Training speed{' (quick smoke test, not a measurement)' if m['quick'] else ''}

{m['cpu']}, {m['threads']} threads, torch {m['torch']} ({m['cpu_capability']}), Python {m['python']};
{m['started']} to {m['finished']}; load average {m['loadavg_start']} -> {m['loadavg_end']};
fused Elman and GRU recurrences in {'the C++ kernels (rnnlab.nn.kernels)' if m.get('kernels') else 'Python loops (no kernels)'};
{'large freed blocks kept by malloc for reuse (rnnlab.allocator), for every variant' if m.get('malloc_keeps_large_blocks') else 'malloc as the C library has it'}.
Batch {m['batch_size']} x {m['seq_len']} characters, vocabulary {VOCAB}, embedding {m['embedding_size']}, no dropout (both networks the same), Adam,
clip norm 5, random tokens. Median of {m['repeats']} interleaved repeats of {m['steps']} steps
({m['unfused_steps']} for the unfused unroller), after {m['warmup']} warm-up step(s) per variant.

## Matrix multiply (float32 `torch.mm`)

| shape | what | GFLOP/s (median) | best |
|---|---|---:|---:|
{mm}

Measured peak: **{results['measured_peak_gflops']:.1f} GFLOP/s** ({results['measured_peak_gflops'] / THEORETICAL_PEAK_GFLOPS:.0%} of the
theoretical {THEORETICAL_PEAK_GFLOPS:.0f}).

## Training step

FLOPs: matrix products only (input, recurrent and decoder projections), backward = 2 x forward.
"vs plain": chars/s relative to the plain PyTorch loop (for rnnlab fused: median of the per-pair
ratios); >= 1 is the goal. "spread": (max - min) / median over the repeats. Peak RSS is the whole
process (all three models of the configuration are resident) while that variant ran. "CPU share":
process CPU time / (wall time x threads) while timed; well below 100% means other work took cores
and the row is not a measurement.

{chr(10).join(table(results))}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(PLAIN_RNN), choices=list(PLAIN_RNN), help="cells to time")
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 512], help="hidden sizes to time")
    p.add_argument("--num-layers", type=int, default=2, help="recurrent layers")
    p.add_argument("--batch-size", type=int, default=64, help="B")
    p.add_argument("--seq-len", type=int, default=100, help="T")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before the repeats")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat (fused rnnlab and plain)")
    p.add_argument("--unfused-steps", type=int, default=3, help="timed steps per repeat for fused=False (0: skip)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the median is reported")
    p.add_argument("--mm-time", type=float, default=0.3, help="seconds per matmul repeat")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and the random tokens")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="folder for speed.json and speed.md (speed_quick.* with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2x128 only, few steps (under 30 s)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.warmup, args.steps, args.unfused_steps, args.repeats, args.mm_time = [128], 1, 2, 1, 2, 0.05
    for name in ("num_layers", "batch_size", "seq_len", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.unfused_steps < 0 or args.threads < 0 or min(args.sizes) < 1:
        p.error("--warmup, --unfused-steps and --threads must be >= 0, and every size >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = keep_large_blocks()  # as rnnlab's training sets it (rnnlab.allocator); every variant shares it
    rss = RSS()
    meta = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "quick": args.quick,
        "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(), "commit": git_commit(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "batch_size": args.batch_size, "seq_len": args.seq_len, "embedding_size": ModelConfig().embedding_size,
        "warmup": args.warmup, "steps": args.steps, "unfused_steps": args.unfused_steps, "repeats": args.repeats,
        "theoretical_peak_gflops": THEORETICAL_PEAK_GFLOPS, "rss_per_variant": rss.resettable,
        "kernels": kernels.available(), "kernels_why_not": kernels.why_not(), "malloc_keeps_large_blocks": allocator,
    }
    print(f"rnnlab training speed  {meta['started']}")
    print(f"  CPU      {meta['cpu']}, {meta['cpu_count']} logical CPUs, {meta['cpu_capability']}")
    print(f"  torch    {meta['torch']}, {meta['threads']} threads ({meta['interop_threads']} inter-op), "
          f"Python {meta['python']}, commit {meta['commit']}")
    why_not = meta["kernels_why_not"] or "the build failed"
    print("  kernels  " + ("C++ recurrences (rnnlab.nn.kernels) in use" if meta["kernels"] else f"not in use: {why_not}"))
    print("  malloc   " + ("large freed blocks kept for reuse (rnnlab.allocator)" if allocator else "as the C library has it"))
    print(f"  load     {meta['loadavg_start']} (1, 5, 15 min) -- timings are only meaningful on a quiet machine")
    print(f"  step     B={args.batch_size} T={args.seq_len} V={VOCAB} embedding {meta['embedding_size']}, Adam, clip 5; "
          f"median of {args.repeats} x {args.steps} steps ({args.unfused_steps} unfused), warm-up {args.warmup}")
    if args.quick:
        print("  --quick: a smoke test, not a measurement")

    print("\nfloat32 torch.mm")
    mm_rows = []
    for h in sorted(set(args.sizes) | {512}):  # 512: the shapes of the reference 2x512 run, always
        for what, (m, k, n) in matmul_shapes(args.batch_size, args.seq_len, h):
            r, _ = rss.measure(bench_mm, m, k, n, repeats=max(3, args.repeats), min_time=args.mm_time)
            r["what"] = what
            mm_rows.append(r)
            print(f"  {r['shape']:>28}  {r['gflops']:6.1f} GFLOP/s (best {r['gflops_best']:.1f})  {what}")
    peak = max(r["gflops"] for r in mm_rows)
    print(f"  measured peak {peak:.1f} GFLOP/s = {peak / THEORETICAL_PEAK_GFLOPS:.0%} of the theoretical "
          f"{THEORETICAL_PEAK_GFLOPS:.0f}")

    print("\ntraining steps")
    configs = []
    for h in args.sizes:
        for cell in args.cells:
            t0 = time.perf_counter()
            c = bench_config(cell, h, args, rss, peak)
            configs.append(c)
            v = c["variants"]
            print(f"  {cell:5} {args.num_layers}x{h:<4} rnnlab {v['rnnlab']['chars_per_sec']:9,.0f} chars/s  "
                  f"plain {v['plain']['chars_per_sec']:9,.0f}  ratio {c['rnnlab_over_plain']:.2f}"
                  + "".join(f"  {k} {v[k]['chars_per_sec']:9,.0f}" for k in SLOW if k in v)
                  + f"  ({time.perf_counter() - t0:.0f} s)")
            share = min(m["cpu_share"] for m in v.values())
            if share < 0.9:
                print(f"    warning: this process got only {share:.0%} of {torch.get_num_threads()} threads' CPU time: "
                      f"other work is running, these timings are not a measurement")
            if v["rnnlab"]["parameters"] != v["plain"]["parameters"]:
                print(f"    warning: parameter counts differ: rnnlab {v['rnnlab']['parameters']}, "
                      f"plain {v['plain']['parameters']}")

    meta["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["peak_rss_mb"] = max(rss.overall, rss.peak())
    results = {"meta": meta, "matmul": mm_rows, "measured_peak_gflops": peak, "configs": configs}
    print()
    print("\n".join(table(results)))
    print(f"\npeak RSS of the whole run {meta['peak_rss_mb']:,.0f} MB")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "speed_quick" if args.quick else "speed"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
