"""Sampling speed on the CPU: characters per second of :func:`rnnlab.sampling.generate`.

A 2x512 LSTM language model (vocabulary 65, random weights: speed does not depend on
what was learned) generates one stream and 64 streams; on the CPU ``generate`` runs its
steps in the C++ loop of :mod:`rnnlab.nn.kernels` where that is built. Each is timed against
the Python loop of packed steps, the same loop with the packed step on ``addmm`` only (oneDNN's products off), with the unpacked
``model.step`` and with ``torch.compile(model.step)``, and against the loop a PyTorch user
writes first (``nn.Embedding -> nn.LSTM -> nn.Linear`` called once per character,
``torch.multinomial`` on the softmax), with oneDNN on (PyTorch's default) and off.
Variants are timed interleaved and the median of the repeats is reported.

One stream is bound by reading the weights once per step (about 13 MB for a 2x512
LSTM); "weights GB/s" says how close a variant comes to that. Goals: one
stream at least 2,000 chars/s, 64 streams at least 15,000.

    .venv/bin/python benchmarks/bench_sampling.py          # about 4 minutes
    .venv/bin/python benchmarks/bench_sampling.py --quick  # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import RSS, cpu_model, cpu_seconds, git_commit  # noqa: E402

from rnnlab.config import ModelConfig, SampleConfig  # noqa: E402
from rnnlab.data.vocab import Vocab  # noqa: E402
from rnnlab.nn import kernels  # noqa: E402
from rnnlab.nn.models import RNNLanguageModel  # noqa: E402
from rnnlab import sampling  # noqa: E402
from rnnlab.sampling import generate  # noqa: E402

VOCAB = 65
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags, 2.13


class PlainSampler:
    """nn.Embedding -> nn.LSTM -> nn.Linear, one character per call, torch.multinomial."""

    def __init__(self, lm: RNNLanguageModel, onednn: bool, device: str = "cpu"):
        cfg = lm.cfg
        self.emb = nn.Embedding(VOCAB, cfg.embedding_size, device=device)
        self.rnn = nn.LSTM(cfg.embedding_size, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                           device=device)
        self.dec = nn.Linear(cfg.hidden_size, VOCAB, device=device)
        self.onednn, self.device = onednn, device
        for m in (self.emb, self.rnn, self.dec):
            m.eval()

    @torch.no_grad()
    def run(self, streams: int, length: int) -> None:
        g = torch.Generator(device=self.device).manual_seed(0)
        x = torch.zeros(streams, 1, dtype=torch.int64, device=self.device)  # (B, 1)
        state = None
        with torch.backends.mkldnn.flags(enabled=self.onednn):
            for _ in range(length):
                out, state = self.rnn(self.emb(x), state)  # (B, 1, H)
                p = torch.softmax(self.dec(out[:, 0]), dim=-1)  # (B, V)
                x = torch.multinomial(p, 1, generator=g)  # (B, 1)
            if self.device != "cpu":
                torch.cuda.synchronize()


def weight_bytes(lm: RNNLanguageModel) -> int:
    """Bytes of the matrices read every step (the embedding is a lookup: one row)."""
    return sum(p.numel() * p.element_size() for n, p in lm.named_parameters() if not n.startswith("embedding"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--cell", default="lstm", choices=("lstm",), help="the plain baseline is nn.LSTM")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 64])
    p.add_argument("--seconds", type=float, default=4.0, help="about this long per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: time the GPU (rnnlab replays each step as a CUDA graph; the goals are the CPU's)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variant (its "
                   "warm-up compiles for about 10 s per stream count)")
    p.add_argument("--quick", action="store_true", help="smoke test (results to sampling_quick.*)")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.3, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("bench_sampling: --device cuda needs a CUDA GPU", file=sys.stderr)
        return 2
    lm = RNNLanguageModel(ModelConfig(cell=args.cell, hidden_size=args.hidden_size, num_layers=args.num_layers,
                                      dropout=0.0), VOCAB).to(args.device).eval()
    vocab = Vocab([chr(40 + i) for i in range(VOCAB)])

    def stepping(step_for: Callable[[int], Callable]) -> Callable[[int, int], None]:
        """generate with its step (the packed Stepper; on a GPU replayed as a CUDA graph) replaced by ``step_for(B)``."""
        def run(b: int, n: int) -> None:
            real = sampling._stepper
            sampling._stepper = lambda model, streams, steps=0: step_for(streams)
            try:
                with kernels.disabled():  # the Python loop over steps, where the step is swapped
                    generate(lm, vocab, SampleConfig(prime="(", length=n, num_samples=b, seed=0))
            finally:
                sampling._stepper = real
        return run

    compiled: dict[int, Callable] = {}

    def compiled_step(b: int) -> Callable:  # one compiled step per batch size, compiled at the warm-up call
        if b not in compiled:
            compiled[b] = torch.compile(lm.step, dynamic=False)
        return compiled[b]

    variants: dict[str, Callable[[int, int], None]] = {
        "rnnlab generate": lambda b, n: generate(lm, vocab, SampleConfig(prime="(", length=n, num_samples=b, seed=0)),
    }
    if cuda:
        variants["rnnlab, packed step, no CUDA graph"] = stepping(lm.stepper)  # what the graph gains
    else:
        if kernels.available():  # what the C++ loop gains over the Python loop of packed steps
            variants["rnnlab, Python loop of packed steps"] = stepping(lm.stepper)
        variants["rnnlab, packed, oneDNN off"] = stepping(lambda b: lm.stepper(b, onednn=False))  # what oneDNN gains
    variants["rnnlab, model.step unpacked"] = stepping(lambda b: lm.step)  # what the packed Stepper gains
    if not args.no_compile:
        variants["rnnlab, torch.compile(model.step)"] = stepping(compiled_step)
    if cuda:
        variants["plain nn.LSTM (cuDNN)"] = PlainSampler(lm, True, "cuda").run
    else:
        variants["plain nn.LSTM, oneDNN on"] = PlainSampler(lm, True).run
        variants["plain nn.LSTM, oneDNN off"] = PlainSampler(lm, False).run
    wb = weight_bytes(lm)
    rss = RSS()
    meta = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": git_commit(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "model": f"{args.cell} "
            f"{args.num_layers}x{args.hidden_size}", "vocab": VOCAB, "weight_mb": wb / 1e6,
            "repeats": args.repeats, "seconds": args.seconds, "quick": args.quick, "device": args.device,
            "gpu": torch.cuda.get_device_name() if cuda else None}
    print(f"rnnlab sampling speed  {meta['started']}\n  {meta['gpu'] or meta['cpu']}, {meta['threads']} threads, torch "
          f"{meta['torch']}, commit {meta['commit']}, load {meta['loadavg_start']}\n  model {meta['model']}, "
          f"{wb / 1e6:.1f} MB of weights read per step; median of {args.repeats} interleaved repeats")
    rows = []
    for b in args.streams:
        lengths = {}
        for name, fn in variants.items():  # warm up, then size each repeat to about --seconds
            fn(b, 5)
            t0 = time.perf_counter()
            fn(b, 20)
            lengths[name] = max(10, int(args.seconds / max((time.perf_counter() - t0) / 20, 1e-6)))
        times: dict[str, list[float]] = {n: [] for n in variants}
        busy = {n: [0.0, 0.0] for n in variants}
        peaks = {n: 0.0 for n in variants}
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                c0, t0 = cpu_seconds(), time.perf_counter()
                _, pk = rss.measure(variants[name], b, lengths[name])
                sec = time.perf_counter() - t0
                times[name].append(sec / lengths[name])
                busy[name][0] += cpu_seconds() - c0
                busy[name][1] += sec
                peaks[name] = max(peaks[name], pk)
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"streams": b, "variant": name, "ms_per_step": med * 1e3, "chars_per_sec": b / med,
                         "spread": (max(ts) - min(ts)) / med, "weights_gb_per_sec": wb / med / 1e9,
                         "cpu_share": busy[name][0] / busy[name][1] / torch.get_num_threads(),
                         "peak_rss_mb": peaks[name], "steps_per_repeat": lengths[name]})
            print(f"  {b:3d} stream(s)  {name:28s} {b / med:10,.0f} chars/s  {med * 1e3:7.3f} ms/step  "
                  f"weights {wb / med / 1e9:5.1f} GB/s  CPU share {rows[-1]['cpu_share']:.0%}")
    meta["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    goals = {1: 2000, 64: 15000} if not cuda else {}  # the goals are the CPU's
    lines = ["| streams | variant | chars/s | ms/step | weights GB/s | spread | CPU share | peak RSS MB | goal |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        g = goals.get(r["streams"]) if r["variant"] == "rnnlab generate" else None
        mark = "" if g is None else (f">= {g:,}: met" if r["chars_per_sec"] >= g else f">= {g:,}: **missed**")
        lines.append(f"| {r['streams']} | {r['variant']} | {r['chars_per_sec']:,.0f} | {r['ms_per_step']:.3f} | "
                     f"{r['weights_gb_per_sec']:.1f} | {r['spread']:.0%} | {r['cpu_share']:.0%} | "
                     f"{r['peak_rss_mb']:,.0f} | {mark} |")
    md = (f"# Sampling speed{' (quick smoke test, not a measurement)' if args.quick else ''}\n\n"
          + (f"{meta['gpu']} (CPU: " if cuda else "") + f"{meta['cpu']}, {meta['threads']} threads"
          + (")" if cuda else "") + f", torch {meta['torch']}; "
          f"{meta['started']} to {meta['finished']}; load average {meta['loadavg_start']} -> {meta['loadavg_end']}.\n"
          f"Model {meta['model']}, vocabulary {VOCAB}, random weights, {wb / 1e6:.1f} MB of weights read per "
          f"step. Median of {args.repeats} interleaved repeats of about {args.seconds} s.\n"
          f"Command: `.venv/bin/python benchmarks/bench_sampling.py{' --device cuda' if cuda else ''}`\n\n"
          + "\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("sampling_quick" if args.quick else "sampling") + ("_cuda" if cuda else "")
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n",
                                           encoding="utf-8")
    (args.out / f"{stem}.md").write_text(md, encoding="utf-8")
    print(f"wrote {args.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
