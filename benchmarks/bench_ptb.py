"""Penn Treebank characters: test bits per character after a fixed CPU budget.

Uses Mikolov's character-level PTB with the official splits
(``../shared/data/ptb/ptb.char.{train.txt.gz,valid.txt,test.txt}``; research use
only, never copied into this repository), read in place with
``rnnlab train --format ptb-char --train ... --val ... --test ...``: each line's
whitespace-separated symbols are joined (``_`` stays as the word boundary) and an
end-of-sentence symbol (``\\n``) is appended, giving a 50-symbol vocabulary. It trains
under ``--time-budget`` (default 1800 s); the test split is scored with the best
checkpoint (lowest validation loss), so ``rnnlab eval RUN --split test`` repeats it.

Published LSTMs reach 1.36-1.41 test bpc with far more compute
than a 30-minute run on two CPU cores.

    .venv/bin/python benchmarks/bench_ptb.py                      # 30 minutes, rnnlab defaults
    .venv/bin/python benchmarks/bench_ptb.py --budget 60 -- --cell gru
Arguments after ``--`` are ``rnnlab train`` options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
from pathlib import Path

import torch
from _common import split_rnnlab_options

from rnnlab.cli import build_parser, run_config_from_args
from rnnlab.data import load_corpus
from rnnlab.train import train

PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def main() -> int:
    argv, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", type=Path, default=PTB)
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds of training")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run", type=Path, default=None, help="keep the run folder here (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ptb.json")
    args = ap.parse_args(argv)
    train_gz = args.ptb / "ptb.char.train.txt.gz"
    if not train_gz.exists():
        print(f"bench_ptb: {train_gz} not found (PTB lives in ../shared/data/ptb)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or Path(tmp) / "run"
        argv_train = ["train", "--format", "ptb-char", "--train", str(train_gz),
                      "--val", str(args.ptb / "ptb.char.valid.txt"), "--test", str(args.ptb / "ptb.char.test.txt"),
                      "--time-budget", str(args.budget), "--seed", str(args.seed), "--out", str(run), "--quiet",
                      *extra]
        cfg = run_config_from_args(build_parser().parse_args(argv_train))
        corpus = load_corpus(cfg.data)
        config = {"date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "budget_s": args.budget, "rnnlab_options": extra,
                  "chars": {"train": len(corpus.train), "val": len(corpus.val), "test": len(corpus.test or "")},
                  "vocab": len(set(corpus.train + corpus.val + (corpus.test or ""))), "run_config": cfg.to_dict(),
                  "command": "rnnlab " + " ".join(argv_train)}
        print(json.dumps(config, indent=2), flush=True)
        s = train(cfg, progress=sys.stderr.isatty())
    result = {"config": config, "summary": s,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = (f"| model | budget (s) | steps | epochs | chars/s | val bpc (best) | test bpc |\n|---|---:|---:|---:|---:|---:|---:|\n"
          f"| {cfg.model.cell} {cfg.model.num_layers}x{cfg.model.hidden_size} | {args.budget:.0f} | {s['steps']} | "
          f"{s['epochs']:.2f} | {s['tokens_per_sec']:,.0f} | {s['best_val_bpc']:.3f} | {s['test_bpc']:.3f} |\n")
    args.out.with_suffix(".md").write_text(f"options: `{' '.join(extra) or '(defaults)'}`\n\n{md}")
    print(md)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
