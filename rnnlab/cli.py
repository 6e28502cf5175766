"""The ``rnnlab`` command line: a thin shell over the library.

Options are generated from the config dataclasses one to one (``hidden_size`` is
``--hidden-size``). Only options the user actually gives are applied, on top of the
defaults, or, with ``--resume``, on top of the run's own saved config. Errors the
user can cause print one line and exit non-zero; nothing here trains or samples by
itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np

from rnnlab import jsonio
from rnnlab.config import (
    ClassifierConfig,
    ClassifyDataConfig,
    ClassifyRunConfig,
    CuresConfig,
    DataConfig,
    FeedingConfig,
    ModelConfig,
    NGramConfig,
    OptimConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    from_dict,
    seed_problems,
)
from rnnlab.errors import CheckpointError, ConfigError, RnnlabError, TrainingError

SECTIONS = {"data": DataConfig, "model": ModelConfig, "cures": CuresConfig, "feeding": FeedingConfig,
            "optim": OptimConfig, "train": TrainConfig}
CLASSIFY_SECTIONS = {"data": ClassifyDataConfig, "model": ModelConfig, "classifier": ClassifierConfig,
                     "optim": OptimConfig, "train": TrainConfig}
CLASSIFY_SKIP = ("seq_len",)  # a classifier reads whole sequences: no truncation length

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
DATA_EXAMPLES = """examples:
  rnnlab data list
  rnnlab data download tinyshakespeare          # into ~/.cache/rnnlab/data, checksum verified
  rnnlab data download tinyshakespeare --dir data/
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


SEQUENCE_BATCH_HELP = {"batch_size": "sequences per batch"}  # the classifier's and the tasks' (not streams of text)


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = (),
                           defaults: Any = None, helps: dict[str, str] | None = None) -> None:
    """One option per field; defaults are suppressed so that only given options are applied.
    ``defaults`` (an instance of ``cls``) supplies the defaults shown, where they differ from the class's;
    ``helps`` replaces the help of fields that mean something else to this command."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else f.default
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{(helps or {}).get(f.name, f.metadata.get('help', ''))} (default: {default})"}
        if tp is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            continue
        if get_origin(tp) is Literal:
            kw["choices"] = get_args(tp)
        elif "choices" in f.metadata:  # a registry's names (the cells), each with its line in the help
            choices = f.metadata["choices"]()
            kw["choices"] = tuple(choices)
            listed = ", ".join(f"{k} ({v})" if v else k for k, v in choices.items())
            kw["help"] = f"{(helps or {}).get(f.name, f.metadata.get('help', ''))}: {listed} (default: {default})"
        else:
            base = [a for a in get_args(tp) if a is not type(None)] or [tp]
            kw["type"] = {int: int, float: float, str: str}.get(base[0], str)
            kw["metavar"] = {int: "N", float: "X", str: "S"}.get(base[0], "S")
        group.add_argument(_flag(f.name), **kw)


def _given(ns: argparse.Namespace, cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(ns).items() if k in names}


def _config_from_args(ns: argparse.Namespace, cls: type, sections: dict[str, type]) -> Any:
    """``cls``'s defaults (or, with --resume, the run's saved config), overlaid with the options given."""
    given = {section: _given(ns, c) for section, c in sections.items()}
    defaults = cls()
    if getattr(ns, "resume", False):
        from rnnlab.train import resume_config

        cfg = resume_config(getattr(ns, "out", defaults.train.out), given, kind=cls)
        if not isinstance(cfg, cls):
            raise ConfigError(f"--out {ns.out} holds a run of another kind ({type(cfg).__name__}), not a {cls.__name__}")
        return cfg
    base = defaults.to_dict()
    for section, values in given.items():
        base[section].update(values)
    return from_dict(cls, base)


def run_config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Defaults (or the run's saved config, with --resume), overlaid with the options given."""
    return _config_from_args(ns, RunConfig, SECTIONS)


def _print_json(obj: dict[str, Any]) -> None:
    print(jsonio.dumps(obj))


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


# commands -------------------------------------------------------------------------------

def cmd_train(ns: argparse.Namespace) -> int:
    from rnnlab.train import train

    cfg = run_config_from_args(ns)
    summary = train(cfg, progress=not ns.quiet)
    if summary.get("rank", 0):  # torchrun: rank 0 reports for all
        return 0
    _report(summary, ns.json)
    return 128 + summary["signal"] if summary["stopped"] == "interrupted" else 0


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if summary.get("stopped") == "interrupted":
        print(f"interrupted: saved {summary['run']}/last.safetensors; continue with --out {summary['run']} --resume",
              file=sys.stderr)
    lines = [f"{k}: {_fmt(v)}" for k, v in summary.items()]
    print("\n".join(lines))
    if as_json:
        _print_json(summary)


