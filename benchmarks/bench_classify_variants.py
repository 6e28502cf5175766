"""Surnames by language: how far do other settings, logit adjustment and an ensemble get?

The goal (>= 85% accuracy and >= 70% balanced accuracy on the duplicate-free split)
is far above what the classifier defaults reach (``bench_classify.py``). This script
trains a set of variants of ``rnnlab classify train`` on the same split, each for
``--budget`` seconds with 2 intra-op threads, ``--jobs`` of them at a time, and reports
for each the test accuracy and balanced accuracy of its best checkpoint (chosen on
validation accuracy), then two things no single run shows:

* post-hoc logit adjustment (Menon et al. 2021): predict
  :math:`\\arg\\max_c \\log p_c - \\tau \\log \\pi_c` with :math:`\\pi` the training class
  frequencies, for tau in 0 (plain argmax), 0.25, ..., 1 (every class a priori equal),
  and tau chosen on validation to maximise accuracy + balanced accuracy;
* the ensemble of all variants (mean log-probabilities), with the same adjustment.

    .venv/bin/python benchmarks/bench_classify_variants.py                      # 8 x 300 s, one at a time
    python3 benchmarks/bench_classify_variants.py --jobs 8 --budget 240         # a 16-core machine

Runs are independent processes of 2 threads each: on the 2 cores here use ``--jobs 1``.
Writes ``benchmarks/results/classify_variants.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS: dict[str, list[str]] = {
    "defaults (bi-GRU 256, sqrt weights)": [],
    "class weights N/(C n_c)": ["--balance", "weights"],
    "balanced sampling": ["--balance", "sampling"],
    "no balancing": ["--balance", "none"],
    "hidden 512": ["--hidden-size", "512"],
    "2 layers": ["--num-layers", "2"],
    "dropout 0.5, embedding 128": ["--dropout", "0.5", "--embedding-size", "128"],
    "LSTM": ["--cell", "lstm"],
}
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def worker(index: int, budget: float, data: str, folder: str) -> None:
    """Train variant ``index`` and write its summary and val/test probabilities to ``folder``."""
    from rnnlab.classify import _prepare, encode_inputs, load_classifier, predict_proba, train_classifier
    from rnnlab.cli import build_parser, classify_config_from_args

    name = list(VARIANTS)[index]
    argv = ["classify", "train", "--data", data, "--time-budget", str(budget), "--threads", "2",
            "--out", f"{folder}/run{index}", "--quiet", *VARIANTS[name]]
    cfg = classify_config_from_args(build_parser().parse_args(argv))
    s = train_classifier(cfg, progress=False)
    model, ckpt = load_classifier(f"{folder}/run{index}")
    data_, classes, y, split, vocab = _prepare(cfg, ckpt.vocab, ckpt.labels)
    out: dict[str, Any] = {"variant": name, "command": "rnnlab " + " ".join(argv),
                           **{k: s.get(k) for k in ("test_acc", "test_balanced_acc", "val_acc", "steps", "epochs",
                                                    "seqs_per_sec")},
                           "prior": np.bincount(y[split["train"]], minlength=len(classes)).tolist()}
    for part in ("val", "test"):
        idx = split[part]
        probs = predict_proba(model, encode_inputs([data_.inputs[i] for i in idx], vocab))
        out[part] = {"y": y[idx].tolist(), "logp": np.log(np.maximum(probs, 1e-12)).tolist()}
    Path(folder, f"run{index}.json").write_text(json.dumps(out))


def scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present in y)."""
    recall = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return float((pred == y).mean()), float(np.mean(recall))


