"""Scaling out: one process against ``torchrun --nproc_per_node=2`` on this machine.

Each configuration trains the same language model on the same corpus with the same
global batch for the same wall-clock budget, once as one process using every core
(``--threads 0``: PyTorch's default) and once as two processes of one thread each
(torchrun sets ``OMP_NUM_THREADS=1``; gloo all-reduces the gradients). Reported:
training characters per second (all ranks together), steps taken, and the validation
bits per character the run ends with. The runs go one after another (never two at
once) and each runs in a fresh interpreter.

Across machines the same run is, on every machine (node_rank 0..N-1):

    torchrun --nnodes=N --node_rank=R --nproc_per_node=P --master_addr=HOST0 --master_port=29500 \\
        -m rnnlab train --data FILE --batch-size 64 ...

    .venv/bin/python benchmarks/bench_scaling.py               # about 5 minutes
    .venv/bin/python benchmarks/bench_scaling.py --budget 10   # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import cpu_model, git_commit  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def run(nproc: int, model: list[str], data: str, budget: float, out: Path) -> dict[str, Any]:
    args = ["--data", data, *model, "--time-budget", str(budget), "--eval-interval", "1000000", "--out", str(out),
            "--quiet", "--json", "--seed", "0"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "rnnlab", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "rnnlab", "train", *args]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun sets 1 per process
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=budget * 4 + 300)
    if r.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    return {"processes": nproc, "chars_per_sec": summary["tokens_per_sec"], "steps": summary["steps"],
            "val_bpc": summary["val_bpc"], "elapsed_s": summary["elapsed_s"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=60.0, help="seconds of training per run")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="hidden sizes (2-layer LSTM)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    data = str(SHAKESPEARE) if SHAKESPEARE.exists() else "builtin:python-stdlib"
    meta = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_model(),
            "cpus": os.cpu_count(), "commit": git_commit(), "data": data, "budget_s": args.budget,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"rnnlab scaling: 1 process vs torchrun 2 processes  {meta['started']}\n  {meta['cpu']}, "
          f"{meta['cpus']} CPUs, commit {meta['commit']}, load {meta['loadavg_start']}\n  data {data}, "
          f"{args.budget:.0f} s of training per run, batch 64 x 100, Adam")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for h in args.sizes:
            model = ["--cell", "lstm", "--hidden-size", str(h), "--num-layers", "2", "--batch-size", "64",
                     "--seq-len", "100", "--dropout", "0"]
            for nproc in (1, 2):
                r = run(nproc, model, data, args.budget, Path(tmp) / f"h{h}-p{nproc}")
                r["model"] = f"lstm 2x{h}"
                rows.append(r)
                print(f"  lstm 2x{h:<4} {nproc} process(es): {r['chars_per_sec']:9,.0f} chars/s, {r['steps']:5d} "
                      f"steps, val {r['val_bpc']:.3f} bpc")
    for r in rows:
        one = next(x for x in rows if x["model"] == r["model"] and x["processes"] == 1)
        r["speedup"] = r["chars_per_sec"] / one["chars_per_sec"]
    meta["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    lines = ["| model | processes | threads each | chars/s | vs 1 process | steps | val bpc after the budget |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['processes']} | {'all' if r['processes'] == 1 else 1} | "
                     f"{r['chars_per_sec']:,.0f} | {r['speedup']:.2f} | {r['steps']} | {r['val_bpc']:.3f} |")
    md = (f"# Scaling: one process against two (torchrun, gloo)\n\n{meta['cpu']}, {meta['cpus']} CPUs; "
          f"{meta['started']} to {meta['finished']}; load average {meta['loadavg_start']} -> "
          f"{meta['loadavg_end']}.\nData {data} (90/10 split), 2-layer LSTM, batch 64 x 100 (global), Adam, "
          f"{args.budget:.0f} s of training each, runs one after another.\n"
          f"Command: `.venv/bin/python benchmarks/bench_scaling.py --budget {args.budget:.0f}`\n\n"
          + "\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    (args.out / "scaling.md").write_text(md, encoding="utf-8")
    print(f"wrote {args.out / 'scaling.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
