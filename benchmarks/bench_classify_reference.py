"""Surnames by language: what the split allows, and what a model of another family reaches.

The RNN classifiers land near 77% accuracy and 59% balanced accuracy on the
duplicate-free split (``bench_classify.py``). Two references on the very same split (``rnnlab classify train``'s defaults: 10% of each
class's distinct names for validation, 10% for the test, seed 0) say how much of that gap
is the model's:

* **label-ambiguity bounds**: oracles that see the test labels. The names data lists many
  surnames under several languages, and a classifier of the name alone gives every copy
  of a name one label. Its accuracy is at most that of giving each name its most
  frequent label in the split; its balanced accuracy (mean recall over the classes) at
  most that of giving each name the label c with the largest n(name, c) / n_c, n_c the
  split's examples of class c (a copy of a rare class's name is worth more recall).
* **character n-grams + logistic regression** (scikit-learn), a discriminative model of
  another family: TF-IDF of the character 1..n-grams of each name (``char_wb``,
  sublinear tf) and a multinomial logistic regression, plain or with class weights
  N / (C n_c).
* **a Kneser-Ney language model per language** (rnnlab's own :class:`~rnnlab.ngram.NGramLM`),
  a generative classifier: each language's training names (distinct, or every copy) as
  one stream with a boundary between names; a name goes to the class c with the largest
  ln p_c(name) + tau ln pi_c (pi the training class frequencies: tau 1 is Bayes' rule,
  tau 0 a uniform prior, which favours balanced accuracy).

Every grid's setting is chosen on validation accuracy + balanced accuracy, as the RNN's
best checkpoint is chosen on validation. Then both references and bounds are rerun on
``--seeds`` other splits (the chosen logistic setting kept; the n-gram setting chosen
again on each split's validation), since the smallest classes have 7-14 test examples
and one split's balanced accuracy moves by several points.

The logistic regression is what the classifier must beat on each split; the bounds say how
far any classifier of the spelling alone could go.

The other sets of short strings (``--sets words10 words-related``, built by
``benchmarks/classify_sets.py`` into the data cache) get the same two references on the
classifier's split of each ``--seeds`` split seed: the logistic regression's setting chosen on
split 0's validation (class weights tried only where the classes are unequal), the Kneser-Ney
setting on each split's validation.

    .venv/bin/python benchmarks/bench_classify_reference.py      # names: about 8 minutes on 2 cores
    .venv/bin/python benchmarks/bench_classify_reference.py --sets words10 words-related --seeds 3

Writes ``benchmarks/results/classify_reference.json`` and ``.md``; a set not run keeps its
results from the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_results  # noqa: E402
from classify_sets import SETS  # noqa: E402
from classify_sets import ensure as ensure_set  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE_FILE = Path(__file__).resolve().parent / "results" / "classify_reference.json"  # what the others read
NGRAMS = (3, 4, 5)
CS = (3.0, 10.0, 30.0)
WEIGHTINGS = (None, "balanced")
KN_ORDERS = (3, 4, 5, 6)
KN_TAUS = (0.0, 0.5, 1.0)


def scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present in y)."""
    recall = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return float((pred == y).mean()), float(np.mean(recall))


def ceiling(names: list[str], y: np.ndarray) -> np.ndarray:
    """Each example predicted as the most frequent label of its name among ``names`` (ties: the first seen).

    No prediction that is a function of the name is right more often (accuracy's bound)."""
    votes: dict[str, Counter[int]] = {}
    for name, label in zip(names, y):
        votes.setdefault(name, Counter())[int(label)] += 1
    return np.array([votes[name].most_common(1)[0][0] for name in names])


def balanced_ceiling(names: list[str], y: np.ndarray) -> np.ndarray:
    """Each example predicted as argmax_c n(name, c) / n_c over ``names`` (balanced accuracy's bound).

    Balanced accuracy is sum_c (hits of class c) / (C n_c), and a name's copies all get
    one label, so the label with the largest n(name, c) / n_c adds the most to it for every
    name independently: no prediction that is a function of the name scores higher."""
    n_c = np.bincount(y)
    votes: dict[str, Counter[int]] = {}
    for name, label in zip(names, y):
        votes.setdefault(name, Counter())[int(label)] += 1
    best = {name: max(v, key=lambda c: v[c] / n_c[c]) for name, v in votes.items()}
    return np.array([best[name] for name in names])


