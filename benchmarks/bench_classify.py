"""Sequence classification benchmarks: surnames, words by language, and digits as sequences.

Every set is split by ``rnnlab classify train``'s defaults (10% of each class's distinct inputs for
validation, 10% for the test, stratified, identical inputs in one split) for each of several split
seeds, and trained for ``--budget`` CPU seconds (default 300) with the classifier defaults. Test
accuracy and balanced accuracy (of the best checkpoint) sit beside the references fitted on the very
same split (``benchmarks/bench_classify_reference.py``'s per-split results, read from
``results/classify_reference.json``): the char n-gram logistic regression, and the Kneser-Ney
character model per class. Goal: beat the logistic regression on both, as a mean over the splits.

* ``names``: surnames by language (``../shared/data/names_clean``, 18 languages, 20,050 names,
  unbalanced), split seeds 0..4;
* ``words10``, ``words-related``: words of 4-14 letters by language (2,000 a class, ten classes;
  ``benchmarks/classify_sets.py`` builds them from the ``wordfreq`` lists into the data cache),
  split seeds 0..2;
* ``digits``: scikit-learn's 8x8 digits, each row of pixels one time step, split seeds 0..2.
  Goal: >= 98% accuracy on average.

Every run uses ``rnnlab.classify.train_classifier`` as ``rnnlab classify train`` does, with one
thread and a budget of its own CPU seconds (``--threads 1 --clock cpu``: what an idle core gives,
whatever else the machine runs), ``--jobs`` runs at a time (each its own process); arguments after
``--`` are ``rnnlab classify train`` options applied to every run (and may override those two).

    .venv/bin/python benchmarks/bench_classify.py                     # every set: about 70 CPU-minutes
    .venv/bin/python benchmarks/bench_classify.py --sets words10 words-related --jobs 2
    .venv/bin/python benchmarks/bench_classify.py --sets digits --cells gru
    .venv/bin/python benchmarks/bench_classify.py --sets names -- --balance weights

Writes ``benchmarks/results/classify.json`` and ``classify.md``; a set not run keeps its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import split_rnnlab_options, write_results  # noqa: E402
from bench_classify_reference import REFERENCE_FILE  # noqa: E402
from classify_sets import SETS as WORD_SETS  # noqa: E402
from classify_sets import ensure as ensure_set  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KEYS = ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc", "steps", "epochs", "elapsed_s", "seqs_per_sec")
SETS: dict[str, tuple[str, int]] = {  # set -> (title, split seeds by default)
    "names": ("Surnames by language (names_clean, split by distinct name)", 5),
    **{name: (f"{name}: {spec.what}", 3) for name, spec in WORD_SETS.items()},
    "digits": ("8x8 digits as sequences of 8 rows", 3),
}
GOAL = ("goal: above the char n-gram logistic regression on the same split, in accuracy and balanced accuracy, "
        "as a mean over the splits")


def run(data_args: list[str], cell: str, budget: float, extra: list[str], out: Path, seed: int) -> dict[str, Any]:
    from rnnlab.classify import train_classifier
    from rnnlab.cli import build_parser, classify_config_from_args

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


def references(part: str) -> dict[int, dict[str, tuple[float, float]]]:
    """Each split seed's test (accuracy, balanced accuracy) of the references fitted on it: ``logistic``
    and ``kneser_ney``."""
    try:
        ref = json.loads(REFERENCE_FILE.read_text())
        rows = ref["seeds"] if part == "names" else ref["sets"][part]["seeds"]
        return {int(r["split_seed"]): {k: tuple(r[k]) for k in ("logistic", "kneser_ney")} for r in rows}
    except (OSError, ValueError, KeyError):
        return {}


def markdown(res: dict[str, Any]) -> str:
    md = [f"Classification benchmarks, {res['config']['date']} on {res['config']['machine']}, torch "
          f"{res['config']['torch']}\n"]
    for part, (title, _) in SETS.items():
        if part not in res:
            continue
        rows = res[part]
        when = res.get(f"{part}_run", {})
        load = when.get("load_average_at_start")
        refs = references(part) if part != "digits" else {}
        goal = "goal: >= 98% accuracy on average" if part == "digits" else GOAL
        extra = when.get("extra_options")
        md += [f"## {title}\n", f"{goal}; command of each row in classify.json; run {when.get('date', '?')}"
               + (f", load average at its start {load[0]:.2f}" if load else "")
               + (f"; **options beyond the defaults: `{' '.join(extra)}`**" if extra else "") + "\n",
               "| cell | split | budget (s) | steps | epochs | seqs/s | tau | test acc | test balanced acc | "
               "test macro F1 | logistic regression (acc / balanced) | Kneser-Ney per class (acc / balanced) |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            ref = refs.get(r.get("split_seed", 0), {})
            tau = r.get("val_tau")
            md.append(f"| {r['cell']} | {r.get('split_seed', 0)} | {r['budget_s']:.0f} | {r['steps']} | "
                      f"{r['epochs']:.1f} | {r['seqs_per_sec']:,.0f} | {'' if tau is None else f'{tau:.3g}'} | "
                      f"{r['test_acc']:.3f} | {r['test_balanced_acc']:.3f} | {r['test_macro_f1']:.3f} | "
                      + " | ".join(f"{ref[k][0]:.3f} / {ref[k][1]:.3f}" if k in ref else ""
                                   for k in ("logistic", "kneser_ney")) + " |")
        for cell in sorted({r["cell"] for r in rows}):
            mine = [r for r in rows if r["cell"] == cell]
            if len(mine) < 2:
                continue
            acc, bal = (float(np.mean([r[k] for r in mine])) for k in ("test_acc", "test_balanced_acc"))
            line = f"| {cell} | mean of {len(mine)} | | | | | | **{acc:.4f}** | **{bal:.4f}** | | "
            ref_rows = [refs[r["split_seed"]] for r in mine if r.get("split_seed") in refs]
            if part != "digits" and ref_rows and len(ref_rows) == len(mine):
                ra, rb = (float(np.mean([x["logistic"][i] for x in ref_rows])) for i in (0, 1))
                ka, kb = (float(np.mean([x["kneser_ney"][i] for x in ref_rows])) for i in (0, 1))
                beat = "✓" if acc > ra and bal > rb else "✗"
                line += f"{ra:.4f} / {rb:.4f} {beat} | {ka:.4f} / {kb:.4f} |"
            else:
                line += ("✓" if part == "digits" and acc >= 0.98 else "✗" if part == "digits" else "") + " | |"
            md.append(line)
        md.append("")
    return "\n".join(md) + "\n"


def main() -> int:
    own, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", "--parts", nargs="+", default=list(SETS), choices=list(SETS), dest="sets",
                    help="the sets to run (default: all)")
    ap.add_argument("--cells", nargs="+", default=["gru"], choices=["elman", "elman-relu", "lstm", "gru"],
                    help="cells to run (default: the classifier's default, gru)")
    ap.add_argument("--split-seeds", type=int, nargs="+", default=None,
                    help="split seeds (default: 0..4 for names, 0..2 for the others)")
    ap.add_argument("--names", type=Path, default=SHARED / "names_clean")
    ap.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per run (default 300)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each a process of one thread (default 1)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "classify.json")
    ap.add_argument("--runs", type=Path, default=None,
                    help="keep every run's folder under this one (default: a temporary folder, removed)")
    args = ap.parse_args(own)
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                                      "torch": torch.__version__, "threads": 1, "jobs": args.jobs,
                                      "load_average_at_start": os.getloadavg(), "extra_options": extra,
                                      "args": {k: str(v) for k, v in vars(args).items()}}}
    print(json.dumps(res["config"]), flush=True)
    if "names" in args.sets and not args.names.is_dir():
        print(f"bench_classify: {args.names} is missing (the shared names data)", file=sys.stderr)
        return 2
    data = {"names": ["--data", str(args.names)], "digits": ["--builtin", "digits"],
            **{name: ["--data", str(ensure_set(name))] for name in WORD_SETS if name in args.sets}}
    if args.runs is not None:
        args.runs.mkdir(parents=True, exist_ok=True)
    runs = contextlib.nullcontext(str(args.runs)) if args.runs is not None else tempfile.TemporaryDirectory()
    with runs as tmp, ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        start = {"date": dt.datetime.now().isoformat(timespec="seconds"), "load_average_at_start": os.getloadavg()}
        futures = {part: [pool.submit(run, data[part], cell, args.budget, extra, Path(tmp) / f"{part}-{cell}-{seed}", seed)
                          for cell in args.cells for seed in (args.split_seeds or list(range(SETS[part][1])))]
                   for part in args.sets}  # every run queued at once: --jobs of them at a time, across the sets
        for part in args.sets:
            res[part] = [f.result() for f in futures[part]]
            res[f"{part}_run"] = {**start, "load_average_at_end": os.getloadavg(), "extra_options": extra}
    res["config"]["load_average_at_end"] = os.getloadavg()
    if args.out.exists():  # a set not run now keeps its rows from the file, marked with their own date
        try:
            old = json.loads(args.out.read_text())
        except (OSError, ValueError):
            old = {}
        for part in SETS:
            if part not in res and part in old:
                res[part] = old[part]
                res[f"{part}_run"] = old.get(f"{part}_run", {"date": old.get("config", {}).get("date"),
                                                             "load_average_at_start":
                                                                 old.get("config", {}).get("load_average_at_start")})
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
