"""The language model's commands: ``train``, ``sample``, ``eval`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rnnlab.cli.common import (
    add_command,
    checkpoint_option,
    command_name,
    config_from_args,
    device_option,
    fmt,
    json_option,
    load_lm,
    option,
    print_json,
    quiet_option,
    report,
    run_corpus,
    sample_config,
    section,
    sections,
)
from rnnlab.config import DataConfig, RunConfig, SampleConfig, TrainConfig
from rnnlab.errors import ConfigError, TrainingError

TRAIN_EXAMPLES = """examples:
  rnnlab train --data input.txt --cell lstm --hidden-size 512 --num-layers 2 --seq-len 100 \\
      --batch-size 64 --lr 2e-3 --clip-norm 5 --seed 1 --time-budget 600 --out runs/x
  rnnlab train --out runs/x --resume --time-budget 1200     # continue the same run
  rnnlab train --train ptb.train.txt --val ptb.valid.txt --test ptb.test.txt --max-epochs 1 --out runs/ptb
  rnnlab train --data corpus/ --level word --min-count 3 --cell gru --max-steps 2000 --out runs/words
"""
SAMPLE_EXAMPLES = """examples:
  rnnlab sample runs/x --prime "The " --length 500 --temperature 0.8 --top-k 20 --seed 3
  rnnlab sample runs/x/best.safetensors --strategy argmax --length 200
  rnnlab sample runs/x --strategy beam --beam-width 8 --prime "def " --length 60
  rnnlab sample runs/x --top-p 0.9 --num-samples 4 --length 120
"""
EVAL_EXAMPLES = """examples:
  rnnlab eval runs/x                       # the run's own validation split
  rnnlab eval runs/x --split test          # its test split (explicit --test files only)
  rnnlab eval runs/x --data ptb.test.txt   # any file, in bits per character
"""
DEMO_EXAMPLES = """examples:
  rnnlab demo                       # about 3 minutes on a CPU, then samples and bits per character
  rnnlab demo --time-budget 60 --out runs/quick
"""


def run_config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Defaults (or the run's saved config, with --resume), overlaid with the options given."""
    return config_from_args(ns, RunConfig)


@dataclass(kw_only=True)
class TrainOptions:
    """``rnnlab train``: the run's config, and how the command reports."""

    run: RunConfig = sections(RunConfig, run_config_from_args)
    json: bool = json_option()
    quiet: bool = quiet_option()


@dataclass(kw_only=True)
class SampleOptions:
    """``rnnlab sample``: which model, how to draw, where it runs."""

    checkpoint: str = checkpoint_option()
    sampling: SampleConfig = section(SampleConfig, "sampling options", build=sample_config)
    device: str = device_option()


@dataclass(kw_only=True)
class EvalOptions:
    """``rnnlab eval``: which model scores which text."""

    checkpoint: str = checkpoint_option()
    data: str | None = option(None, "a text file to score (default: the run's own split)", default_shown=None)
    split: Literal["train", "val", "test"] | None = option(None, "the run's split to score", default_shown="val")
    json: bool = json_option()
    device: str = device_option()


@dataclass(kw_only=True)
class DemoOptions:
    """``rnnlab demo``: the tuned language model on the built-in corpus, for a time budget."""

    time_budget: float = option(180.0, "seconds of training", metavar="X", default_shown="180")
    out: str | None = option(None, "run folder", default_shown="runs/demo-TIMESTAMP")
    seed: int = option(1, "seed")
    json: bool = json_option()
    quiet: bool = quiet_option()


def cmd_train(o: TrainOptions) -> int:
    from rnnlab.train import train

    summary = train(o.run, progress=not o.quiet)
    if summary.get("rank", 0):  # torchrun: rank 0 reports for all
        return 0
    report(summary, o.json)
    return 128 + summary["signal"] if summary["stopped"] == "interrupted" else 0


def cmd_sample(o: SampleOptions) -> int:
    from rnnlab.sampling import encode_prime, generate

    cfg = o.sampling
    model, vocab, _ = load_lm(o.checkpoint, o.device)
    encode_prime(vocab, cfg.prime)  # refuse an unknown character before anything is printed
    if cfg.num_samples == 1 and cfg.strategy != "beam":
        sys.stdout.write(cfg.prime)
        sys.stdout.flush()

        def on_text(pieces: list[str]) -> None:
            sys.stdout.write(pieces[0])
            sys.stdout.flush()

        generate(model, vocab, cfg, on_text=on_text)
        print()
        return 0
    for i, text in enumerate(generate(model, vocab, cfg)):
        if cfg.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(text)
    return 0