def _load_lm(ns: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The language model of ``ns.checkpoint`` on ``ns.device``."""
    from rnnlab.checkpoint import load_model
    from rnnlab.loop import resolve_device

    device = resolve_device(ns.device)  # a bad --device is refused before the file is read
    model, vocab, ckpt = load_model(ns.checkpoint)
    return model.to(device), vocab, ckpt


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (a GPU if there is one)")


def _warn(message: str, file: Any = None) -> None:
    """A warning as the user sees every warning: one line on stderr."""
    print(f"rnnlab: warning: {message}", file=sys.stderr if file is None else file)


def _sample_config(ns: argparse.Namespace) -> SampleConfig:
    """The sampling options given, checked; a warning names those the strategy ignores."""
    given = _given(ns, SampleConfig)
    cfg = from_dict(SampleConfig, given).validate()
    unused = [k for k in ("temperature", "top_k", "top_p", "seed") if k in given] if cfg.strategy != "sample" else []
    if unused:
        _warn(f"{', '.join('--' + k.replace('_', '-') for k in unused)} "
              f"{'does' if len(unused) == 1 else 'do'} not apply to --strategy {cfg.strategy}: ignored")
    if cfg.strategy != "sample" and cfg.num_samples > 1:
        _warn(f"--strategy {cfg.strategy} is deterministic: its {cfg.num_samples} samples are the same text")
    return cfg


def cmd_sample(ns: argparse.Namespace) -> int:
    from rnnlab.sampling import encode_prime, generate

    cfg = _sample_config(ns)
    model, vocab, _ = _load_lm(ns)
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


def _run_corpus(ckpt: Any, needs: str) -> Any:
    """The corpus a language model's run trained on, refused where it changed since (its checksum differs from
    the run's split.json); a damaged split.json is a warning and the corpus is read unchecked."""
    from rnnlab.data.corpus import load_corpus
    from rnnlab.train import check_same_corpus

    corpus = load_corpus(ckpt.config.data)
    try:
        check_same_corpus(Path(ckpt.path).parent, corpus.record, needs)
    except CheckpointError as e:
        _warn(f"{e}; the corpus is read unchecked")
    return corpus


def cmd_eval(ns: argparse.Namespace) -> int:
    from rnnlab.data.corpus import read_corpus_file
    from rnnlab.evaluate import evaluate_text, token_metrics, unit_for

    model, vocab, ckpt = _load_lm(ns)
    tc, dc = ckpt.config.train, ckpt.config.data
    if ns.data and ns.split:
        raise ConfigError("give --data FILE or --split NAME, not both")
    if ns.data:
        text, source, key = read_corpus_file(ns.data, dc.format), ns.data, "eval"
    else:
        split = ns.split or "val"
        corpus = _run_corpus(ckpt, f"scoring its {split} split")
        text = {"train": corpus.train, "val": corpus.val, "test": corpus.test}[split]
        if text is None:
            raise ConfigError(f"the run has no {split} split (give --test at training time, or --data FILE)")
        source, key = f"{split} split", split
    r = evaluate_text(model, vocab, text, batch_size=tc.eval_batch_size, seq_len=tc.seq_len)
    unit = unit_for(vocab.level)
    m = token_metrics(r["loss"], vocab.level)
    summary = {"checkpoint": str(ckpt.path), "data": source, "tokens": r["tokens"], "loss": m["loss"],
               unit: m[unit], "ppl": m["ppl"], f"{key}_{unit}": m[unit]}
    print("\n".join(f"{k}: {_fmt(v)}" for k, v in summary.items()))
    if ns.json:
        _print_json(summary)
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from rnnlab.checkpoint import load_model
    from rnnlab.data.corpus import BUILTIN
    from rnnlab.sampling import generate
    from rnnlab.train import train

    out = ns.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    # the demo's own options named in its errors (the train command's --max-steps or --resume are not demo's)
    if ns.time_budget <= 0:  # (NaN and infinity: the config's check names them)
        raise ConfigError(f"--time-budget must be a number of seconds > 0, got {ns.time_budget}")
    if (Path(out) / "last.safetensors").exists() or (Path(out) / "best.safetensors").exists():
        raise ConfigError(f"--out {out} already holds a run: choose another --out, or continue that run with "
                          f"rnnlab train --out {out} --resume")
    # the defaults are the configuration tuned on tiny-shakespeare for short CPU budgets
    cfg = RunConfig(data=DataConfig(data=BUILTIN),
                    train=TrainConfig(time_budget=ns.time_budget, eval_interval=500, seed=ns.seed, out=out)).validate()
    print(f"rnnlab demo: a 2-layer LSTM learns Python from the standard library's source, "
          f"for {ns.time_budget:.0f} s on this machine. Run folder: {out}", file=sys.stderr)
    try:
        summary = train(cfg, progress=not ns.quiet)
    except TrainingError as e:  # its advice names train's options: say where they are given
        raise TrainingError(str(e).replace("Start a new run with", "Train with rnnlab train and")) from None
    if summary["stopped"] == "interrupted":  # as rnnlab train: say how to go on, exit 128 + the signal
        print(f"interrupted: saved {out}/last.safetensors; continue with rnnlab train --out {out} --resume "
              f"(up to the demo's {ns.time_budget:g} s, or give --time-budget)", file=sys.stderr)
        return 128 + summary["signal"]
    model, vocab, _ = load_model(out)
    for temp in (0.5, 0.8, 1.0):
        text = generate(model, vocab, SampleConfig(prime="def ", length=300, temperature=temp, seed=ns.seed))[0]
        print(f"\n=== sample, temperature {temp} ===\n{text}")
    print(f"\nvalidation bits per character: {summary['best_val_bpc']:.3f} (best), "
          f"{summary['val_bpc']:.3f} (last), after {summary['steps']} steps, {summary['elapsed_s']:.0f} s, "
          f"{summary['tokens_per_sec']:,.0f} chars/s")
    print(f"sample more with: rnnlab sample {out} --prime 'class ' --temperature 0.8")
    if ns.json:
        _print_json(summary)
    return 0


def cmd_data(ns: argparse.Namespace) -> int:
    from rnnlab.data import download

    if ns.data_cmd == "list":
        for name, src in download.CORPORA.items():
            print(f"{name:16s} {src.size:>10,d} bytes  {src.description}")
        return 0
    path = download.download(ns.name, dest_dir=ns.dir, url=ns.url, progress=not ns.quiet)
    print(path)
    return 0


# n-gram models ---------------------------------------------------------------------------

NGRAM_EXAMPLES = """examples:
  rnnlab ngram fit --data input.txt --order 7 --out shakespeare7.npz     # Kneser-Ney, 90/10 split
  rnnlab ngram eval shakespeare7.npz                  # bits per character on its validation split
  rnnlab ngram eval shakespeare7.npz --data other.txt
  rnnlab ngram sample shakespeare7.npz --prime "ROMEO:" --length 300 --temperature 0.8 --seed 1
  rnnlab ngram prob shakespeare7.npz "the cat in the hat"
  rnnlab ngram stats --data input.txt --max-order 8 --plot unigrams.png
"""


def _ngram_data(ns: argparse.Namespace) -> DataConfig:
    return from_dict(DataConfig, {**DataConfig().__dict__, **_given(ns, DataConfig)})


def _check_ngram_out(out: str) -> None:
    """Refuse an --out that is a folder, lies in a missing folder, or is a file other than an n-gram model
    (the corpus itself, say), before the fitting: a refit replaces only a model."""
    from rnnlab.ngram import load_ngram
    from rnnlab.plots import check_writable

    check_writable(out)
    if Path(out).exists():
        try:
            load_ngram(out)
        except CheckpointError:
            raise ConfigError(f"--out {out} exists and is not an n-gram model; fitting would overwrite it: "
                              "choose another name") from None


def cmd_ngram(ns: argparse.Namespace) -> int:
    from rnnlab.data.corpus import build_vocab, load_corpus, read_corpus_file
    from rnnlab.metrics import LN2, token_metrics, unit_for
    from rnnlab.ngram import NGramLM, load_ngram

    if ns.ngram_cmd == "fit":
        dc = _ngram_data(ns)
        problems = dc.problems()
        if problems:
            raise ConfigError(problems)
        nc = from_dict(NGramConfig, _given(ns, NGramConfig))
        _check_ngram_out(ns.out)
        corpus = load_corpus(dc)
        vocab = build_vocab(corpus, dc.level, dc.min_count)
        t0 = time.perf_counter()
        boundary = None
        if nc.sentences:
            if "\n" not in vocab.index:
                raise ConfigError("--sentences needs line ends in the training text; it has none")
            boundary = int(vocab.encode("\n")[0])
        model = NGramLM(nc.order, nc.smoothing, nc.k, boundary=boundary).fit(vocab.encode(corpus.train), len(vocab))
        fit_s = time.perf_counter() - t0
        unit = unit_for(dc.level)
        summary: dict[str, Any] = {"model": ns.out, "order": nc.order, "smoothing": nc.smoothing,
                                   "sentences": nc.sentences,
                                   "train_tokens": model.n_tokens_, "vocab_size": len(vocab),
                                   "fit_s": round(fit_s, 3), "memory_mb": round(model.nbytes_ / 2**20, 2)}
        for split, text in (("val", corpus.val), ("test", corpus.test)):
            if text is not None:
                summary[f"{split}_{unit}"] = token_metrics(model.score(vocab.encode(text))["loss"], dc.level)[unit]
        model.save(ns.out, vocab, extra={"data": dataclasses.asdict(dc), "ngram": dataclasses.asdict(nc)})
    else:
        model, vocab = load_ngram(ns.model)
        if vocab is None:
            raise ConfigError(f"{ns.model} holds no vocabulary; fit it with rnnlab ngram fit")
        dc = from_dict(DataConfig, (getattr(model, "extra_", None) or {}).get("data") or DataConfig().__dict__)
        unit = unit_for(vocab.level)
        if ns.ngram_cmd == "eval":
            if ns.data and ns.split:
                raise ConfigError("give --data FILE or --split NAME, not both")
            if ns.data:
                text, source = read_corpus_file(ns.data, dc.format), ns.data
            else:
                split = ns.split or "val"
                if dc.data is None and dc.train is None:
                    raise ConfigError(f"{ns.model} does not record its corpus; give --data FILE")
                text = getattr(load_corpus(dc), split)
                if text is None:
                    raise ConfigError(f"the model's corpus has no {split} split; give --data FILE")
                source = f"{split} split"
            r = model.score(vocab.encode(text))
            m = token_metrics(r["loss"], vocab.level)
            summary = {"model": ns.model, "data": source, "tokens": r["tokens"], "loss": m["loss"], unit: m[unit],
                       "ppl": m["ppl"]}
        elif ns.ngram_cmd == "prob":
            ids = vocab.encode(ns.text)
            lp = model.log_prob(ids, include_first=True)  # the first symbol from the unigram model
            total = float(lp.sum())
            summary = {"text": ns.text, "tokens": len(ids), "log_prob": total, "log2_prob": total / LN2,
                       "prob": float(np.exp(total)), unit: -total / LN2 / max(len(ids), 1)}
        else:  # sample
            from rnnlab.decoding import make_sampler, prime_end

            sc = _sample_config(ns)
            prime = vocab.encode(sc.prime) if sc.prime else np.zeros(0, dtype=np.int64)
            last = prime_end(vocab, sc.prime, prime)
            if sc.strategy == "beam":
                rows = [model.beam(prime, sc.length, sc.beam_width)[0]] * sc.num_samples
            else:
                rng = np.random.default_rng(sc.seed)
                rows = model.generate(prime, sc.length, make_sampler(sc.strategy, sc.temperature, sc.top_k, sc.top_p),
                                      rng, sc.num_samples)
            for i, row in enumerate(rows):
                if sc.num_samples > 1:
                    print(f"--- sample {i + 1} ---")
                print(sc.prime + vocab.decode(row, after=last))
            return 0
    print("\n".join(f"{k}: {_fmt(v)}" for k, v in summary.items()))
    if ns.json:
        _print_json(summary)
    return 0


def cmd_ngram_stats(ns: argparse.Namespace) -> int:
    from rnnlab.data.corpus import build_vocab, load_corpus
    from rnnlab.ngram import ngram_table, pair_asymmetry

    dc = _ngram_data(ns)
    problems = dc.problems() + [f"{name} must be >= 1, got {getattr(ns, name)}" for name in ("top", "max_order")
                                if getattr(ns, name) < 1]  # before any output
    if problems:
        raise ConfigError(problems)
    corpus = load_corpus(dc)
    vocab = build_vocab(corpus, dc.level, dc.min_count)
    ids = vocab.encode(corpus.train)
    counts = np.bincount(ids, minlength=len(vocab))
    order = np.argsort(-counts, kind="stable")
    print(f"training split: {len(ids):,} tokens, {len(vocab)} symbols\n\nunigram histogram (top {ns.top}):")
    for i in order[:ns.top]:
        print(f"  {vocab.symbols[i]!r:>8}  {counts[i]:>10,d}  {counts[i] / len(ids):.4f}")
    pairs = pair_asymmetry(ids, vocab, ns.top)
    titles = {"frequent": "most frequent pairs (a, b)",
              "asymmetric": "order matters: P(a, b) against P(b, a)",
              "dependent": "dependence: P(a, b) against P(a) P(b)"}
    for key, title in titles.items():
        print(f"\n{title}:")
        for r in pairs[key]:
            print(f"  {r['a'] + vocab.separator(r['a'], r['b']) + r['b']!r:>10}  P(a,b)={r['p_ab']:.5f}  P(b,a)={r['p_ba']:.5f}  "
                  f"P(a)P(b)={r['p_a_p_b']:.5f}  PMI={r['pmi']:+.2f} bits")
    table = ngram_table(ids, len(vocab), ns.max_order)
    print("\nn-grams possible (|V|^n) against observed in training:")
    print(f"  {'n':>2}  {'possible':>22}  {'observed':>10}  {'fraction':>10}  {'seen once':>10}")
    for r in table:
        print(f"  {r['n']:>2}  {r['possible']:>22,d}  {r['observed']:>10,d}  {r['fraction']:>10.2e}  "
              f"{r['singletons']:>10,d}")
    if ns.plot:
        from rnnlab.plots import plot_unigrams

        plot_unigrams([vocab.symbols[i] for i in order], counts[order], ns.plot)
        print(f"\nunigram histogram written to {ns.plot}")
    if ns.json:
        _print_json({"tokens": len(ids), "vocab_size": len(vocab), "pairs": pairs,
                     "table": [{**r, "possible": str(r["possible"])} for r in table]})
    return 0


def _add_ngram_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    g = sub.add_parser("ngram", help="count-based n-gram language models beside the RNNs", formatter_class=fmt,
                       description="Fit, score, sample and inspect n-gram models on the same splits and "
                                   "vocabulary as the RNNs.", epilog=NGRAM_EXAMPLES)
    gsub = g.add_subparsers(dest="ngram_cmd", required=True, metavar="ACTION")
    fit = gsub.add_parser("fit", help="count a corpus and save the model", formatter_class=fmt,
                          epilog=NGRAM_EXAMPLES)
    _add_dataclass_options(fit, DataConfig, "data options")
    _add_dataclass_options(fit, NGramConfig, "model options")
    fit.add_argument("--out", required=True, help="the model file to write (.npz, no pickle)")
    fit.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    ev = gsub.add_parser("eval", help="bits per character on the model's split or a file", formatter_class=fmt,
                         epilog=NGRAM_EXAMPLES)
    ev.add_argument("model")
    ev.add_argument("--data", help="a text file to score (default: the model's own split)")
    ev.add_argument("--split", choices=("train", "val", "test"), default=None, help="default: val")
    ev.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    sa = gsub.add_parser("sample", help="generate text with the RNN's samplers", formatter_class=fmt,
                         epilog=NGRAM_EXAMPLES)
    sa.add_argument("model")
    _add_dataclass_options(sa, SampleConfig, "sampling options")
    pr = gsub.add_parser("prob", help="the probability the model gives a text", formatter_class=fmt,
                         epilog=NGRAM_EXAMPLES)
    pr.add_argument("model")
    pr.add_argument("text")
    pr.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    for p in (fit, ev, sa, pr):
        p.set_defaults(func=cmd_ngram)
    st = gsub.add_parser("stats", help="histograms, pairs and n-gram counts of a corpus", formatter_class=fmt,
                         epilog=NGRAM_EXAMPLES)
    _add_dataclass_options(st, DataConfig, "data options")
    st.add_argument("--max-order", type=int, default=6, help="the n-gram table's largest n (default: 6)")
    st.add_argument("--top", type=int, default=10, help="rows per list (default: 10)")
    st.add_argument("--plot", default=None, help="write the unigram histogram to this PNG")
    st.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    st.set_defaults(func=cmd_ngram_stats)


# sequence classification -----------------------------------------------------------------------

CLASSIFY_EXAMPLES = """examples:
  rnnlab classify train --builtin digits --max-epochs 20 --out runs/digits       # 8x8 digits, a row a step
  rnnlab classify train --data names/ --time-budget 300 --out runs/names         # names/<Language>.txt
  rnnlab classify train --data reviews.csv --input-column review --label-column sentiment --level word \\
      --max-epochs 5 --out runs/reviews
  rnnlab classify eval runs/names                     # the run's test split: metrics, confusion matrix
  rnnlab classify eval runs/names --split val --plot confusion.png
  rnnlab classify predict runs/names Nguyen Schmidt "O'Neal" --top-k 3
  rnnlab classify train --out runs/names --resume --time-budget 600   # continue the same run
"""


def classify_config_from_args(ns: argparse.Namespace) -> ClassifyRunConfig:
    """The classifier defaults (or the run's saved config, with --resume), overlaid with the options given."""
    return _config_from_args(ns, ClassifyRunConfig, CLASSIFY_SECTIONS)


def cmd_classify(ns: argparse.Namespace) -> int:
    from rnnlab import classify

    if ns.classify_cmd == "train":
        summary = classify.train_classifier(classify_config_from_args(ns), progress=not ns.quiet)
        _report(summary, ns.json)
        return 128 + summary["signal"] if summary["stopped"] == "interrupted" else 0
    if ns.classify_cmd == "eval":
        if ns.data and ns.split:
            raise ConfigError("give --data FILE or --split NAME, not both")
        r = classify.evaluate_classifier(ns.checkpoint, split=ns.split or "test", data=ns.data, plot=ns.plot)
        print(f"checkpoint: {r['checkpoint']}\ndata: {r['data']} ({r['examples']} examples)")
        print(f"accuracy: {r['acc']:.4f}\nbalanced accuracy: {r['balanced_acc']:.4f}\nmacro F1: {r['macro_f1']:.4f}\n"
              f"loss: {r['loss']:.4f} nats per sequence")
        width = max(len(c) for c in r["per_class"])
        print(f"\n{'class':<{width}}  precision  recall     f1  support")
        for c, m in r["per_class"].items():
            print(f"{c:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
        print("\n" + r["confusion_text"])
        if r.get("plot"):
            print(f"\nconfusion matrix written to {r['plot']}")
        if ns.json:
            _print_json({k: v for k, v in r.items() if k != "confusion_text"})
        return 0
    rows = classify.predict(ns.checkpoint, ns.inputs, ns.top_k)
    for row in rows:
        print(row["input"] + "\t" + "  ".join(f"{t['label']} {t['prob']:.3f}" for t in row["top"]))
    if ns.json:
        _print_json({"predictions": rows})
    return 0


def _add_classify_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    c = sub.add_parser("classify", help="sequence classification: many-to-one RNNs", formatter_class=fmt,
                       description="Train, evaluate and use RNN sequence classifiers (the state after the "
                                   "last element feeds a softmax over the classes).", epilog=CLASSIFY_EXAMPLES)
    csub = c.add_subparsers(dest="classify_cmd", required=True, metavar="ACTION")
    t = csub.add_parser("train", help="train a classifier", formatter_class=fmt, epilog=CLASSIFY_EXAMPLES)
    defaults = ClassifyRunConfig()
    for section, cls in CLASSIFY_SECTIONS.items():
        _add_dataclass_options(t, cls, f"{section} options", skip=CLASSIFY_SKIP, defaults=getattr(defaults, section),
                               helps=SEQUENCE_BATCH_HELP | {"eval_batch_size": "validation sequences scored at once, "
                                                                               "x 8 (scoring needs no gradients)"})
    t.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = csub.add_parser("eval", help="accuracy, balanced accuracy, F1 and the confusion matrix", formatter_class=fmt,
                        epilog=CLASSIFY_EXAMPLES)
    e.add_argument("checkpoint", help="a run folder (its best checkpoint) or a .safetensors checkpoint")
    e.add_argument("--split", choices=("train", "val", "test"), default=None, help="the run's split (default: test)")
    e.add_argument("--data", default=None, help="score every example of this folder or file instead")
    e.add_argument("--plot", default=None, help="write the confusion matrix to this PNG")
    e.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p = csub.add_parser("predict", help="the most probable classes of each input", formatter_class=fmt,
                        epilog=CLASSIFY_EXAMPLES)
    p.add_argument("checkpoint", help="a run folder (its best checkpoint) or a .safetensors checkpoint")
    p.add_argument("inputs", nargs="+", help="texts to classify")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per input (default: 3)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    for q in (t, e, p):
        q.set_defaults(func=cmd_classify)


# gradients through time, and BPTT by hand -----------------------------------------------------

GRADIENTS_EXAMPLES = """examples:
  rnnlab gradients --length 100 --plot grads.png                # elman, lstm, gru at initialisation
  rnnlab gradients --cells elman --gain 3 --plot explode.png    # a large recurrent weight: exploding
  rnnlab gradients --checkpoint runs/x --length 200 --plot trained.png --json-out trained.json
"""
SCRATCH_EXAMPLES = """examples:
  rnnlab scratch train input.txt --hidden-size 100 --seq-len 25 --steps 5000     # min-char-rnn, checked
  rnnlab scratch train input.txt --optimizer sgd --lr 0.5 --clip-norm 5 --sample-length 200
"""


def cmd_gradients(ns: argparse.Namespace) -> int:
    import torch

    from rnnlab import jsonio as jio
    from rnnlab.checkpoint import load_model
    from rnnlab.data.corpus import load_corpus
    from rnnlab.gradients import gradient_norms_per_step, gradient_report, plot_gradient_norms, recurrent_spectra

    bad = [f"{name} must be >= 1, got {getattr(ns, name)}" for name in ("length", "batch_size")
           if getattr(ns, name) < 1]  # checked here too: --checkpoint alone never reaches gradient_report
    if bad:
        raise ConfigError(bad)
    report = gradient_report(cells=ns.cells, hidden_size=ns.hidden_size, length=ns.length, seed=ns.seed,
                             batch_size=ns.batch_size, num_layers=ns.num_layers, loss=ns.loss,
                             recurrent_gain=ns.gain, clip_norm=ns.clip_norm) if ns.cells else None
    for path in ns.checkpoint or []:
        model, vocab, ckpt = load_model(path)
        ids = vocab.encode(load_corpus(ckpt.config.data).val)
        need = ns.batch_size * (ns.length + 1)
        if len(ids) < need:
            raise ConfigError(f"{path}: the validation split has {len(ids)} tokens; --batch-size x (--length + 1) "
                              f"= {need} needed")
        rows = torch.from_numpy(ids[:need].reshape(ns.batch_size, ns.length + 1))  # (B, T+1)
        norms = gradient_norms_per_step(model.double(), rows[:, :-1], loss=ns.loss, targets=rows[:, 1:])
        name = f"{ckpt.config.model.cell} {path} (step {ckpt.train_state.get('step', '?')})"  # the path as given
        entry = {"norms": [float(v) for v in norms], "spectra": recurrent_spectra(model),
                 "first_over_last": float(norms[0] / norms[-1]) if norms[-1] > 0 else float("nan")}
        if report is None:
            report = {"config": {"length": ns.length, "loss": ns.loss, "batch_size": ns.batch_size},
                      "steps": list(range(1, ns.length + 1)), "cells": {}}
        unique, k = name, 1
        while unique in report["cells"]:  # the same checkpoint twice: a curve each, never one over the other
            k += 1
            unique = f"{name} #{k}"
        report["cells"][unique] = entry
    if report is None:
        raise ConfigError("nothing to measure: give --cells or --checkpoint")
    for name, entry in report["cells"].items():
        clipped = (f"; gradient norm {entry['grad_norm']:.3g}, clipped by x{entry['clip_factor']:.3g}"
                   if ns.clip_norm > 0 and "clip_factor" in entry else "")
        print(f"{name:>28}: |dL/dh_1| / |dL/dh_T| = {entry['first_over_last']:.3g}{clipped}")
    if ns.plot:
        plot_gradient_norms(report, ns.plot)
        print(f"plot written to {ns.plot}")
    if ns.json_out:
        from rnnlab.checkpoint import atomic_write

        atomic_write(ns.json_out, (jio.dumps(report) + "\n").encode("utf-8"))
        print(f"curves written to {ns.json_out}")
    return 0


CONNECTIVITY_EXAMPLES = """examples:
  rnnlab connectivity runs/x --text "for i in range(10): print(i)" --plot connectivity.png
  rnnlab connectivity runs/x --text-file snippet.py --top 5 --json-out connectivity.json
"""


def cmd_connectivity(ns: argparse.Namespace) -> int:
    from rnnlab import jsonio as jio
    from rnnlab.checkpoint import atomic_write
    from rnnlab.data.corpus import read_text
    from rnnlab.gradients import connectivity, plot_connectivity, strongest_inputs
    from rnnlab.plots import check_writable

    if (ns.text is None) == (ns.text_file is None):
        raise ConfigError("give the text with --text TEXT or --text-file FILE (one of them)")
    if ns.top < 1:
        raise ConfigError(f"--top must be >= 1, got {ns.top}")
    if ns.plot:
        check_writable(ns.plot)
    text = ns.text if ns.text is not None else read_text(ns.text_file)
    model, vocab, ckpt = _load_lm(ns)
    ids = vocab.encode(text)
    if len(ids) < 2:
        raise ConfigError(f"the text holds {len(ids)} {vocab.level}(s); at least 2 are needed")
    c = connectivity(model, ids)  # (N-1, N-1)
    tokens = [vocab.symbols[int(i)] for i in ids]
    for t, row in enumerate(strongest_inputs(c, ns.top)):
        shares = ", ".join(f"{s} {tokens[s]!r} {share:.2f}" for s, share in row)
        print(f"{t:>5} {tokens[t]!r:>8} -> {tokens[t + 1]!r:<8} strongest: {shares}")
    if ns.plot:
        plot_connectivity(c, tokens, ns.plot, title=f"connectivity: {ckpt.path.parent.name}")
        print(f"plot written to {ns.plot}")
    if ns.json_out:
        out = {"tokens": tokens, "rows": [[float(v) for v in c[t, :t + 1]] for t in range(len(c))]}
        atomic_write(ns.json_out, (jio.dumps(out) + "\n").encode("utf-8"))
        print(f"connectivity written to {ns.json_out}")
    return 0


EXPOSURE_EXAMPLES = """examples:
  rnnlab exposure runs/x --plot exposure.png                  # 20 prefixes of 100, 200 sampled characters
  rnnlab exposure runs/x --prefixes 50 --length 400 --temperature 0.8 --json-out exposure.json
"""


def cmd_exposure(ns: argparse.Namespace) -> int:
    from rnnlab import jsonio as jio
    from rnnlab.checkpoint import atomic_write
    from rnnlab.exposure import exposure_bias, plot_exposure

    model, vocab, ckpt = _load_lm(ns)
    corpus = _run_corpus(ckpt, "measuring exposure bias against it")
    r = exposure_bias(model, vocab, corpus.val, corpus.train, prefixes=ns.prefixes, prefix_len=ns.prefix_len,
                      length=ns.length, buckets=ns.buckets, ref_order=ns.ref_order, stat_order=ns.stat_order,
                      temperature=ns.temperature, seed=ns.seed)
    print(f"{'distance':>9} {'teacher bits':>13} {'ref: real':>10} {'ref: generated':>15} {'JS gen/real':>12} "
          f"{'JS floor':>9}")
    for i, d in enumerate(r["distance"]):
        print(f"{d:9.1f} {r['teacher_bits'][i]:13.3f} {r['real_ref_bits'][i]:10.3f} {r['generated_ref_bits'][i]:15.3f} "
              f"{r['divergence'][i]:12.4f} {r['real_divergence'][i]:9.4f}")
    s = r["summary"]
    print(f"mean: the reference model finds generated text {s['ref_gap_bits']:+.3f} bits per token less likely than "
          f"real text; n-gram divergence {s['divergence']:.4f} (floor {s['real_divergence']:.4f})")
    if ns.plot:
        plot_exposure(r, ns.plot, title=f"exposure bias: {ckpt.path.parent.name}")
        print(f"plot written to {ns.plot}")
    if ns.json_out:
        atomic_write(ns.json_out, (jio.dumps(r) + "\n").encode("utf-8"))
        print(f"report written to {ns.json_out}")
    return 0


def cmd_scratch(ns: argparse.Namespace) -> int:
    from rnnlab.data.corpus import read_text
    from rnnlab.scratch import train_scratch

    text = read_text(ns.file)

    def on_log(row: dict[str, Any]) -> None:
        line = f"step {row['step']:>6}  loss {row['loss']:.3f}  smooth {row['smooth_loss']:.3f}  bpc {row['bpc']:.3f}"
        print(line + (f"  |grad| {row['grad_norm']:.2f}" if "grad_norm" in row else ""), flush=True)
        if row.get("sample"):
            print("    " + row["sample"].replace("\n", "\n    "), flush=True)

    r = train_scratch(text, hidden_size=ns.hidden_size, seq_len=ns.seq_len, lr=ns.lr, steps=ns.steps, seed=ns.seed,
                      optimizer=ns.optimizer, clip_value=ns.clip_value, clip_norm=ns.clip_norm,
                      log_interval=ns.log_interval, sample_len=ns.sample_length, on_log=on_log)
    print(f"loss {r['initial_loss']:.3f} (ln V, knowing nothing) -> {r['final_smooth_loss']:.3f} nats after "
          f"{ns.steps} steps")
    if ns.json:
        _print_json({k: v for k, v in r.items() if k not in ("model", "losses")})
    return 0


TASKS_EXAMPLES = """examples:
  rnnlab tasks run adding --cell elman --length 200 --time-budget 60 --out runs/adding-elman
  rnnlab tasks run adding --cell lstm --length 200 --time-budget 60 --out runs/adding-lstm
  rnnlab tasks run copy --cell gru --length 50 --max-steps 3000 --out runs/copy
  rnnlab tasks run temporal-order --cell elman --length 100 --recurrent-init orthogonal --norm-reg 0.005 \\
      --clip-norm 1 --out runs/order
  rnnlab tasks run adding --out runs/adding-elman --resume --time-budget 120
"""


def _task_sections() -> dict[str, type]:
    from rnnlab.task_train import TaskConfig

    return {"task": TaskConfig, "model": ModelConfig, "cures": CuresConfig, "optim": OptimConfig, "train": TrainConfig}


def cmd_tasks(ns: argparse.Namespace) -> int:
    from rnnlab.task_train import TaskRunConfig, resume_task_config, train_task

    given = {section: _given(ns, cls) for section, cls in _task_sections().items()}
    given["task"]["name"] = ns.task
    if getattr(ns, "resume", False):
        cfg = resume_task_config(getattr(ns, "out", TaskRunConfig().train.out), given)
    else:
        from rnnlab.loop import with_overrides

        cfg = with_overrides(TaskRunConfig, TaskRunConfig().to_dict(), given, resume=False)
    summary = train_task(cfg, progress=not ns.quiet)
    _report(summary, ns.json)
    return 128 + summary["signal"] if summary["stopped"] == "interrupted" else 0


# which fast path runs ----------------------------------------------------------------------

def cmd_paths(ns: argparse.Namespace) -> int:
    import torch

    from rnnlab.nn import paths
    from rnnlab.nn.cells import CELL_TYPES

    model = ModelConfig(**_given(ns, ModelConfig))
    problems = model.problems() + ([] if ns.streams >= 1 else [f"streams must be >= 1, got {ns.streams}"])
    if problems:
        raise ConfigError(problems)
    from rnnlab.allocator import keep_large_blocks

    keep_large_blocks()  # as every training command sets it, so that the choices are theirs
    machine = paths.Machine.of(ns.device, getattr(torch, ns.dtype))
    print(f"machine: {machine.device}, {ns.dtype}, kernels {'built' if machine.kernels else 'not used'}, oneDNN's "
          f"packed product {'usable' if machine.onednn else 'unusable'}, {machine.threads} threads, large blocks "
          f"{'kept' if machine.large_blocks else 'as malloc has them'}")
    net = paths.Network(CELL_TYPES[model.cell], model.hidden_size, model.num_layers, ns.streams)
    for what, choice in paths.explain(machine, net).items():
        print(f"{what}: {choice.path} ({choice.reason})")
    return 0


# the page in the browser -------------------------------------------------------------------

SERVE_EXAMPLES = """examples:
  rnnlab serve                                         # the lab: open http://127.0.0.1:8000
  rnnlab serve --data-dir texts/                       # the lab may also read and train on texts/*.txt
  rnnlab serve runs/shakespeare                        # then open http://127.0.0.1:8000
  rnnlab serve runs/a runs/b/best.safetensors --port 8080
  rnnlab serve runs/x --host 0.0.0.0                   # other machines too: open the printed URL (token)
  rnnlab serve runs/x --host 0.0.0.0 --token "$TOKEN" --certfile cert.pem --keyfile key.pem   # HTTPS
"""


def cmd_serve(ns: argparse.Namespace) -> int:
    from rnnlab.serve import serve

    def ready(url: str) -> None:
        what = f"{len(ns.checkpoints)} model(s) on {url} (the lab at /lab)" if ns.checkpoints else f"the lab on {url}"
        print(f"rnnlab: serving {what} (API docs at /docs, schema at /openapi.json); Ctrl-C stops", file=sys.stderr)

    serve(ns.checkpoints, host=ns.host, port=ns.port, workers=ns.workers, log_level=ns.log_level, on_ready=ready,
          token=ns.token, certfile=ns.certfile, keyfile=ns.keyfile, max_streams=ns.max_streams,
          lab_cache=ns.lab_cache, data_dir=ns.data_dir, runs_dir=ns.runs_dir, runs_max_mb=ns.runs_max_mb)
    return 0


# parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="rnnlab", formatter_class=fmt,
                                description="Recurrent language models: train, sample, evaluate.",
                                epilog="run 'rnnlab COMMAND --help' for each command's options and examples")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)), "config sections share an option name; the CLI would set both"
    t = sub.add_parser("train", help="train a language model (truncated BPTT)", formatter_class=fmt,
                       description="Train an Elman RNN, LSTM or GRU language model on any text.", epilog=TRAIN_EXAMPLES)
    for section, cls in SECTIONS.items():
        _add_dataclass_options(t, cls, f"{section} options")
    t.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate text from a trained model", formatter_class=fmt,
                       description="Generate text, primed, with argmax, sampling (temperature, top-k, top-p) "
                                   "or beam search.", epilog=SAMPLE_EXAMPLES)
    s.add_argument("checkpoint", help="a run folder (its best checkpoint) or a .safetensors checkpoint")
    _add_dataclass_options(s, SampleConfig, "sampling options")
    _add_device(s)
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="bits per character of a checkpoint on a split or a file", formatter_class=fmt,
                       epilog=EVAL_EXAMPLES)
    e.add_argument("checkpoint", help="a run folder (its best checkpoint) or a .safetensors checkpoint")
    e.add_argument("--data", help="a text file to score (default: the run's own split)")
    e.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="the run's split to score (default: val)")
    e.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    _add_device(e)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="the main job: learn Python source from the standard library, then sample",
                       formatter_class=fmt, epilog=DEMO_EXAMPLES)
    d.add_argument("--time-budget", type=float, default=180.0, metavar="X", help="seconds of training (default: 180)")
    d.add_argument("--out", default=None, help="run folder (default: runs/demo-TIMESTAMP)")
    d.add_argument("--seed", type=int, default=1, help="seed (default: 1)")
    d.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    _add_ngram_parser(sub, fmt)
    _add_classify_parser(sub, fmt)

    gr = sub.add_parser("gradients", help="gradient norm per time step: vanishing and exploding", formatter_class=fmt,
                        epilog=GRADIENTS_EXAMPLES,
                        description="The norm of dL/dh_t for every step t, for fresh models of each cell or for "
                                    "trained checkpoints, with the recurrent weights' spectra.")
    gr.add_argument("--cells", nargs="*", default=["elman", "lstm", "gru"], help="fresh models (default: all three)")
    gr.add_argument("--checkpoint", nargs="*", default=None, help="trained language models (their validation text)")
    gr.add_argument("--length", type=int, default=100, help="T, steps (default: 100)")
    gr.add_argument("--hidden-size", type=int, default=64, help="fresh models' width (default: 64)")
    gr.add_argument("--num-layers", type=int, default=1, help="fresh models' depth (default: 1)")
    gr.add_argument("--batch-size", type=int, default=8, help="sequences averaged (default: 8)")
    gr.add_argument("--gain", type=float, default=1.0, help="multiply fresh recurrent weights by this (default: 1)")
    gr.add_argument("--loss", choices=("last", "all"), default="last", help="loss at the last step, or summed")
    gr.add_argument("--clip-norm", type=float, default=0.0,
                    help="fresh models: the clipping threshold of the gradient's global norm; the JSON's "
                         "clipped_norms are the curves scaled by the factor clipping applies (default: 0, off)")
    gr.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    gr.add_argument("--plot", default=None, help="write the curves to this PNG (log scale)")
    gr.add_argument("--json-out", default=None, help="write the curves and spectra to this JSON file")
    gr.set_defaults(func=cmd_gradients)

    co = sub.add_parser("connectivity", help="how strongly each prediction depends on each earlier character",
                        formatter_class=fmt, epilog=CONNECTIVITY_EXAMPLES,
                        description="For a text, the gradient magnitude of the log probability of each next "
                                    "character with respect to every earlier input: per position, the earlier "
                                    "characters the prediction depends on most.")
    co.add_argument("checkpoint", help="a run folder or a .safetensors checkpoint")
    co.add_argument("--text", default=None, help="the text read")
    co.add_argument("--text-file", default=None, help="read the text from this file")
    co.add_argument("--top", type=int, default=3, help="earlier positions listed per prediction (default: 3)")
    co.add_argument("--plot", default=None, help="write the matrix to this PNG (each row divided by its largest)")
    co.add_argument("--json-out", default=None, help="write the matrix (its rows up to each position) to this JSON")
    _add_device(co)
    co.set_defaults(func=cmd_connectivity)

    ex = sub.add_parser("exposure", help="exposure bias: how far the model drifts on its own samples",
                        formatter_class=fmt, epilog=EXPOSURE_EXAMPLES,
                        description="From prefixes of the validation text, continue with the model's own samples "
                                    "and measure the drift against the distance from the prefix.")
    ex.add_argument("checkpoint", help="a run folder or a .safetensors checkpoint")
    ex.add_argument("--prefixes", type=int, default=20, help="K, prefixes of the validation text (default: 20)")
    ex.add_argument("--prefix-len", type=int, default=100, help="tokens of each prefix (default: 100)")
    ex.add_argument("--length", type=int, default=200, help="L, tokens generated after each (default: 200)")
    ex.add_argument("--buckets", type=int, default=10, help="bands of the distance axis (default: 10)")
    ex.add_argument("--ref-order", type=int, default=5, help="the reference n-gram model's order (default: 5)")
    ex.add_argument("--stat-order", type=int, default=2, help="n of the compared n-gram statistics (default: 2)")
    ex.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1)")
    ex.add_argument("--seed", type=int, default=0, help="(default: 0)")
    ex.add_argument("--plot", default=None, help="write both curves to this PNG")
    ex.add_argument("--json-out", default=None, help="write the report to this JSON file")
    _add_device(ex)
    ex.set_defaults(func=cmd_exposure)

    tk = sub.add_parser("tasks", help="long-memory tasks: adding, copy, temporal order", formatter_class=fmt,
                        epilog=TASKS_EXAMPLES, description="Train a cell on a long-memory task for any length T "
                                                           "and report success against the task's trivial baseline.")
    tsub = tk.add_subparsers(dest="tasks_cmd", required=True, metavar="ACTION")
    tr = tsub.add_parser("run", help="train on a task and report success", formatter_class=fmt, epilog=TASKS_EXAMPLES)
    tr.add_argument("task", choices=("adding", "copy", "temporal-order"))
    from rnnlab.task_train import TaskRunConfig

    task_defaults = TaskRunConfig()
    for section, cls in _task_sections().items():
        _add_dataclass_options(tr, cls, f"{section} options", skip=("seq_len", "name"),
                               defaults=getattr(task_defaults, section),
                               helps=SEQUENCE_BATCH_HELP | {"eval_batch_size": "validation sequences scored at once"})
    tr.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_tasks)

    sc = sub.add_parser("scratch", help="BPTT by hand: a NumPy Elman RNN you can read", formatter_class=fmt,
                        epilog=SCRATCH_EXAMPLES)
    scsub = sc.add_subparsers(dest="scratch_cmd", required=True, metavar="ACTION")
    st = scsub.add_parser("train", help="train the NumPy model on a text and watch the loss fall",
                          formatter_class=fmt, epilog=SCRATCH_EXAMPLES)
    st.add_argument("file", help="a UTF-8 text file")
    st.add_argument("--hidden-size", type=int, default=100, help="(default: 100)")
    st.add_argument("--seq-len", type=int, default=25, help="BPTT window (default: 25)")
    st.add_argument("--lr", type=float, default=0.1, help="(default: 0.1)")
    st.add_argument("--steps", type=int, default=1000, help="(default: 1000)")
    st.add_argument("--optimizer", choices=("adagrad", "sgd"), default="adagrad", help="(default: adagrad)")
    st.add_argument("--clip-value", type=float, default=5.0, help="clip each gradient element (default: 5)")
    st.add_argument("--clip-norm", type=float, default=0.0, help="clip the global norm (default: 0, off)")
    st.add_argument("--log-interval", type=int, default=100, help="(default: 100)")
    st.add_argument("--sample-length", type=int, default=0, help="characters sampled at each log (default: 0)")
    st.add_argument("--seed", type=int, default=0, help="(default: 0)")
    st.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    st.set_defaults(func=cmd_scratch)

    pa = sub.add_parser("paths", help="which fast path each part of rnnlab takes here, and why", formatter_class=fmt,
                        epilog="example:\n  rnnlab paths --cell lstm --hidden-size 512 --streams 64\n")
    _add_dataclass_options(pa, ModelConfig, "model options", skip=("dropout", "input", "embedding_size", "fused"))
    pa.add_argument("--streams", type=int, default=1, help="rows stepped at once when sampling (default: 1)")
    pa.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the device described (default: cpu)")
    pa.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="(default: float32)")
    pa.set_defaults(func=cmd_paths)

    sv = sub.add_parser("serve", help="a page in the browser: sample, probabilities, inside the network",
                        formatter_class=fmt, epilog=SERVE_EXAMPLES,
                        description="Serve checkpoints to a web page and a JSON API (OpenAPI at /docs).")
    sv.add_argument("checkpoints", nargs="*", help="run folders or .safetensors checkpoints (none: the page is the lab)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    sv.add_argument("--workers", type=int, default=4, help="threads that run the models (default: 4)")
    sv.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                    help="server log level (default: warning)")
    sv.add_argument("--token", default=None,
                    help="every request must carry this token (Authorization: Bearer TOKEN, or ?token=TOKEN); "
                         "16 or more URL-safe characters (default: none on loopback, a fresh one printed in the "
                         "URL on any other host)")
    sv.add_argument("--certfile", default=None, help="serve HTTPS with this certificate (PEM; with --keyfile)")
    sv.add_argument("--keyfile", default=None, help="the certificate's private key (PEM; with --certfile)")
    sv.add_argument("--max-streams", type=int, default=8,
                    help="generations one client (address) may stream at once; one more is refused with 429 "
                         "(default: 8)")
    sv.add_argument("--lab-cache", default=None,
                    help="where the lab keeps the small models it trains on first use (default: $RNNLAB_LAB_CACHE, "
                         "else ~/.cache/rnnlab/lab)")
    sv.add_argument("--data-dir", default=None,
                    help="a folder whose *.txt files the lab's page may read and train on (by name; the page never "
                         "names a path)")
    sv.add_argument("--runs-dir", default=None,
                    help="where runs started from the page go (default: runs/ in the lab's cache); each is an ordinary "
                         "run folder that rnnlab train --resume and rnnlab sample accept")
    sv.add_argument("--runs-max-mb", type=float, default=1024.0,
                    help="a new run from the page is refused while the runs folder holds more than this (default: 1024)")
    sv.set_defaults(func=cmd_serve)

    da = sub.add_parser("data", help="list and download corpora", formatter_class=fmt, epilog=DATA_EXAMPLES)
    dsub = da.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    dsub.add_parser("list", help="corpora rnnlab knows how to download", formatter_class=fmt,
                    epilog="example:\n  rnnlab data list\n")
    dl = dsub.add_parser("download", help="download a corpus and verify its checksum", formatter_class=fmt,
                         epilog=DATA_EXAMPLES)
    dl.add_argument("name", help="corpus name (see 'rnnlab data list')")
    dl.add_argument("--dir", default=None, help="destination folder (default: ~/.cache/rnnlab/data or $RNNLAB_DATA)")
    dl.add_argument("--url", default=None, help="fetch from this URL instead (a mirror); the checksum still applies")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    da.set_defaults(func=cmd_data)
    return p


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    _warn(str(message), file)