def kneser_ney_scores(names: dict[str, list[str]], ys: dict[str, np.ndarray], classes: int, order: int,
                      distinct: bool) -> dict[str, np.ndarray]:
    """ln p_c(name) under each class's Kneser-Ney character model: (examples, classes) per split but train.

    The names of class c (each once when ``distinct``) are one stream ``\\n name \\n name ... \\n``
    with the newline as the boundary, so every name is scored from the start of a name and
    its final newline (the end) is predicted too."""
    from rnnlab.ngram import NGramLM

    chars = sorted(set("".join(n for split in names.values() for n in split)) | {"\n"})
    ids = {ch: i for i, ch in enumerate(chars)}

    def stream(ws: list[str]) -> np.ndarray:
        return np.array([ids[ch] for ch in "\n" + "\n".join(ws) + "\n"], dtype=np.int64)

    out = {s: np.zeros((len(names[s]), classes)) for s in names if s != "train"}
    owner = {s: np.repeat(np.arange(len(names[s])), [len(w) + 1 for w in names[s]]) for s in out}
    for c in range(classes):
        ws = [w for w, label in zip(names["train"], ys["train"]) if label == c]
        lm = NGramLM(order=order, smoothing="kneser-ney", boundary=ids["\n"])
        lm.fit(stream(sorted(set(ws)) if distinct else ws), len(chars))
        for s in out:
            out[s][:, c] = np.bincount(owner[s], weights=lm.log_prob(stream(names[s])), minlength=len(names[s]))
    return out