def adjusted(logp: dict[str, np.ndarray], y: dict[str, np.ndarray], log_prior: np.ndarray) -> dict[str, Any]:
    """Val and test scores for every tau, and tau chosen on validation (max accuracy + balanced accuracy)."""
    table = {tau: {part: scores(y[part], (logp[part] - tau * log_prior).argmax(1)) for part in ("val", "test")}
             for tau in TAUS}
    best = max(TAUS, key=lambda t: sum(table[t]["val"]))
    return {"by_tau": {str(t): v for t, v in table.items()}, "chosen_tau": best, "chosen_test": table[best]["test"]}


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    md = [f"Surnames by language: variants, logit adjustment and an ensemble; {c['date']} on {c['machine']}, "
          f"{c['jobs']} run(s) at a time, 2 threads each, {c['budget']:.0f} s per variant, load average at start "
          f"{c['load_average_at_start'][0]:.2f}\n",
          "goal: >= 85% accuracy and >= 70% balanced accuracy; test split, best checkpoint by validation "
          "accuracy; tau: logit adjustment chosen on validation\n",
          "| variant | epochs | test acc | test balanced acc | tau | test acc (adjusted) | test balanced acc "
          "(adjusted) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"] + [res["ensemble"]]:
        a = r["adjusted"]
        plain = a["by_tau"]["0.0"]["test"]
        epochs = f"{r['epochs']:.1f}" if r.get("epochs") is not None else ""
        md.append(f"| {r['variant']} | {epochs} | {plain[0]:.3f} | {plain[1]:.3f} | {a['chosen_tau']} | "
                  f"{a['chosen_test'][0]:.3f} | {a['chosen_test'][1]:.3f} |")
    md += ["", "Every tau, test (accuracy / balanced accuracy):", "",
           "| variant | " + " | ".join(f"tau {t}" for t in TAUS) + " |", "|---|" + "---:|" * len(TAUS)]
    for r in res["rows"] + [res["ensemble"]]:
        md.append(f"| {r['variant']} | " + " | ".join(
            "{:.3f} / {:.3f}".format(*r["adjusted"]["by_tau"][str(t)]["test"]) for t in TAUS) + " |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=Path, default=SHARED / "names_clean")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training per variant")
    ap.add_argument("--jobs", type=int, default=1, help="variants trained at a time (2 threads each)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "classify_variants.json")
    args = ap.parse_args()
    if not args.names.is_dir():
        print(f"bench_classify_variants: {args.names} is missing (the shared names data)", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.budget <= 0:
        print("bench_classify_variants: --jobs must be >= 1 and --budget > 0", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                                      "jobs": args.jobs, "budget": args.budget, "load_average_at_start": os.getloadavg()}}
    print(json.dumps(res["config"]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryDirectory() as tmp:
        pending, running = list(range(len(VARIANTS))), []
        while pending or running:
            while pending and len(running) < args.jobs:
                i = pending.pop(0)
                running.append(subprocess.Popen([sys.executable, __file__, "--worker", str(i), str(args.budget),
                                                 str(args.names), tmp], env=env))
            running[0].wait()
            if running[0].returncode != 0:
                print(f"bench_classify_variants: a run failed (exit {running[0].returncode})", file=sys.stderr)
                return 1
            running.pop(0)
        runs = [json.loads(Path(tmp, f"run{i}.json").read_text()) for i in range(len(VARIANTS))]
    log_prior = np.log(np.asarray(runs[0]["prior"], dtype=np.float64) / sum(runs[0]["prior"]))
    y = {part: np.asarray(runs[0][part]["y"]) for part in ("val", "test")}
    rows = []
    for r in runs:
        logp = {part: np.asarray(r[part]["logp"]) for part in ("val", "test")}
        rows.append({k: r[k] for k in ("variant", "command", "test_acc", "test_balanced_acc", "val_acc", "steps",
                                       "epochs", "seqs_per_sec")} | {"adjusted": adjusted(logp, y, log_prior)})
        print(json.dumps({k: rows[-1][k] for k in ("variant", "test_acc", "test_balanced_acc", "epochs")}), flush=True)
    mean = {part: np.mean([np.asarray(r[part]["logp"]) for r in runs], axis=0) for part in ("val", "test")}
    res["rows"] = rows
    res["ensemble"] = {"variant": f"ensemble of all {len(runs)}", "adjusted": adjusted(mean, y, log_prior)}
    res["config"]["load_average_at_end"] = os.getloadavg()
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5])
        sys.exit(0)
    sys.exit(main())
