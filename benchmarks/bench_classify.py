"""Sequence classification benchmarks: surnames by language, and digits as sequences.

1. Surnames (``../shared/data/names_clean``, 18 languages, 20,050 names): the split is by
   distinct name (every copy of a name in one split), stratified by language, 80/10/10,
   for each of ``--split-seeds`` (default 0..4). Test accuracy and balanced accuracy of
   the best checkpoint (chosen on validation) after ``--names-budget`` seconds (default
   300) with the classifier defaults, beside the char n-gram logistic regression fitted on
   the same split (``benchmarks/bench_classify_reference.py``'s per-split results, read
   from ``results/classify_reference.json``). Goal: beat it on both, as a mean over the splits.
2. scikit-learn's 8x8 digits, each row of pixels one time step: test accuracy after
   ``--digits-budget`` seconds (default 300, the five CPU minutes the names get), split seeds 0..2. Goal: >= 98% on average.

Every run uses ``rnnlab.classify.train_classifier`` as ``rnnlab classify train`` does, with one
thread and a budget of its own CPU seconds (``--threads 1 --clock cpu``: what an idle core gives,
whatever else the machine runs); arguments after ``--`` are ``rnnlab classify train`` options
applied to every run (and may override those two).

    .venv/bin/python benchmarks/bench_classify.py                     # about 40 CPU-minutes
    .venv/bin/python benchmarks/bench_classify.py --parts digits --cells gru
    .venv/bin/python benchmarks/bench_classify.py --parts names -- --balance weights

Writes ``benchmarks/results/classify.json`` and ``classify.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import split_rnnlab_options, write_results  # noqa: E402

from rnnlab.classify import train_classifier  # noqa: E402
from rnnlab.cli import build_parser, classify_config_from_args  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = Path(__file__).resolve().parent / "results" / "classify_reference.json"
KEYS = ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc", "steps", "epochs", "elapsed_s", "seqs_per_sec")


def run(data_args: list[str], cell: str, budget: float, extra: list[str], out: Path, seed: int) -> dict[str, Any]:
    argv = ["classify", "train", *data_args, "--cell", cell, "--time-budget", str(budget), "--split-seed", str(seed),
            "--out", str(out), "--quiet", "--threads", "1", "--clock", "cpu", *extra]
    ns = build_parser().parse_args(argv)
    cfg = classify_config_from_args(ns)
    s = train_classifier(cfg, progress=False)
    row = {"cell": cell, "split_seed": seed, "budget_s": budget, **{k: s.get(k) for k in KEYS},
           "val_tau": s.get("val_tau"), "examples": s["examples"],
           "command": "rnnlab " + " ".join(argv), "config": cfg.to_dict()}
    print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    return row


def references() -> dict[int, tuple[float, float]]:
    """The char n-gram logistic regression's test (accuracy, balanced accuracy) per names split seed."""
    try:
        ref = json.loads(REFERENCE.read_text())
        return {int(r["split_seed"]): tuple(r["logistic"]) for r in ref["seeds"]}
    except (OSError, ValueError, KeyError):
        return {}