def kneser_ney_grid(names: dict[str, list[str]], ys: dict[str, np.ndarray], classes: int) -> list[dict[str, Any]]:
    """Every (order, distinct, tau) of the generative classifier, scored on val and test."""
    log_prior = np.log(np.bincount(ys["train"], minlength=classes) / len(ys["train"]))
    rows = []
    for order, distinct in itertools.product(KN_ORDERS, (True, False)):
        t0 = time.perf_counter()
        lp = kneser_ney_scores(names, ys, classes, order, distinct)
        for tau in KN_TAUS:
            rows.append({"order": order, "distinct": distinct, "tau": tau,
                         **{s: scores(ys[s], (lp[s] + tau * log_prior).argmax(1)) for s in ("val", "test")},
                         "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def fit_logistic(texts: list[str], y: np.ndarray, n: int, c: float, w: str | None) -> Any:
    """TF-IDF character 1..n-grams and a multinomial logistic regression fitted on ``texts``: a scikit-learn
    pipeline (``predict``, ``predict_proba`` of strings)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, n), lowercase=False, sublinear_tf=True)
    return make_pipeline(vec, LogisticRegression(C=c, class_weight=w, max_iter=3000)).fit(texts, y)


def logistic(names: dict[str, list[str]], ys: dict[str, np.ndarray], n: int, c: float, w: str | None
             ) -> dict[str, Any]:
    """:func:`fit_logistic` on the training split, scored on val and test."""
    t0 = time.perf_counter()
    model = fit_logistic(names["train"], ys["train"], n, c, w)
    return {"ngram_max": n, "C": c, "class_weight": w or "none", "features": len(model[0].vocabulary_),
            **{s: scores(ys[s], model.predict(names[s])) for s in ("val", "test")},
            "seconds": round(time.perf_counter() - t0, 1)}


def load_split(path: Path, seed: int) -> tuple[dict[str, list[str]], dict[str, np.ndarray], int, dict[str, Any]]:
    """The names of each split of ``rnnlab classify train``'s defaults with split seed ``seed``."""
    from rnnlab.classify import _prepare
    from rnnlab.config import ClassifyRunConfig

    cfg = ClassifyRunConfig()
    cfg.data.data = str(path)
    cfg.data.split_seed = seed
    data, classes, y, split, _ = _prepare(cfg)
    names = {s: [data.inputs[i] for i in split[s]] for s in split}
    options = {"val_fraction": cfg.data.val_fraction, "test_fraction": cfg.data.test_fraction, "split_seed": seed}
    return names, {s: y[split[s]] for s in split}, len(classes), options


def set_references(name: str, path: Path, seeds: int) -> dict[str, Any]:
    """The logistic regression (setting chosen on split 0's validation) and the Kneser-Ney classifier (chosen on
    each split's validation) on ``seeds`` splits of the labelled folder ``path``, as the classifier splits it."""
    names, ys, classes, options = load_split(path, 0)
    counts = np.bincount(ys["train"], minlength=classes)
    weightings = WEIGHTINGS if counts.max() > 1.5 * counts.min() else (None,)  # balanced: weights change nothing
    out: dict[str, Any] = {"config": {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": str(path), "classes": classes, "split_options": options, "seeds": seeds,
        "split": {s: {"examples": len(v), "distinct": len(set(v))} for s, v in names.items()},
        "grid": {"ngram_max": NGRAMS, "C": CS, "class_weight": weightings,
                 "kneser_ney": {"order": KN_ORDERS, "distinct": (True, False), "tau": KN_TAUS}}}}
    print(json.dumps({name: out["config"]}), flush=True)
    rows = []
    for n, c, w in itertools.product(NGRAMS, CS, weightings):
        rows.append(logistic(names, ys, n, c, w))
        print(json.dumps({name: rows[-1]}), flush=True)
    out["logistic"], chosen = rows, by_validation(rows)
    out["chosen"] = chosen
    spread = []
    for seed in range(seeds):
        if seed:
            names, ys, classes, _ = load_split(path, seed)
        kn = by_validation(kneser_ney_grid(names, ys, classes))
        lr = chosen if seed == 0 else logistic(names, ys, chosen["ngram_max"], chosen["C"],
                                               None if chosen["class_weight"] == "none" else chosen["class_weight"])
        spread.append({"split_seed": seed, "test_classes_min": int(np.bincount(ys["test"]).min()),
                       "ceiling": scores(ys["test"], ceiling(names["test"], ys["test"])),
                       "logistic": lr["test"], "kneser_ney": kn["test"],
                       "kneser_ney_setting": {k: kn[k] for k in ("order", "distinct", "tau")}})
        print(json.dumps({name: spread[-1]}), flush=True)
    out["seeds"] = spread
    return out


def by_validation(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: sum(r["val"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=Path, default=SHARED / "names_clean")
    ap.add_argument("--out", type=Path, default=REFERENCE_FILE)
    ap.add_argument("--seeds", type=int, default=5, help="split seeds 0..N-1 for the spread (default 5)")
    ap.add_argument("--sets", nargs="+", default=["names"], choices=["names", *SETS],
                    help="names (the full study above), and the sets of benchmarks/classify_sets.py")
    args = ap.parse_args()
    old: dict[str, Any] = {}
    if args.out.exists():
        try:
            old = json.loads(args.out.read_text())
        except (OSError, ValueError):
            old = {}
    sets = {**old.get("sets", {}), **{s: set_references(s, ensure_set(s), args.seeds) for s in args.sets if s != "names"}}
    if "names" not in args.sets:
        if "seeds" not in old:
            print("bench_classify_reference: run --sets names first (the names study heads the results)", file=sys.stderr)
            return 2
        write_results(args.out, {**old, "sets": sets}, markdown)
        return 0
    if not args.names.is_dir():
        print(f"bench_classify_reference: {args.names} is missing (the shared names data)", file=sys.stderr)
        return 2
    names, ys, classes, options = load_split(args.names, 0)
    res: dict[str, Any] = {"config": {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": str(args.names), "classes": classes,
        "split": {s: {"examples": len(v), "distinct": len(set(v))} for s, v in names.items()},
        "split_options": options, "seeds": args.seeds,
        "grid": {"ngram_max": NGRAMS, "C": CS, "class_weight": WEIGHTINGS,
                 "kneser_ney": {"order": KN_ORDERS, "distinct": (True, False), "tau": KN_TAUS}}}}
    print(json.dumps(res["config"]), flush=True)
    res["ceiling"] = {s: scores(ys[s], ceiling(names[s], ys[s])) for s in ("val", "test")}
    res["balanced_ceiling"] = {s: scores(ys[s], balanced_ceiling(names[s], ys[s])) for s in ("val", "test")}
    print(json.dumps({"ceiling": res["ceiling"], "balanced_ceiling": res["balanced_ceiling"]}), flush=True)
    rows = []
    for n, c, w in itertools.product(NGRAMS, CS, WEIGHTINGS):
        rows.append(logistic(names, ys, n, c, w))
        print(json.dumps(rows[-1]), flush=True)
    res["logistic"] = rows
    res["chosen"] = by_validation(rows)
    res["best_test_accuracy"] = max(rows, key=lambda r: r["test"][0])
    res["best_test_balanced"] = max(rows, key=lambda r: r["test"][1])
    res["kneser_ney"] = kneser_ney_grid(names, ys, classes)
    res["kneser_ney_chosen"] = by_validation(res["kneser_ney"])
    print(json.dumps({"kneser_ney_chosen": res["kneser_ney_chosen"]}), flush=True)
    chosen = res["chosen"]
    spread = []
    for seed in range(args.seeds):
        if seed:
            names, ys, classes, _ = load_split(args.names, seed)
        kn = res["kneser_ney_chosen"] if seed == 0 else by_validation(kneser_ney_grid(names, ys, classes))
        lr = chosen if seed == 0 else logistic(names, ys, chosen["ngram_max"], chosen["C"],
                                               None if chosen["class_weight"] == "none" else chosen["class_weight"])
        spread.append({"split_seed": seed, "test_classes_min": int(np.bincount(ys["test"]).min()),
                       "ceiling": scores(ys["test"], ceiling(names["test"], ys["test"])),
                       "balanced_ceiling": scores(ys["test"], balanced_ceiling(names["test"], ys["test"])),
                       "logistic": lr["test"], "kneser_ney": kn["test"],
                       "kneser_ney_setting": {k: kn[k] for k in ("order", "distinct", "tau")}})
        print(json.dumps(spread[-1]), flush=True)
    res["seeds"] = spread
    res["sets"] = sets
    write_results(args.out, res, markdown)
    return 0


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    sp = c["split"]
    md = [f"Surnames by language: references on the classifier's split; {c['date']} on {c['machine']}\n",
          f"split (val {c['split_options']['val_fraction']}, test {c['split_options']['test_fraction']}, seed "
          f"{c['split_options']['split_seed']}): " + ", ".join(
              f"{s} {v['examples']} examples ({v['distinct']} distinct)" for s, v in sp.items()) + "\n",
          "the classifier's goal: above the logistic regression on the same split, in accuracy and balanced "
          "accuracy\n",
          "| reference | val acc | val balanced acc | test acc | test balanced acc |", "|---|---:|---:|---:|---:|"]

    def line(label: str, val: list[float], test: list[float]) -> str:
        return f"| {label} | {val[0]:.3f} | {val[1]:.3f} | {test[0]:.3f} | {test[1]:.3f} |"

    md.append(line("label-ambiguity bound on accuracy (oracle: each name's most frequent label in that split)",
                   res["ceiling"]["val"], res["ceiling"]["test"]))
    md.append(line("label-ambiguity bound on balanced accuracy (oracle: each name's label of largest n(name, c) / n_c)",
                   res["balanced_ceiling"]["val"], res["balanced_ceiling"]["test"]))
    for key, label in (("chosen", "char n-grams + logistic regression, chosen on validation"),
                       ("best_test_accuracy", "the same, the grid's best test accuracy"),
                       ("best_test_balanced", "the same, the grid's best test balanced accuracy")):
        r = res[key]
        md.append(line(f"{label} (1..{r['ngram_max']}-grams, C {r['C']:g}, class weight {r['class_weight']})",
                       r["val"], r["test"]))
    k = res["kneser_ney_chosen"]
    md.append(line(f"Kneser-Ney character model per language, chosen on validation ({kn_setting(k)})",
                   k["val"], k["test"]))
    for label, i in (("accuracy", 0), ("balanced accuracy", 1)):
        k = max(res["kneser_ney"], key=lambda r: r["test"][i])
        md.append(line(f"the same, the grid's best test {label} ({kn_setting(k)})", k["val"], k["test"]))
    md += ["", "Every setting of the grid:", "",
           "| n-grams | C | class weight | features | val acc / balanced | test acc / balanced | seconds |",
           "|---:|---:|---|---:|---:|---:|---:|"]
    for r in res["logistic"]:
        md.append(f"| 1..{r['ngram_max']} | {r['C']:g} | {r['class_weight']} | {r['features']:,} | "
                  f"{r['val'][0]:.3f} / {r['val'][1]:.3f} | {r['test'][0]:.3f} / {r['test'][1]:.3f} | "
                  f"{r['seconds']} |")
    md += ["", "Every setting of the Kneser-Ney classifier (seconds: fitting and scoring an order's models):", "",
           "| order | training names | tau | val acc / balanced | test acc / balanced | seconds |",
           "|---:|---|---:|---:|---:|---:|"]
    for r in res["kneser_ney"]:
        md.append(f"| {r['order']} | {'distinct' if r['distinct'] else 'every copy'} | {r['tau']:g} | "
                  f"{r['val'][0]:.3f} / {r['val'][1]:.3f} | {r['test'][0]:.3f} / {r['test'][1]:.3f} | {r['seconds']} |")
    ch = res["chosen"]
    md += ["", f"Other splits (test acc / balanced acc; logistic regression as chosen on split 0: 1..{ch['ngram_max']}"
           f"-grams, C {ch['C']:g}, class weight {ch['class_weight']}; Kneser-Ney chosen on each split's validation):",
           "", "| split seed | smallest test class | accuracy bound | balanced accuracy bound | logistic regression | "
           "Kneser-Ney (setting) |", "|---:|---:|---:|---:|---:|---:|"]
    for r in res["seeds"]:
        md.append(f"| {r['split_seed']} | {r['test_classes_min']} | {r['ceiling'][0]:.3f} | {r['balanced_ceiling'][1]:.3f} | "
                  f"{r['logistic'][0]:.3f} / {r['logistic'][1]:.3f} | {r['kneser_ney'][0]:.3f} / "
                  f"{r['kneser_ney'][1]:.3f} ({kn_setting(r['kneser_ney_setting'])}) |")
    for key, label in (("logistic", "logistic regression"), ("kneser_ney", "Kneser-Ney")):
        a = np.array([r[key] for r in res["seeds"]])
        md.append(f"\n{label} over the {len(a)} splits: accuracy {a[:, 0].mean():.3f} (range {a[:, 0].min():.3f}-"
                  f"{a[:, 0].max():.3f}), balanced accuracy {a[:, 1].mean():.3f} ({a[:, 1].min():.3f}-{a[:, 1].max():.3f})")
    for name, r in res.get("sets", {}).items():
        md += set_markdown(name, r)
    return "\n".join(md) + "\n"


def set_markdown(name: str, r: dict[str, Any]) -> list[str]:
    c, ch = r["config"], r["chosen"]
    md = ["", f"## {name}: {SETS[name].what if name in SETS else c['data']}", "",
          f"{c['classes']} classes; split seed 0: " + ", ".join(
              f"{s} {v['examples']} examples" for s, v in c["split"].items()) + f"; references {c['date']}", "",
          "| n-grams | C | class weight | val acc / balanced | test acc / balanced | seconds |",
          "|---:|---:|---|---:|---:|---:|"]
    for x in r["logistic"]:
        md.append(f"| 1..{x['ngram_max']} | {x['C']:g} | {x['class_weight']} | {x['val'][0]:.3f} / {x['val'][1]:.3f} | "
                  f"{x['test'][0]:.3f} / {x['test'][1]:.3f} | {x['seconds']} |")
    md += ["", f"Per split (test acc / balanced acc; logistic regression as chosen on split 0: 1..{ch['ngram_max']}-grams, "
           f"C {ch['C']:g}, class weight {ch['class_weight']}; Kneser-Ney chosen on each split's validation):", "",
           "| split seed | logistic regression | Kneser-Ney (setting) |", "|---:|---:|---:|"]
    for x in r["seeds"]:
        md.append(f"| {x['split_seed']} | {x['logistic'][0]:.3f} / {x['logistic'][1]:.3f} | {x['kneser_ney'][0]:.3f} / "
                  f"{x['kneser_ney'][1]:.3f} ({kn_setting(x['kneser_ney_setting'])}) |")
    lr, kn = (np.array([x[key] for x in r["seeds"]]) for key in ("logistic", "kneser_ney"))
    md.append(f"| mean of {len(lr)} | **{lr[:, 0].mean():.4f} / {lr[:, 1].mean():.4f}** | "
              f"**{kn[:, 0].mean():.4f} / {kn[:, 1].mean():.4f}** |")
    return md


def kn_setting(r: dict[str, Any]) -> str:
    return f"order {r['order']}, {'distinct names' if r['distinct'] else 'every copy'}, tau {r['tau']:g}"


if __name__ == "__main__":
    sys.exit(main())
