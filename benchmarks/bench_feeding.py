"""How the model is fed while it learns: every strategy at equal wall-clock time.

On tiny-shakespeare (the 90/10 split ``rnnlab train`` makes), one LSTM per strategy --
teacher, free-raw, free-sample, free-argmax, scheduled, professor -- trained for
``--budget`` seconds each with the same settings (``rnnlab train`` defaults but
``--hidden-size``), then:

* validation bits per character (the whole split, teacher-forced, best checkpoint);
* the exposure-bias report of ``rnnlab exposure`` (``rnnlab.exposure.exposure_bias``):
  the reference 5-gram's bits on generated against real continuations, and the bigram
  divergence, averaged over the distance from the prefix;
* a sample (temperature 0.8, seed 1);
* the cost of a training step as a ratio to teacher forcing, measured side by side in
  this run: the same model and batches, ``--cost-steps`` forward+backward passes per
  strategy interleaved one step at a time, the median (professor forcing with its
  adversarial term on, and off). Goals: scheduled <= 2x, professor <= 4x.

    .venv/bin/python benchmarks/bench_feeding.py                      # 6 x 150 s + evaluation, ~20 min
    .venv/bin/python benchmarks/bench_feeding.py --budget 20 --strategies teacher scheduled

Arguments after ``--`` are ``rnnlab train`` options applied to every run.
Writes ``benchmarks/results/feeding.json`` and ``feeding.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import split_rnnlab_options, write_results  # noqa: E402

from rnnlab.checkpoint import load_model  # noqa: E402
from rnnlab.cli import build_parser, run_config_from_args  # noqa: E402
from rnnlab.config import SampleConfig  # noqa: E402
from rnnlab.data.corpus import build_vocab, load_corpus  # noqa: E402
from rnnlab.exposure import exposure_bias  # noqa: E402
from rnnlab.nn.models import RNNLanguageModel  # noqa: E402
from rnnlab.sampling import generate  # noqa: E402
from rnnlab.train import LanguageModelJob, train  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
STRATEGIES = ("teacher", "free-raw", "free-sample", "free-argmax", "scheduled", "professor")


def config(args: argparse.Namespace, strategy: str, extra: list[str], out: Path, budget: float):
    argv = ["train", "--data", str(args.data), "--hidden-size", str(args.hidden_size), "--feeding", strategy,
            "--time-budget", str(budget), "--eval-interval", str(args.eval_interval), "--out", str(out), "--quiet",
            *extra]
    return argv, run_config_from_args(build_parser().parse_args(argv))


def step_costs(args: argparse.Namespace, extra: list[str], tmp: Path) -> dict[str, float]:
    """Seconds per forward+backward pass of each strategy on one model and the same batches.

    Interleaved one step at a time (teacher, free-raw, ..., then again, the order rotating),
    so a machine that speeds up or slows down during the measurement shifts every strategy
    alike; the figure is the median over ``--cost-steps`` steps. Professor forcing costs
    more while its adversarial term is on (a graph through the free run and D): it is timed
    both ways, its running accuracy set inside the band ("professor") or at chance
    ("professor-gate-off") before each step."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    jobs, variants = {}, []
    for s in args.strategies:
        _, cfg = config(args, s, extra, tmp / f"cost-{s}", 1)
        corpus = load_corpus(cfg.data)
        vocab = build_vocab(corpus, cfg.data.level, cfg.data.min_count)
        # on a GPU the self-fed strategies decide their inputs through a CUDA graph: timed also without
        names = [s] + ([f"{s}, eager decisions"] if cuda and s not in ("teacher", "free-raw") else [])
        for name in names:
            torch.manual_seed(0)
            model = RNNLanguageModel(cfg.model, len(vocab)).to(device)
            jobs[name] = LanguageModelJob(cfg, model, vocab, vocab.encode(corpus.train[:200_000]),
                                          vocab.encode(corpus.val[:1000]), device)
            jobs[name].model.train()
            if name.endswith("eager decisions"):
                jobs[name].feeding._steps = None  # own_inputs then packs a fresh eager Stepper every batch
            variants += [(name, name)] + ([("professor-gate-off", name)] if name == "professor" else [])

    def one(name: str, job: LanguageModelJob, i: int) -> float:
        if job.cfg.feeding.feeding == "professor":
            lo, hi = job.feeding.band
            job.feeding.accuracy = (lo + hi) / 2 if name.startswith("professor") and name != "professor-gate-off" \
                else 0.5 * lo
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss, _, _ = job.train_loss(0, i)
        job.model.zero_grad(set_to_none=True)
        loss.backward()
        job.step_done(True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for name, s in variants:  # warm-up
        for i in range(2):
            one(name, jobs[s], i)
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for i in range(args.cost_steps):
        k = i % len(variants)
        for name, s in variants[k:] + variants[:k]:
            times[name].append(one(name, jobs[s], 2 + i))
        if (i + 1) % 10 == 0:
            print(json.dumps({"cost_steps": i + 1, **{n: statistics.median(v) for n, v in times.items()}}), flush=True)
    return {n: statistics.median(v) for n, v in times.items()}


def costs_markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    md = [f"Cost of a training step per feeding strategy on {c.get('gpu') or c['machine']}, torch {c['torch']}, "
          f"{c['date']}; median of {c['args']['cost_steps']} interleaved steps, the model of `rnnlab train` with "
          f"--hidden-size {c['args']['hidden_size']} {' '.join(c['extra'])}\n",
          "| strategy | ms per step | x teacher forcing |", "|---|---:|---:|"]
    for n, v in res["costs"].items():
        ratio = f"{v['vs_teacher']:.2f}" if v["vs_teacher"] is not None else ""
        md.append(f"| {n} | {v['step_ms']:.2f} | {ratio} |")
    return "\n".join(md) + "\n"


def main() -> int:
    own, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "tinyshakespeare" / "input.txt")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds of training per strategy")
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--prefixes", type=int, default=20)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--cost-steps", type=int, default=40, help="timed steps per strategy, interleaved")
    ap.add_argument("--costs-only", action="store_true", help="print the step costs and stop, writing them to "
                    "feeding_costs_cpu.json and .md (feeding_costs_cuda.* with --device cuda) beside --out")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the step costs are measured "
                    "(the training runs take rnnlab train's --device after --)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "feeding.json")
    args = ap.parse_args(own)
    if not args.data.exists():
        print(f"bench_feeding: {args.data} is missing (the shared tiny-shakespeare)", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                                      "torch": torch.__version__, "load_average_at_start": os.getloadavg(),
                                      "args": {k: str(v) for k, v in vars(args).items()}, "extra": extra}}
    print(json.dumps(res["config"]), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        costs = step_costs(args, extra, Path(tmp))
        res["config"]["step_s"] = costs
        if args.costs_only:
            base = costs.get("teacher")
            print(json.dumps({n: round(v / base, 2) for n, v in costs.items()} if base else costs))
            if args.device == "cuda":
                res["config"]["gpu"] = torch.cuda.get_device_name()
            res["costs"] = {n: {"step_ms": v * 1e3, "vs_teacher": v / base if base else None}
                            for n, v in costs.items()}
            write_results(args.out.with_name(f"feeding_costs_{args.device}.json"), res, costs_markdown)
            return 0
        for s in args.strategies:
            out = Path(tmp) / s
            argv, cfg = config(args, s, extra, out, args.budget)
            summary = train(cfg, progress=False)
            model, vocab, ckpt = load_model(out)
            corpus = load_corpus(cfg.data)
            ex = exposure_bias(model, vocab, corpus.val, corpus.train, prefixes=args.prefixes, length=args.length)
            sample = generate(model, vocab, SampleConfig(prime="ROMEO:", length=200, temperature=0.8, seed=1))[0]
            row = {"strategy": s, "steps": summary["steps"], "best_val_bpc": summary["best_val_bpc"],
                   "step_s": costs.get(s), "cost_ratio": costs[s] / costs["teacher"] if "teacher" in costs else None,
                   "cost_ratio_gate_off": (costs["professor-gate-off"] / costs["teacher"]
                                           if s == "professor" and "teacher" in costs else None),
                   "exposure": ex["summary"], "exposure_curves": {k: ex[k] for k in
                                                                  ("distance", "generated_ref_bits", "real_ref_bits",
                                                                   "divergence", "real_divergence")},
                   "sample": sample, "command": "rnnlab " + " ".join(argv)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("exposure_curves",)}), flush=True)
    res["rows"] = rows
    res["config"]["load_average_at_end"] = os.getloadavg()
    md = [f"Feeding strategies, {res['config']['date']} on {res['config']['machine']}; {args.budget:.0f} s of "
          f"training each, LSTM 2 x {args.hidden_size}, tiny-shakespeare 90/10\n",
          "| strategy | steps | val bpc (teacher-forced) | ref. 5-gram bits: generated - real | bigram JS divergence "
          "(floor) | step cost vs teacher |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        e = r["exposure"]
        md.append(f"| {r['strategy']} | {r['steps']} | {r['best_val_bpc']:.3f} | {e['ref_gap_bits']:+.3f} | "
                  f"{e['divergence']:.4f} ({e['real_divergence']:.4f}) | "
                  + (f"{r['cost_ratio']:.2f}x" + (f" (gate off {r['cost_ratio_gate_off']:.2f}x)"
                                                   if r.get("cost_ratio_gate_off") else "") + " |"
                     if r["cost_ratio"] is not None else "|"))
    md.append("\nGoals: scheduled sampling <= 2x teacher forcing per step, professor forcing <= 4x.\n")
    md += ["## Samples (temperature 0.8, seed 1)\n"] + [f"**{r['strategy']}**\n\n```\n{r['sample']}\n```\n" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
