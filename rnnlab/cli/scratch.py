"""``rnnlab scratch``: BPTT by hand, a NumPy Elman RNN one can read (:mod:`rnnlab.scratch`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Literal

from rnnlab.cli.common import add_command, add_group, json_option, option, print_json

SCRATCH_EXAMPLES = """examples:
  rnnlab scratch train input.txt --hidden-size 100 --seq-len 25 --steps 5000     # min-char-rnn, checked
  rnnlab scratch train input.txt --optimizer sgd --lr 0.5 --clip-norm 5 --sample-length 200
"""


@dataclass(kw_only=True)
class ScratchTrainOptions:
    """``rnnlab scratch train``: the text and :func:`rnnlab.scratch.train_scratch`'s settings."""

    file: str = option(help="a UTF-8 text file", positional=True)
    hidden_size: int = option(100)
    seq_len: int = option(25, "BPTT window")
    lr: float = option(0.1)
    steps: int = option(1000)
    optimizer: Literal["adagrad", "sgd"] = option("adagrad")
    clip_value: float = option(5.0, "clip each gradient element", default_shown="5")
    clip_norm: float = option(0.0, "clip the global norm", default_shown="0, off")
    log_interval: int = option(100)
    sample_length: int = option(0, "characters sampled at each log")
    seed: int = option(0)
    json: bool = json_option()


def cmd_train(o: ScratchTrainOptions) -> int:
    from rnnlab.data.corpus import read_text
    from rnnlab.scratch import train_scratch

    text = read_text(o.file)

    def on_log(row: dict[str, Any]) -> None:
        line = f"step {row['step']:>6}  loss {row['loss']:.3f}  smooth {row['smooth_loss']:.3f}  bpc {row['bpc']:.3f}"
        print(line + (f"  |grad| {row['grad_norm']:.2f}" if "grad_norm" in row else ""), flush=True)
        if row.get("sample"):
            print("    " + row["sample"].replace("\n", "\n    "), flush=True)

    r = train_scratch(text, hidden_size=o.hidden_size, seq_len=o.seq_len, lr=o.lr, steps=o.steps, seed=o.seed,
                      optimizer=o.optimizer, clip_value=o.clip_value, clip_norm=o.clip_norm,
                      log_interval=o.log_interval, sample_len=o.sample_length, on_log=on_log)
    print(f"loss {r['initial_loss']:.3f} (ln V, knowing nothing) -> {r['final_smooth_loss']:.3f} nats after "
          f"{o.steps} steps")
    if o.json:
        print_json({k: v for k, v in r.items() if k not in ("model", "losses")})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    scsub = add_group(sub, "scratch", help="BPTT by hand: a NumPy Elman RNN you can read", epilog=SCRATCH_EXAMPLES)
    add_command(scsub, "train", ScratchTrainOptions, cmd_train,
                help="train the NumPy model on a text and watch the loss fall", epilog=SCRATCH_EXAMPLES)


__all__ = ["ScratchTrainOptions", "register"]
