"""n-gram language models: fit time, memory and bits per character.

1. Penn Treebank characters (``../shared/data/ptb``, official splits, read as
   ``--format ptb-char``: end of sentence counted), interpolated modified Kneser-Ney for
   orders 1..10, each line a sentence as KenLM reads it (``boundary`` = the newline: no
   n-gram spans a line end): fit seconds, peak memory of the fit (``tracemalloc``,
   NumPy's buffers included), table size (``nbytes_``) and test bits per character; and
   the test bpc of the same model read as one stream (as the RNNs read it).
   KenLM's ``lmplz`` on these cores: 9-gram fit about 6 s, test 1.43 bpc (7-gram 1.48,
   5-gram 1.69). Goals: the same bpc at each order, the 9-gram fit within about 12 s.
2. Against NLTK's ``KneserNeyInterpolated`` 5-gram (when ``nltk`` is installed) on a
   subset of the same data, in the same run: fit and scoring characters per second and
   their ratios (goals: >= 100x fitting, >= 1000x scoring), and each one's bpc (NLTK's
   Kneser-Ney is a different model: one discount, no discount at the unigram, and a
   symbol it never saw scores 0, i.e. infinite loss).
3. tiny-shakespeare at the 90/10 split: validation bpc by order (the table in docs/guides/ngram.md).

Every number goes through ``NGramLM.score`` (nats per token over every target after the
first, as ``rnnlab.evaluate`` scores the RNNs) and ``rnnlab.metrics``.

    .venv/bin/python benchmarks/bench_ngram.py                   # all three (a few minutes)
    .venv/bin/python benchmarks/bench_ngram.py --parts 1 --orders 5 9
    .venv/bin/python benchmarks/bench_ngram.py --parts 2 --nltk-train 100000 --nltk-test 2000
Writes ``benchmarks/results/ngram.json`` and ``ngram.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.config import DataConfig
from rnnlab.data import Vocab, load_corpus
from rnnlab.metrics import token_metrics
from rnnlab.ngram import NGramLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KENLM_BPC = {5: 1.69, 7: 1.48, 9: 1.43}  # KenLM lmplz's figures on PTB test (these 2 cores)


def timed_fit(lm: NGramLM, ids: np.ndarray, v: int) -> tuple[float, int]:
    """Seconds and peak traced bytes of ``lm.fit``."""
    tracemalloc.start()
    t = time.perf_counter()
    lm.fit(ids, v)
    secs = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return secs, peak


def ptb(args: argparse.Namespace) -> dict[str, Any]:
    d = args.ptb
    corpus = load_corpus(DataConfig(train=str(d / "ptb.char.train.txt.gz"), val=str(d / "ptb.char.valid.txt"),
                                    test=str(d / "ptb.char.test.txt"), format="ptb-char"))
    vocab = Vocab.from_text(corpus.train + corpus.val + (corpus.test or ""))  # as rnnlab train builds it
    train, test = vocab.encode(corpus.train), vocab.encode(corpus.test or "")
    eos = int(vocab.encode("\n")[0])
    rows = []
    for n in args.orders:
        lm = NGramLM(order=n, boundary=eos)
        secs, peak = timed_fit(lm, train, len(vocab))
        t = time.perf_counter()
        s = lm.score(test)
        score_secs = time.perf_counter() - t
        stream = NGramLM(order=n).fit(train, len(vocab)).score(test)
        row = {"order": n, "fit_s": secs, "fit_chars_per_s": len(train) / secs, "peak_mb": peak / 2**20,
               "table_mb": lm.nbytes_ / 2**20, "score_s": score_secs, "test_bpc": token_metrics(s["loss"], "char")["bpc"],
               "stream_bpc": token_metrics(stream["loss"], "char")["bpc"],
               "kenlm_bpc": KENLM_BPC.get(n), "discount_fallback": lm.discount_fallback_.tolist()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"train_chars": len(train), "test_chars": len(test), "vocab": len(vocab), "rows": rows}


def against_nltk(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from nltk.lm import KneserNeyInterpolated
        from nltk.util import everygrams
    except ImportError:
        return {"skipped": "nltk is not installed (pip install nltk)"}
    d = args.ptb
    corpus = load_corpus(DataConfig(train=str(d / "ptb.char.train.txt.gz"), val=str(d / "ptb.char.valid.txt"),
                                    test=str(d / "ptb.char.test.txt"), format="ptb-char"))
    train_text, test_text = corpus.train[: args.nltk_train], (corpus.test or "")[: args.nltk_test]
    vocab = Vocab.from_text(corpus.train + corpus.val + (corpus.test or ""))
    n = 5
    out: dict[str, Any] = {"order": n, "train_chars": len(train_text), "test_chars": len(test_text)}

    t = time.perf_counter()
    ref = KneserNeyInterpolated(n)
    syms = list(train_text)
    ref.fit([list(everygrams(syms, max_len=n))], vocabulary_text=syms)  # one stream, no sentence padding
    nltk_fit = time.perf_counter() - t
    t = time.perf_counter()
    nats = []
    for i in range(1, len(test_text)):
        p = ref.score(test_text[i], tuple(test_text[max(0, i - n + 1):i]))
        nats.append(-math.log(p) if p > 0 else math.inf)  # a symbol NLTK never saw: p = 0
    nltk_score = time.perf_counter() - t

    lm = NGramLM(order=n)
    t = time.perf_counter()
    lm.fit(vocab.encode(train_text), len(vocab))
    ours_fit = time.perf_counter() - t
    test_ids, reps = vocab.encode(test_text), 0
    t = time.perf_counter()
    while reps == 0 or time.perf_counter() - t < 0.5:  # too quick to time once
        s = lm.score(test_ids)
        reps += 1
    ours_score = (time.perf_counter() - t) / reps

    out.update({
        "nltk": {"fit_chars_per_s": len(train_text) / nltk_fit, "score_chars_per_s": (len(test_text) - 1) / nltk_score,
                 "bpc": float(np.mean(nats)) / math.log(2), "infinite": int(np.isinf(nats).sum()),
                 "finite_bpc": float(np.mean([x for x in nats if math.isfinite(x)])) / math.log(2)},
        "rnnlab": {"fit_chars_per_s": len(train_text) / ours_fit, "score_chars_per_s": (len(test_text) - 1) / ours_score,
                   "bpc": s["bits"]},
    })
    out["fit_speedup"] = out["rnnlab"]["fit_chars_per_s"] / out["nltk"]["fit_chars_per_s"]
    out["score_speedup"] = out["rnnlab"]["score_chars_per_s"] / out["nltk"]["score_chars_per_s"]
    print(json.dumps(out), flush=True)
    return out


def shakespeare(args: argparse.Namespace) -> dict[str, Any]:
    corpus = load_corpus(DataConfig(data=str(args.shakespeare)))  # the 90/10 split rnnlab train uses
    vocab = Vocab.from_text(corpus.train + corpus.val)
    train, val = vocab.encode(corpus.train), vocab.encode(corpus.val)
    rows = []
    for n in args.orders:
        lm = NGramLM(order=n).fit(train, len(vocab))
        s = lm.score(val)
        rows.append({"order": n, "val_loss": s["loss"], "val_bpc": s["bits"]})
        print(json.dumps(rows[-1]), flush=True)
    return {"train_chars": len(train), "val_chars": len(val), "vocab": len(vocab), "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    md = [f"n-gram benchmarks, {res['config']['date']} on {res['config']['machine']}\n"]
    if "ptb" in res:
        md += ["## Penn Treebank characters, Kneser-Ney\n",
               "Sentences: each line read after a boundary, as KenLM reads it (`NGramLM(boundary=...)`, "
               "`rnnlab ngram fit --sentences`); stream: one unbroken text, as the RNNs read it.\n",
               "| order | fit (s) | chars/s | peak (MB) | tables (MB) | test bpc, sentences | KenLM bpc | test bpc, stream |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {r['order']} | {r['fit_s']:.2f} | {r['fit_chars_per_s']:,.0f} | {r['peak_mb']:.0f} | {r['table_mb']:.0f} | "
               f"{r['test_bpc']:.3f} | {r['kenlm_bpc'] or ''} | {r['stream_bpc']:.3f} |" for r in res["ptb"]["rows"]]
    if "nltk" in res and "skipped" not in res["nltk"]:
        r = res["nltk"]
        md += ["\n## Against NLTK (KneserNeyInterpolated, 5-gram)\n", "| | fit chars/s | score chars/s | bpc |", "|---|---:|---:|---:|",
               *(f"| {k} | {r[k]['fit_chars_per_s']:,.0f} | {r[k]['score_chars_per_s']:,.0f} | {r[k]['bpc']:.3f} |"
                 for k in ("nltk", "rnnlab")),
               f"\nNLTK gives {r['nltk']['infinite']} test character(s) probability 0 (symbols absent from its "
               f"training subset); over the rest it scores {r['nltk']['finite_bpc']:.3f} bpc.",
               f"\nrnnlab / NLTK: fitting {r['fit_speedup']:,.0f}x, scoring {r['score_speedup']:,.0f}x "
               f"({r['train_chars']:,} training, {r['test_chars']:,} test characters)"]
    if "shakespeare" in res:
        md += ["\n## tiny-shakespeare, 90/10 split, Kneser-Ney\n", "| order | val bpc |", "|---:|---:|"]
        md += [f"| {r['order']} | {r['val_bpc']:.3f} |" for r in res["shakespeare"]["rows"]]
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    ap.add_argument("--orders", type=int, nargs="+", default=list(range(1, 11)))
    ap.add_argument("--ptb", type=Path, default=SHARED / "ptb")
    ap.add_argument("--shakespeare", type=Path, default=SHARED / "tinyshakespeare" / "input.txt")
    ap.add_argument("--nltk-train", type=int, default=100_000, help="training characters for the NLTK comparison")
    ap.add_argument("--nltk-test", type=int, default=2_000, help="test characters NLTK scores")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ngram.json")
    args = ap.parse_args()
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                                      "load_average": os.getloadavg(), "numpy": np.__version__, "args": vars(args)}}
    if 1 in args.parts or 2 in args.parts:
        if not (args.ptb / "ptb.char.train.txt.gz").exists():
            print(f"bench_ngram: {args.ptb} holds no PTB characters", file=sys.stderr)
            return 2
    if 1 in args.parts:
        res["ptb"] = ptb(args)
    if 2 in args.parts:
        res["nltk"] = against_nltk(args)
    if 3 in args.parts:
        res["shakespeare"] = shakespeare(args)
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