class _LibraryNotes(logging.Handler):
    """The library's log records (e.g. the kernels' one-time build) as one ``rnnlab:`` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"rnnlab: {record.getMessage()}", file=sys.stderr, flush=True)


def _show_library_notes() -> None:
    lib = logging.getLogger("rnnlab")
    if not any(isinstance(h, _LibraryNotes) for h in lib.handlers):
        lib.addHandler(_LibraryNotes(logging.INFO))
        lib.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    _show_library_notes()
    import warnings

    show = warnings.showwarning
    warnings.showwarning = _one_line_warning  # a user sees one line, not our source file and line
    try:
        bad_seed = seed_problems("seed", getattr(ns, "seed", None))  # every --seed, also of commands with no config
        if bad_seed:
            raise ConfigError(bad_seed)
        for name in ("plot", "json_out"):  # an output that cannot be written is refused before the work
            if getattr(ns, name, None):
                from rnnlab.plots import check_writable

                check_writable(getattr(ns, name))
        return ns.func(ns)
    except RnnlabError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except (MemoryError, RuntimeError) as e:  # a size asked for that this machine cannot hold: one line, no traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if not (isinstance(e, MemoryError) or "can't allocate memory" in first or "out of memory" in first.lower()):
            raise
        print(f"rnnlab: error: not enough memory for the sizes asked for ({first[:200]})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnlab sample ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        warnings.showwarning = show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["build_parser", "main", "run_config_from_args"]
