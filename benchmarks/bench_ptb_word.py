"""Penn Treebank words: rnnlab's Kneser-Ney 5-gram beside an LSTM, in test perplexity.

Mikolov's word-level PTB with the official splits (``../shared/data/ptb/ptb.{train.txt.gz,
valid.txt,test.txt}``; research use only, never copied into this repository), read with
``--level word``: whitespace-separated words, each line end a token of its own (the
end-of-sentence symbol), 10,000 symbols in all. Every model is scored on the same tokens,
line ends included, as Mikolov et al. and Zaremba et al. count them.

* ``kn5``: ``rnnlab ngram fit --level word --order 5 --sentences`` (no n-gram spans a line
  end, as SRILM reads the sentences; Mikolov et al. 2011 report 141.2 for SRILM's KN5), and
  the same without ``--sentences`` (one stream, as the RNN reads it).
* ``lstm`` and ``lstm-tied``: ``rnnlab train --level word`` for ``--budget`` CPU seconds
  (default 1800, one thread) with the recipes in ``RECIPES`` (Zaremba et al.'s small LSTM,
  2 x 200 and SGD, with the rate falling by cosine over the budget; the second with the
  embedding and the softmax layer tied), scored with the best checkpoint (lowest
  validation loss). Options after ``--`` replace the recipe of the one part named. Zaremba
  et al. (2014)'s small LSTM reaches 114.5 after 13 epochs, reading the text as one stream.

    .venv/bin/python benchmarks/bench_ptb_word.py --parts kn5              # a few minutes
    .venv/bin/python benchmarks/bench_ptb_word.py --parts lstm-tied        # 30 CPU-minutes
    .venv/bin/python benchmarks/bench_ptb_word.py --parts lstm --budget 60 -- --hidden-size 128

Writes ``benchmarks/results/ptb_word.json`` and ``.md``; a part not run keeps its rows.
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
import time
from pathlib import Path
from typing import Any

from _common import split_rnnlab_options, write_results

PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"
# Zaremba et al.'s small LSTM, by time: 2 x 200, no dropout, truncation 20, batch 20, SGD at rate 1 (with rnnlab's
# momentum of 0.9), the gradient clipped to norm 5, the rate falling by cosine over the budget; and the same with the
# embedding and the softmax layer one matrix (Press & Wolf 2017)
_SIZE = ["--cell", "lstm", "--hidden-size", "200", "--num-layers", "2", "--embedding-size", "200"]
_RUN = ["--dropout", "0", "--seq-len", "20", "--batch-size", "20", "--optimizer", "sgd", "--lr", "1", "--clip-norm", "5",
        "--eval-interval", "2000"]
RECIPES = {
    "lstm": ("2 x 200, SGD, no dropout", [*_SIZE, *_RUN]),
    "lstm-tied": ("2 x 200, SGD, no dropout, tied embedding and softmax", [*_SIZE, "--tie-weights", *_RUN]),
}
"""The LSTM rows: part name -> (what the table says, ``rnnlab train`` options)."""


def rnnlab(args: list[str]) -> dict[str, Any]:
    """``rnnlab ARGS --json``: its JSON summary (the last line); a failure is one line on stderr and exit 2."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rnnlab", *args, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"bench_ptb_word: rnnlab {' '.join(args)} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}",
              file=sys.stderr)
        sys.exit(2)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def splits(ptb: Path) -> list[str]:
    return ["--train", str(ptb / "ptb.train.txt.gz"), "--val", str(ptb / "ptb.valid.txt"),
            "--test", str(ptb / "ptb.test.txt"), "--level", "word"]


def kn5(ptb: Path, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for sentences in (True, False):
        model = tmp / f"kn5{'-sentences' if sentences else ''}.npz"
        fit = ["ngram", "fit", *splits(ptb), "--order", "5", "--smoothing", "kneser-ney",
               "--sentences" if sentences else "--no-sentences", "--out", str(model)]
        f = rnnlab(fit)
        scores = {split: rnnlab(["ngram", "eval", str(model), "--split", split]) for split in ("val", "test")}
        rows.append({"model": "kn5" + (" (sentences apart)" if sentences else " (one stream)"),
                     "command": "rnnlab " + " ".join(fit), "fit_s": f["wall_s"],
                     "val_ppl": scores["val"]["ppl"], "test_ppl": scores["test"]["ppl"],
                     "scores": scores})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "scores"}), flush=True)
    return rows


