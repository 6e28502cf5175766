"""Classifier variants and repeated runs on one split: each alone, all of them pooled, and the references.

Two questions that one run of ``bench_classify.py`` cannot answer:

* **which settings help**: ``--variants`` (the default) trains the classifier's defaults and
  each of :data:`VARIANTS` (options added to the defaults);
* **how much of a gap is chance**: ``--seeds N`` trains the defaults N times, ``--seed 0..N-1``
  (other initial weights, dropout masks and batch order; the same split).

Every run is ``rnnlab classify train`` on the split ``--split-seed`` of ``--set`` for ``--budget``
CPU seconds with one thread (``--threads 1 --clock cpu``, as ``bench_classify.py``), ``--jobs`` at a
time. For each run, and for the pool of all runs (the mean of their probabilities, as an ensemble
predicts), the test accuracy, balanced accuracy and cross entropy, and post-hoc logit adjustment
(Menon et al. 2021): :math:`\\arg\\max_c \\log p_c - \\tau \\log \\pi_c` (pi the training class
frequencies) for tau in 0, 0.25, ..., 1, and the tau chosen on validation (accuracy + balanced
accuracy). On a balanced set every tau gives the same answer.

Beside them, the char n-gram logistic regression fitted on the same split, with the setting
``bench_classify_reference.py`` chose (read from ``results/classify_reference.json``): the
reference the classifier must beat, with its own cross entropy.

    .venv/bin/python benchmarks/bench_classify_variants.py --jobs 2                          # names, 9 runs
    .venv/bin/python benchmarks/bench_classify_variants.py --set words10 --split-seed 1 --seeds 4 --jobs 2

Writes ``benchmarks/results/classify_variants_<set>.json`` (``--variants``) or
``classify_seeds_<set>.json`` (``--seeds``), and ``.md`` beside it.
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from bench_classify_reference import REFERENCE_FILE, fit_logistic, load_split, scores  # noqa: E402
from classify_sets import SETS as WORD_SETS  # noqa: E402
from classify_sets import ensure as ensure_set  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS: dict[str, list[str]] = {  # label -> options added to the classifier's defaults
    "the defaults": [],
    "--balance weights": ["--balance", "weights"],
    "--balance none": ["--balance", "none"],
    "--ensemble 1 --hidden-size 256": ["--ensemble", "1", "--hidden-size", "256"],
    "--num-layers 2": ["--num-layers", "2"],
    "--cell lstm": ["--cell", "lstm"],
    "--label-smoothing 0.1": ["--label-smoothing", "0.1"],
    "--input-dropout 0": ["--input-dropout", "0"],
    "--weight-decay 0": ["--weight-decay", "0"],
}
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)
SET_CHOICES = ("names", *WORD_SETS)


def train_one(label: str, options: list[str], data: str, split_seed: int, budget: float, out: str
              ) -> dict[str, Any]:
    """Train one run; its summary and its val/test probabilities."""
    from rnnlab.classify import encode_inputs, load_classifier, predict_proba, split_examples_of, train_classifier
    from rnnlab.cli import build_parser, classify_config_from_args

    argv = ["classify", "train", "--data", data, "--split-seed", str(split_seed), "--time-budget", str(budget),
            "--threads", "1", "--clock", "cpu", "--out", out, "--quiet", *options]
    s = train_classifier(classify_config_from_args(build_parser().parse_args(argv)), progress=False)
    model, ckpt = load_classifier(out)
    model.logit_shift = None  # the plain probabilities: every tau is applied here
    row: dict[str, Any] = {"variant": label, "command": "rnnlab " + " ".join(argv),
                           **{k: s.get(k) for k in ("test_acc", "test_balanced_acc", "steps", "epochs")}}
    for part in ("val", "test"):
        inputs, labels = split_examples_of(out, part)
        row[part] = {"y": [ckpt.labels.index(x) for x in labels],
                     "p": predict_proba(model, encode_inputs(inputs, ckpt.vocab)).tolist()}
    print(json.dumps({k: row[k] for k in ("variant", "test_acc", "test_balanced_acc", "steps")}), flush=True)
    return row


def judged(p: dict[str, np.ndarray], y: dict[str, np.ndarray], log_prior: np.ndarray) -> dict[str, Any]:
    """Test cross entropy; val and test scores for every tau, and tau chosen on validation."""
    logp = {part: np.log(np.maximum(p[part], 1e-12)) for part in p}
    table = {tau: {part: scores(y[part], (logp[part] - tau * log_prior).argmax(1)) for part in ("val", "test")}
             for tau in TAUS}
    best = max(TAUS, key=lambda t: sum(table[t]["val"]))
    return {"test_cross_entropy": float(-logp["test"][np.arange(len(y["test"])), y["test"]].mean()),
            "by_tau": {str(t): v for t, v in table.items()}, "chosen_tau": best, "chosen_test": table[best]["test"]}


def logistic_reference(data: Path, set_name: str, split_seed: int, classes: int) -> dict[str, Any] | None:
    """The logistic regression of ``bench_classify_reference.py``'s chosen setting, fitted on this split."""
    try:
        ref = json.loads(REFERENCE_FILE.read_text())
        chosen = ref["chosen"] if set_name == "names" else ref["sets"][set_name]["chosen"]
    except (OSError, ValueError, KeyError):
        return None
    names, ys, _, _ = load_split(data, split_seed)
    w = None if chosen["class_weight"] == "none" else chosen["class_weight"]
    model = fit_logistic(names["train"], ys["train"], chosen["ngram_max"], chosen["C"], w)
    p = model.predict_proba(names["test"])  # (N, C) in the classifier's class order (labels 0..C-1)
    y = ys["test"]
    assert p.shape[1] == classes
    return {"setting": {k: chosen[k] for k in ("ngram_max", "C", "class_weight")},
            "test": scores(y, p.argmax(1)),
            "test_cross_entropy": float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())}


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    md = [f"Classifier {c['mode']} on {c['set']}, split seed {c['split_seed']}; {c['date']} on {c['machine']}, "
          f"{c['jobs']} run(s) at a time, one thread each, {c['budget']:.0f} CPU-s a run, load average at start "
          f"{c['load_average_at_start'][0]:.2f}\n",
          "test split; tau: logit adjustment chosen on validation; pool: the mean of every run's probabilities\n",
          "| run | steps | epochs | test acc | test balanced acc | test cross entropy | tau | test acc (adjusted) "
          "| test balanced acc (adjusted) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"] + [res["pool"]]:
        j = r["judged"]
        plain = j["by_tau"]["0.0"]["test"]
        steps = f"{r['steps']}" if r.get("steps") is not None else ""
        epochs = f"{r['epochs']:.1f}" if r.get("epochs") is not None else ""
        md.append(f"| {r['variant']} | {steps} | {epochs} | {plain[0]:.4f} | {plain[1]:.4f} | "
                  f"{j['test_cross_entropy']:.4f} | {j['chosen_tau']} | {j['chosen_test'][0]:.4f} | "
                  f"{j['chosen_test'][1]:.4f} |")
    lr = res.get("logistic")
    if lr:
        s = lr["setting"]
        md.append(f"| char n-gram logistic regression (1..{s['ngram_max']}-grams, C {s['C']:g}, class weight "
                  f"{s['class_weight']}) | | | {lr['test'][0]:.4f} | {lr['test'][1]:.4f} | "
                  f"{lr['test_cross_entropy']:.4f} | | | |")
    md += ["", "Every tau, test (accuracy / balanced accuracy):", "",
           "| run | " + " | ".join(f"tau {t}" for t in TAUS) + " |", "|---|" + "---:|" * len(TAUS)]
    for r in res["rows"] + [res["pool"]]:
        md.append(f"| {r['variant']} | " + " | ".join(
            "{:.3f} / {:.3f}".format(*r["judged"]["by_tau"][str(t)]["test"]) for t in TAUS) + " |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="names", choices=SET_CHOICES, help="the labelled set (default names)")
    ap.add_argument("--split-seed", type=int, default=0, help="the split (default 0)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--variants", action="store_true", help="the defaults and every variant (the default)")
    mode.add_argument("--seeds", type=int, default=0, help="instead: the defaults with training seeds 0..N-1")
    ap.add_argument("--names", type=Path, default=SHARED / "names_clean")
    ap.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training a run (default 300)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each a process of one thread")
    ap.add_argument("--out", type=Path, default=None, help="the results file (default: results/classify_"
                    "variants_<set>.json, or classify_seeds_<set>.json with --seeds)")
    args = ap.parse_args()
    if args.jobs < 1 or args.budget <= 0 or args.seeds < 0 or args.seeds == 1:
        print("bench_classify_variants: --jobs must be >= 1, --budget > 0 and --seeds >= 2", file=sys.stderr)
        return 2
    if args.set == "names" and not args.names.is_dir():
        print(f"bench_classify_variants: {args.names} is missing (the shared names data)", file=sys.stderr)
        return 2
    data = args.names if args.set == "names" else ensure_set(args.set)
    runs = ({f"--seed {i}": ["--seed", str(i)] for i in range(args.seeds)} if args.seeds else VARIANTS)
    kind = "seeds" if args.seeds else "variants"
    out = args.out or Path(__file__).parent / "results" / f"classify_{kind}_{args.set}.json"
    res: dict[str, Any] = {"config": {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "mode": kind, "set": args.set,
        "split_seed": args.split_seed, "data": str(data),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jobs": args.jobs, "budget": args.budget, "load_average_at_start": os.getloadavg()}}
    print(json.dumps(res["config"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_one, label, options, str(data), args.split_seed, args.budget,
                               f"{tmp}/run{i}") for i, (label, options) in enumerate(runs.items())]
        rows = [f.result() for f in futures]
    y = {part: np.asarray(rows[0][part]["y"]) for part in ("val", "test")}
    names, ys, classes, _ = load_split(data, args.split_seed)
    assert all((ys[part] == y[part]).all() for part in y), "the runs' split differs from the references' split"
    log_prior = np.log(np.bincount(ys["train"], minlength=classes) / len(ys["train"]))
    probs = [{part: np.asarray(r[part]["p"]) for part in ("val", "test")} for r in rows]
    for r, p in zip(rows, probs):
        r["judged"] = judged(p, y, log_prior)
        del r["val"], r["test"]
    pool = {part: np.mean([p[part] for p in probs], axis=0) for part in ("val", "test")}
    res["rows"] = rows
    res["pool"] = {"variant": f"pool of all {len(rows)}", "judged": judged(pool, y, log_prior)}
    res["logistic"] = logistic_reference(data, args.set, args.split_seed, classes)
    res["config"]["load_average_at_end"] = os.getloadavg()
    write_results(out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