def cmd_eval(o: EvalOptions) -> int:
    from rnnlab.data.corpus import read_corpus_file
    from rnnlab.evaluate import evaluate_text, token_metrics, unit_for

    model, vocab, ckpt = load_lm(o.checkpoint, o.device)
    tc, dc = ckpt.config.train, ckpt.config.data
    if o.data and o.split:
        raise ConfigError("give --data FILE or --split NAME, not both")
    if o.data:
        text, source, key = read_corpus_file(o.data, dc.format), o.data, "eval"
    else:
        split = o.split or "val"
        corpus = run_corpus(ckpt, f"scoring its {split} split")
        text = {"train": corpus.train, "val": corpus.val, "test": corpus.test}[split]
        if text is None:
            raise ConfigError(f"the run has no {split} split (give --test at training time, or --data FILE)")
        source, key = f"{split} split", split
    r = evaluate_text(model, vocab, text, batch_size=tc.eval_batch_size, seq_len=tc.seq_len)
    unit = unit_for(vocab.level)
    m = token_metrics(r["loss"], vocab.level)
    summary = {"checkpoint": str(ckpt.path), "data": source, "tokens": r["tokens"], "loss": m["loss"],
               unit: m[unit], "ppl": m["ppl"], f"{key}_{unit}": m[unit]}
    print("\n".join(f"{k}: {fmt(v)}" for k, v in summary.items()))
    if o.json:
        print_json(summary)
    return 0


def cmd_demo(o: DemoOptions) -> int:
    from rnnlab.checkpoint import load_model
    from rnnlab.data.corpus import BUILTIN
    from rnnlab.sampling import generate
    from rnnlab.train import train

    out = o.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    # the demo's own options named in its errors (the train command's --max-steps or --resume are not demo's)
    if o.time_budget <= 0:  # (NaN and infinity: the config's check names them)
        raise ConfigError(f"--time-budget must be a number of seconds > 0, got {o.time_budget}")
    if (Path(out) / "last.safetensors").exists() or (Path(out) / "best.safetensors").exists():
        raise ConfigError(f"--out {out} already holds a run: choose another --out, or continue that run with "
                          f"{command_name()} train --out {out} --resume")
    # the defaults are the configuration tuned on tiny-shakespeare for short CPU budgets
    cfg = RunConfig(data=DataConfig(data=BUILTIN),
                    train=TrainConfig(time_budget=o.time_budget, eval_interval=500, seed=o.seed, out=out)).validate()
    print(f"rnnlab demo: a 2-layer LSTM learns Python from the standard library's source, "
          f"for {o.time_budget:.0f} s on this machine. Run folder: {out}", file=sys.stderr)
    try:
        summary = train(cfg, progress=not o.quiet)
    except TrainingError as e:  # its advice names train's options: say where they are given
        raise TrainingError(str(e).replace("Start a new run with", f"Train with {command_name()} train and")) from None
    if summary["stopped"] == "interrupted":  # as rnnlab train: say how to go on, exit 128 + the signal
        print(f"interrupted: saved {out}/last.safetensors; continue with {command_name()} train --out {out} --resume "
              f"(up to the demo's {o.time_budget:g} s, or give --time-budget)", file=sys.stderr)
        return 128 + summary["signal"]
    model, vocab, _ = load_model(out)
    for temp in (0.5, 0.8, 1.0):
        text = generate(model, vocab, SampleConfig(prime="def ", length=300, temperature=temp, seed=o.seed))[0]
        print(f"\n=== sample, temperature {temp} ===\n{text}")
    print(f"\nvalidation bits per character: {summary['best_val_bpc']:.3f} (best), "
          f"{summary['val_bpc']:.3f} (last), after {summary['steps']} steps, {summary['elapsed_s']:.0f} s, "
          f"{summary['tokens_per_sec']:,.0f} chars/s")
    print(f"sample more with: {command_name()} sample {out} --prime 'class ' --temperature 0.8")
    if o.json:
        print_json(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "train", TrainOptions, cmd_train, help="train a language model (truncated BPTT)",
                description="Train an Elman RNN, LSTM or GRU language model on any text.", epilog=TRAIN_EXAMPLES)
    add_command(sub, "sample", SampleOptions, cmd_sample, help="generate text from a trained model",
                description="Generate text, primed, with argmax, sampling (temperature, top-k, top-p) or beam search.",
                epilog=SAMPLE_EXAMPLES)
    add_command(sub, "eval", EvalOptions, cmd_eval, help="bits per character of a checkpoint on a split or a file",
                epilog=EVAL_EXAMPLES)
    add_command(sub, "demo", DemoOptions, cmd_demo,
                help="the main job: learn Python source from the standard library, then sample", epilog=DEMO_EXAMPLES)


__all__ = ["DemoOptions", "EvalOptions", "SampleOptions", "TrainOptions", "register", "run_config_from_args"]