def lstm(ptb: Path, tmp: Path, part: str, budget: float, seed: int, extra: list[str]) -> dict[str, Any]:
    run = tmp / part
    setup, recipe = RECIPES[part] if not extra else ("options " + " ".join(extra), extra)
    cmd = ["train", *splits(ptb), *recipe, "--time-budget", f"{budget:g}", "--clock", "cpu",
           "--threads", "1", "--seed", str(seed),
           "--out", str(run), "--quiet"]
    s = rnnlab(cmd)
    test = rnnlab(["eval", str(run), "--split", "test"])
    val = rnnlab(["eval", str(run), "--split", "val"])
    row = {"model": part, "setup": setup, "command": "rnnlab " + " ".join(cmd), "budget_s": budget,
           "steps": s.get("steps"), "epochs": s.get("epochs"), "val_ppl": val["ppl"], "test_ppl": test["ppl"],
           "summary": s}
    print(json.dumps({k: v for k, v in row.items() if k != "summary"}), flush=True)
    return row


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = ["# Penn Treebank words: test perplexity\n",
             f"{c['date']} on {c['machine']}; load average at start {c['load']:.2f}. Every model scores the same "
             "tokens, a line end counting as the end-of-sentence token (10,000 symbols). Commands in the JSON.\n",
             "| model | setup | val perplexity | test perplexity | published |", "|---|---|---:|---:|---|"]
    for r in res.get("kn5", []):
        published = "SRILM KN5 141.2 (Mikolov et al. 2011)" if "sentences" in r["model"] else ""
        lines.append(f"| {r['model']} | interpolated modified Kneser-Ney, order 5, counted in {r['fit_s']:.0f} s | "
                     f"{r['val_ppl']:.1f} | {r['test_ppl']:.1f} | {published} |")
    for part in RECIPES:
        r = res.get(part)
        if r:
            lines.append(f"| {part} | {r['setup']}; {r['budget_s'] / 60:.0f} CPU minutes, {r['steps']} steps "
                         f"({r['epochs']:.1f} epochs), one stream | {r['val_ppl']:.1f} | {r['test_ppl']:.1f} | "
                         "small LSTM 114.5 (Zaremba et al. 2014, 13 epochs) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    argv, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["kn5", *RECIPES]
    ap.add_argument("--parts", nargs="+", default=parts, choices=parts)
    ap.add_argument("--ptb", type=Path, default=PTB)
    ap.add_argument("--budget", type=float, default=1800.0, help="CPU seconds of LSTM training (one thread)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ptb_word.json")
    args = ap.parse_args(argv)
    if not (args.ptb / "ptb.train.txt.gz").exists():
        print(f"bench_ptb_word: {args.ptb / 'ptb.train.txt.gz'} not found (PTB lives in ../shared/data/ptb)",
              file=sys.stderr)
        return 2
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    if extra and len([p for p in args.parts if p != "kn5"]) != 1:
        ap.error("options after -- replace the recipe of one LSTM part: name it with --parts")
    res: dict[str, Any] = {k: v for k, v in old.items() if k in parts and k not in args.parts}
    res["config"] = {"date": dt.datetime.now().isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load": os.getloadavg()[0],
                     "parts": args.parts, "budget_s": args.budget,
                     "rnnlab_options": {p: extra or RECIPES[p][1] for p in args.parts if p in RECIPES}}
    print(json.dumps(res["config"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "kn5" in args.parts:
            res["kn5"] = kn5(args.ptb, Path(tmp))
        for part in RECIPES:
            if part in args.parts:
                res[part] = lstm(args.ptb, Path(tmp), part, args.budget, args.seed, extra)
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