def markdown(res: dict[str, Any]) -> str:
    md = [f"Classification benchmarks, {res['config']['date']} on {res['config']['machine']}, torch "
          f"{res['config']['torch']}\n"]
    for part, title, goal in (("names", "Surnames by language (names_clean, split by distinct name)",
                               "goal: above the char n-gram logistic regression on the same split, in accuracy "
                               "and balanced accuracy, as a mean over the splits"),
                              ("digits", "8x8 digits as sequences of 8 rows", "goal: >= 98% accuracy on average")):
        if part not in res:
            continue
        rows = res[part]
        when = res.get(f"{part}_run", {})
        load = when.get("load_average_at_start")
        refs = references() if part == "names" else {}
        md += [f"## {title}\n", f"{goal}; command of each row in classify.json; run {when.get('date', '?')}"
               + (f", load average at its start {load[0]:.2f}" if load else "") + "\n",
               "| cell | split | budget (s) | steps | epochs | seqs/s | tau | test acc | test balanced acc | "
               "test macro F1 | logistic regression (acc / balanced) |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            ref = refs.get(r.get("split_seed", 0))
            tau = r.get("val_tau")
            md.append(f"| {r['cell']} | {r.get('split_seed', 0)} | {r['budget_s']:.0f} | {r['steps']} | "
                      f"{r['epochs']:.1f} | {r['seqs_per_sec']:,.0f} | {'' if tau is None else f'{tau:.3g}'} | "
                      f"{r['test_acc']:.3f} | {r['test_balanced_acc']:.3f} | {r['test_macro_f1']:.3f} | "
                      + (f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else "") + " |")
        for cell in sorted({r["cell"] for r in rows}):
            mine = [r for r in rows if r["cell"] == cell]
            if len(mine) < 2:
                continue
            acc, bal = (float(np.mean([r[k] for r in mine])) for k in ("test_acc", "test_balanced_acc"))
            line = f"| {cell} | mean of {len(mine)} | | | | | | **{acc:.4f}** | **{bal:.4f}** | | "
            ref_rows = [refs[r["split_seed"]] for r in mine if r.get("split_seed") in refs]
            if part == "names" and len(ref_rows) == len(mine):
                ra, rb = (float(np.mean([x[i] for x in ref_rows])) for i in (0, 1))
                beat = "✓" if acc > ra and bal > rb else "✗"
                line += f"{ra:.3f} / {rb:.3f} {beat} |"
            else:
                line += ("✓" if part == "digits" and acc >= 0.98 else "✗" if part == "digits" else "") + " |"
            md.append(line)
        md.append("")
    return "\n".join(md) + "\n"


def main() -> int:
    own, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["names", "digits"], choices=["names", "digits"])
    ap.add_argument("--cells", nargs="+", default=["gru"], choices=["elman", "elman-relu", "lstm", "gru"],
                    help="cells to run (default: the classifier's default, gru)")
    ap.add_argument("--split-seeds", type=int, nargs="+", default=None,
                    help="split seeds (default: 0..4 for names, 0..2 for digits)")
    ap.add_argument("--names", type=Path, default=SHARED / "names_clean")
    ap.add_argument("--names-budget", type=float, default=300.0)
    ap.add_argument("--digits-budget", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "classify.json")
    args = ap.parse_args(own)
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                                      "load_average_at_start": os.getloadavg(), "extra_options": extra,
                                      "args": {k: str(v) for k, v in vars(args).items()}}}
    print(json.dumps(res["config"]), flush=True)
    if "names" in args.parts and not args.names.is_dir():
        print(f"bench_classify: {args.names} is missing (the shared names data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            data = ["--data", str(args.names)] if part == "names" else ["--builtin", "digits"]
            budget = args.names_budget if part == "names" else args.digits_budget
            start = {"date": dt.datetime.now().isoformat(timespec="seconds"), "load_average_at_start": os.getloadavg()}
            seeds = args.split_seeds or (list(range(5)) if part == "names" else list(range(3)))
            res[part] = [run(data, cell, budget, extra, Path(tmp) / f"{part}-{cell}-{seed}", seed)
                         for cell in args.cells for seed in seeds]
            res[f"{part}_run"] = {**start, "load_average_at_end": os.getloadavg()}
    res["config"]["load_average_at_end"] = os.getloadavg()
    if args.out.exists():  # a part not run now keeps its rows from the file, marked with their own date
        try:
            old = json.loads(args.out.read_text())
        except (OSError, ValueError):
            old = {}
        for part in ("names", "digits"):
            if part not in res and part in old:
                res[part] = old[part]
                res[f"{part}_run"] = old.get(f"{part}_run", {"date": old.get("config", {}).get("date"),
                                                             "load_average_at_start":
                                                                 old.get("config", {}).get("load_average_at_start")})
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
