"""Sequence classification benchmarks: surnames by language, and digits as sequences.

1. Surnames (``../shared/data/names_clean``, 18 languages, 20,050 names): the split is by
   distinct name (every copy of a name in one split), stratified by language, 80/10/10.
   Test accuracy and balanced accuracy of the best checkpoint (chosen on validation) for
   elman, lstm and gru, each trained for ``--names-budget`` seconds (default 300) with the
   classifier defaults. Goal: >= 85% accuracy and >= 70% balanced accuracy in 5 minutes.
   The PyTorch tutorial reports no test accuracy; a plain 2x256 GRU with sqrt class
   weights reaches 80% / 55% in 4 minutes on this split.
2. scikit-learn's 8x8 digits, each row of pixels one time step: test accuracy for the
   three cells after ``--digits-budget`` seconds (default 90). Goal: >= 97%.

Every run uses ``rnnlab.classify.train_classifier`` as ``rnnlab classify train`` does;
arguments after ``--`` are ``rnnlab classify train`` options applied to every run.

    .venv/bin/python benchmarks/bench_classify.py                     # about 20 minutes
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import split_rnnlab_options, write_results  # noqa: E402

from rnnlab.classify import train_classifier  # noqa: E402
from rnnlab.cli import build_parser, classify_config_from_args  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KEYS = ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc", "steps", "epochs", "elapsed_s", "seqs_per_sec")


def run(data_args: list[str], cell: str, budget: float, extra: list[str], out: Path) -> dict[str, Any]:
    argv = ["classify", "train", *data_args, "--cell", cell, "--time-budget", str(budget), "--out", str(out),
            "--quiet", *extra]
    ns = build_parser().parse_args(argv)
    cfg = classify_config_from_args(ns)
    s = train_classifier(cfg, progress=False)
    row = {"cell": cell, "budget_s": budget, **{k: s.get(k) for k in KEYS}, "examples": s["examples"],
           "command": "rnnlab " + " ".join(argv), "config": cfg.to_dict()}
    print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    return row


def markdown(res: dict[str, Any]) -> str:
    md = [f"Classification benchmarks, {res['config']['date']} on {res['config']['machine']}, torch "
          f"{res['config']['torch']}\n"]
    for part, title, goal in (("names", "Surnames by language (names_clean, split by distinct name)",
                               "goal: >= 85% accuracy, >= 70% balanced accuracy in 5 minutes"),
                              ("digits", "8x8 digits as sequences of 8 rows", "goal: >= 97% accuracy")):
        if part not in res:
            continue
        rows = res[part]
        when = res.get(f"{part}_run", {})
        load = when.get("load_average_at_start")
        md += [f"## {title}\n", f"{goal}; command of each row in classify.json; run {when.get('date', '?')}"
               + (f", load average at its start {load[0]:.2f}" if load else "") + "\n",
               "| cell | budget (s) | steps | epochs | seqs/s | test acc | test balanced acc | test macro F1 |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {r['cell']} | {r['budget_s']:.0f} | {r['steps']} | {r['epochs']:.1f} | {r['seqs_per_sec']:,.0f} | "
               f"{r['test_acc']:.3f} | {r['test_balanced_acc']:.3f} | {r['test_macro_f1']:.3f} |" for r in rows]
        md.append("")
    return "\n".join(md) + "\n"


def main() -> int:
    own, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["names", "digits"], choices=["names", "digits"])
    ap.add_argument("--cells", nargs="+", default=["elman", "lstm", "gru"], choices=["elman", "lstm", "gru"])
    ap.add_argument("--names", type=Path, default=SHARED / "names_clean")
    ap.add_argument("--names-budget", type=float, default=300.0)
    ap.add_argument("--digits-budget", type=float, default=90.0)
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
            res[part] = [run(data, cell, budget, extra, Path(tmp) / f"{part}-{cell}") for cell in args.cells]
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
