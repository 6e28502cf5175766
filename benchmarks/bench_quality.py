"""Quality per CPU time: validation loss on tiny-shakespeare after a fixed wall-clock budget.

For every budget (default 163 s and 600 s) this trains a fresh rnnlab run limited by
``--time-budget`` alone, then scores the *whole* validation split (the last 10% of the
characters, as nanoGPT's ``shakespeare_char``) in nats per character. With
``--baseline`` it also trains, in the same run and for the same budgets, a
plain PyTorch loop (``nn.Embedding -> nn.LSTM(2x256) -> nn.Linear``,
Adam 2e-3, clip 5, no dropout, batch 64 x 100, the same contiguous streams) and scores
it with the same evaluation code, so the two are compared on one machine in one run.

Reference points measured on these 2 cores: nanoGPT's README CPU
configuration reaches 1.89 nats at 163 s; the plain 2x256 LSTM loop 1.70 at 163 s and
1.51 at 600 s. Goals: at most 1.65 at 163 s and at most 1.45 at 600 s.

    .venv/bin/python benchmarks/bench_quality.py                       # rnnlab's defaults
    .venv/bin/python benchmarks/bench_quality.py --baseline            # and the plain loop
    .venv/bin/python benchmarks/bench_quality.py --budgets 163 -- --cell gru --lr 3e-3
Arguments after ``--`` are ``rnnlab train`` options applied to every rnnlab run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import split_rnnlab_options
from torch import nn

from rnnlab.cli import build_parser, run_config_from_args
from rnnlab.config import DataConfig
from rnnlab.data import StreamBatcher, Vocab, load_corpus
from rnnlab.nn import detach_state, sequence_loss
from rnnlab.evaluate import LN2
from rnnlab.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = {"nanogpt_cpu_163s": 1.89, "plain_lstm_163s": 1.70, "plain_lstm_600s": 1.51,
             "goal_163s": 1.65, "goal_600s": 1.45}


class PlainLSTM(nn.Module):
    """The plain PyTorch model a user would write; nothing of rnnlab's network code."""

    def __init__(self, vocab: int, hidden: int = 256, layers: int = 2, emb: int = 64):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        h, state = self.rnn(self.emb(x), state)
        return self.out(h), state


@torch.no_grad()
def plain_val_loss(model: PlainLSTM, ids, batch: int = 32, seq_len: int = 100) -> float:
    """Whole-split loss with the same layout as rnnlab's evaluation (every target once)."""
    from rnnlab.data import EvalStreams

    s = EvalStreams.from_tokens(ids, batch)
    x, y, m = (torch.as_tensor(a) for a in (s.x, s.y, s.mask))
    state, total = None, 0.0
    model.eval()
    for i in range(0, x.shape[1], seq_len):
        logits, state = model(x[:, i:i + seq_len], state)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), y[:, i:i + seq_len], reduction="none")
        total += float((nll * m[:, i:i + seq_len]).sum())
    model.train()
    return total / s.count


def run_plain(data: Path, budget: float, seed: int) -> dict[str, Any]:
    corpus = load_corpus(DataConfig(data=str(data)))
    vocab = Vocab.from_text(corpus.train + corpus.val)
    batcher = StreamBatcher(vocab.encode(corpus.train), 64, 100)
    val = vocab.encode(corpus.val)
    torch.manual_seed(seed)
    model = PlainLSTM(len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    state, step, i, t0 = None, 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < budget:
        if i == batcher.batches_per_epoch:
            i, state = 0, None
        xb, yb = batcher.batch(i)
        logits, state = model(torch.from_numpy(xb), state)
        loss = sequence_loss(logits, torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state = detach_state((state,))[0]
        step, i = step + 1, i + 1
    elapsed = time.perf_counter() - t0
    loss = plain_val_loss(model, val)
    return {"model": "plain nn.LSTM 2x256 loop", "budget_s": budget, "steps": step, "elapsed_s": round(elapsed, 1),
            "chars_per_s": round(step * 6400 / elapsed), "val_nats": round(loss, 4), "val_bpc": round(loss / LN2, 4)}


def run_rnnlab(data: Path, budget: float, seed: int, extra: list[str], workdir: Path) -> dict[str, Any]:
    out = workdir / f"rnnlab-{int(budget)}s"
    argv = ["train", "--data", str(data), "--time-budget", str(budget), "--seed", str(seed),
            "--eval-interval", "1000000000", "--out", str(out), "--quiet", *extra]
    cfg = run_config_from_args(build_parser().parse_args(argv))
    s = train(cfg, progress=False)
    return {"model": f"rnnlab {cfg.model.cell} {cfg.model.num_layers}x{cfg.model.hidden_size}", "budget_s": budget,
            "steps": s["steps"], "elapsed_s": s["elapsed_s"], "chars_per_s": round(s["tokens_per_sec"]),
            "val_nats": round(s["val_loss"], 4), "val_bpc": round(s["val_bpc"], 4),
            "config": {k: v for k, v in cfg.to_dict().items() if k in ("model", "optim", "train")}}


def main() -> int:
    argv, extra = split_rnnlab_options(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "tinyshakespeare" / "input.txt")
    ap.add_argument("--budgets", type=float, nargs="+", default=[163.0, 600.0])
    ap.add_argument("--baseline", action="store_true", help="also train the plain nn.LSTM loop for each budget")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quality.json")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"bench_quality: {args.data} not found (tiny-shakespeare lives in ../shared/data)", file=sys.stderr)
        return 2
    config = {"date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "data": str(args.data), "budgets_s": args.budgets, "rnnlab_options": extra, "seed": args.seed,
              "reference_nats": REFERENCE}
    print(json.dumps(config, indent=2))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in args.budgets:
            rows.append(run_rnnlab(args.data, b, args.seed, extra, Path(tmp)))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "config"}), flush=True)
            if args.baseline:
                rows.append(run_plain(args.data, b, args.seed))
                print(json.dumps(rows[-1]), flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"config": config, "results": rows, "peak_rss_mb": round(peak_mb)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| model | budget (s) | steps | chars/s | val nats/char | val bpc |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['budget_s']:.0f} | {r['steps']} | {r['chars_per_s']:,} | {r['val_nats']:.3f} | "
              f"{r['val_bpc']:.3f} |" for r in rows]
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(f"options: `{' '.join(extra) or '(defaults)'}`\n\n{table}\n")
    print(table)
    print(f"peak RSS {peak_mb:.0f} MB; written to {args.out} and {args.out.with_suffix('.md')}")
    return 0 if math.isfinite(rows[0]["val_nats"]) else 1


if __name__ == "__main__":
    sys.exit(main())
