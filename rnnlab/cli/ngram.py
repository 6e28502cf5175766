"""``rnnlab ngram``: count-based n-gram language models beside the RNNs (fit, eval, sample, prob, stats)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rnnlab.cli.common import (
    add_command,
    add_group,
    fmt,
    json_option,
    option,
    print_json,
    sample_config,
    section,
)
from rnnlab.config import DataConfig, NGramConfig, SampleConfig, from_dict
from rnnlab.errors import CheckpointError, ConfigError

NGRAM_EXAMPLES = """examples:
  rnnlab ngram fit --data input.txt --order 7 --out shakespeare7.npz     # Kneser-Ney, 90/10 split
  rnnlab ngram eval shakespeare7.npz                  # bits per character on its validation split
  rnnlab ngram eval shakespeare7.npz --data other.txt
  rnnlab ngram sample shakespeare7.npz --prime "ROMEO:" --length 300 --temperature 0.8 --seed 1
  rnnlab ngram prob shakespeare7.npz "the cat in the hat"
  rnnlab ngram stats --data input.txt --max-order 8 --plot unigrams.png
"""


def _model_option() -> Any:
    return option(help="", positional=True)


@dataclass(kw_only=True)
class NGramFitOptions:
    """``rnnlab ngram fit``: the corpus, the model, the file written."""

    data: DataConfig = section(DataConfig, "data options")
    model: NGramConfig = section(NGramConfig, "model options")
    out: str = option(help="the model file to write (.npz, no pickle)", required=True, default_shown=None)
    json: bool = json_option()


@dataclass(kw_only=True)
class NGramEvalOptions:
    """``rnnlab ngram eval``: a model scored on its own split or a file."""

    model: str = _model_option()
    data: str | None = option(None, "a text file to score (default: the model's own split)", default_shown=None)
    split: Literal["train", "val", "test"] | None = option(None, "default: val", default_shown=None)
    json: bool = json_option()


@dataclass(kw_only=True)
class NGramSampleOptions:
    """``rnnlab ngram sample``: text drawn with the RNN's samplers."""

    model: str = _model_option()
    sampling: SampleConfig = section(SampleConfig, "sampling options", build=sample_config)


@dataclass(kw_only=True)
class NGramProbOptions:
    """``rnnlab ngram prob``: the probability of one text."""

    model: str = _model_option()
    text: str = option(help="", positional=True)
    json: bool = json_option()


@dataclass(kw_only=True)
class NGramStatsOptions:
    """``rnnlab ngram stats``: a corpus's histograms, pairs and n-gram counts."""

    data: DataConfig = section(DataConfig, "data options")
    max_order: int = option(6, "the n-gram table's largest n")
    top: int = option(10, "rows per list")
    plot: str | None = option(None, "write the unigram histogram to this PNG", default_shown=None)
    json: bool = json_option()


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


def _print_summary(summary: dict[str, Any], as_json: bool) -> int:
    print("\n".join(f"{k}: {fmt(v)}" for k, v in summary.items()))
    if as_json:
        print_json(summary)
    return 0


def cmd_fit(o: NGramFitOptions) -> int:
    from rnnlab.data.corpus import build_vocab, load_corpus
    from rnnlab.metrics import token_metrics, unit_for
    from rnnlab.ngram import NGramLM

    dc, nc = o.data, o.model
    problems = dc.problems()
    if problems:
        raise ConfigError(problems)
    _check_ngram_out(o.out)
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
    summary: dict[str, Any] = {"model": o.out, "order": nc.order, "smoothing": nc.smoothing,
                               "sentences": nc.sentences,
                               "train_tokens": model.n_tokens_, "vocab_size": len(vocab),
                               "fit_s": round(fit_s, 3), "memory_mb": round(model.nbytes_ / 2**20, 2)}
    for split, text in (("val", corpus.val), ("test", corpus.test)):
        if text is not None:
            summary[f"{split}_{unit}"] = token_metrics(model.score(vocab.encode(text))["loss"], dc.level)[unit]
    model.save(o.out, vocab, extra={"data": dataclasses.asdict(dc), "ngram": dataclasses.asdict(nc)})
    return _print_summary(summary, o.json)


def _load(path: str) -> tuple[Any, Any, DataConfig]:
    """A fitted model, its vocabulary and the corpus it records."""
    from rnnlab.ngram import load_ngram

    model, vocab = load_ngram(path)
    if vocab is None:
        raise ConfigError(f"{path} holds no vocabulary; fit it with rnnlab ngram fit")
    dc = from_dict(DataConfig, (getattr(model, "extra_", None) or {}).get("data") or DataConfig().__dict__)
    return model, vocab, dc


def cmd_eval(o: NGramEvalOptions) -> int:
    from rnnlab.data.corpus import load_corpus, read_corpus_file
    from rnnlab.metrics import token_metrics, unit_for

    model, vocab, dc = _load(o.model)
    unit = unit_for(vocab.level)
    if o.data and o.split:
        raise ConfigError("give --data FILE or --split NAME, not both")
    if o.data:
        text, source = read_corpus_file(o.data, dc.format), o.data
    else:
        split = o.split or "val"
        if dc.data is None and dc.train is None:
            raise ConfigError(f"{o.model} does not record its corpus; give --data FILE")
        text = getattr(load_corpus(dc), split)
        if text is None:
            raise ConfigError(f"the model's corpus has no {split} split; give --data FILE")
        source = f"{split} split"
    r = model.score(vocab.encode(text))
    m = token_metrics(r["loss"], vocab.level)
    return _print_summary({"model": o.model, "data": source, "tokens": r["tokens"], "loss": m["loss"],
                           unit: m[unit], "ppl": m["ppl"]}, o.json)


def cmd_prob(o: NGramProbOptions) -> int:
    from rnnlab.metrics import LN2, unit_for

    model, vocab, _ = _load(o.model)
    ids = vocab.encode(o.text)
    lp = model.log_prob(ids, include_first=True)  # the first symbol from the unigram model
    total = float(lp.sum())
    return _print_summary({"text": o.text, "tokens": len(ids), "log_prob": total, "log2_prob": total / LN2,
                           "prob": float(np.exp(total)), unit_for(vocab.level): -total / LN2 / max(len(ids), 1)},
                          o.json)


def cmd_sample(o: NGramSampleOptions) -> int:
    from rnnlab.decoding import make_sampler, prime_end

    model, vocab, _ = _load(o.model)
    sc = o.sampling
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


def cmd_stats(o: NGramStatsOptions) -> int:
    from rnnlab.data.corpus import build_vocab, load_corpus
    from rnnlab.ngram import ngram_table, pair_asymmetry

    dc = o.data
    problems = dc.problems() + [f"{name} must be >= 1, got {getattr(o, name)}" for name in ("top", "max_order")
                                if getattr(o, name) < 1]  # before any output
    if problems:
        raise ConfigError(problems)
    corpus = load_corpus(dc)
    vocab = build_vocab(corpus, dc.level, dc.min_count)
    ids = vocab.encode(corpus.train)
    counts = np.bincount(ids, minlength=len(vocab))
    order = np.argsort(-counts, kind="stable")
    print(f"training split: {len(ids):,} tokens, {len(vocab)} symbols\n\nunigram histogram (top {o.top}):")
    for i in order[:o.top]:
        print(f"  {vocab.symbols[i]!r:>8}  {counts[i]:>10,d}  {counts[i] / len(ids):.4f}")
    pairs = pair_asymmetry(ids, vocab, o.top)
    titles = {"frequent": "most frequent pairs (a, b)",
              "asymmetric": "order matters: P(a, b) against P(b, a)",
              "dependent": "dependence: P(a, b) against P(a) P(b)"}
    for key, title in titles.items():
        print(f"\n{title}:")
        for r in pairs[key]:
            print(f"  {r['a'] + vocab.separator(r['a'], r['b']) + r['b']!r:>10}  P(a,b)={r['p_ab']:.5f}  P(b,a)={r['p_ba']:.5f}  "
                  f"P(a)P(b)={r['p_a_p_b']:.5f}  PMI={r['pmi']:+.2f} bits")
    table = ngram_table(ids, len(vocab), o.max_order)
    print("\nn-grams possible (|V|^n) against observed in training:")
    print(f"  {'n':>2}  {'possible':>22}  {'observed':>10}  {'fraction':>10}  {'seen once':>10}")
    for r in table:
        print(f"  {r['n']:>2}  {r['possible']:>22,d}  {r['observed']:>10,d}  {r['fraction']:>10.2e}  "
              f"{r['singletons']:>10,d}")
    if o.plot:
        from rnnlab.plots import plot_unigrams

        plot_unigrams([vocab.symbols[i] for i in order], counts[order], o.plot)
        print(f"\nunigram histogram written to {o.plot}")
    if o.json:
        print_json({"tokens": len(ids), "vocab_size": len(vocab), "pairs": pairs,
                    "table": [{**r, "possible": str(r["possible"])} for r in table]})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    gsub = add_group(sub, "ngram", help="count-based n-gram language models beside the RNNs",
                     description="Fit, score, sample and inspect n-gram models on the same splits and "
                                 "vocabulary as the RNNs.", epilog=NGRAM_EXAMPLES)
    add_command(gsub, "fit", NGramFitOptions, cmd_fit, help="count a corpus and save the model",
                epilog=NGRAM_EXAMPLES)
    add_command(gsub, "eval", NGramEvalOptions, cmd_eval, help="bits per character on the model's split or a file",
                epilog=NGRAM_EXAMPLES)
    add_command(gsub, "sample", NGramSampleOptions, cmd_sample, help="generate text with the RNN's samplers",
                epilog=NGRAM_EXAMPLES)
    add_command(gsub, "prob", NGramProbOptions, cmd_prob, help="the probability the model gives a text",
                epilog=NGRAM_EXAMPLES)
    add_command(gsub, "stats", NGramStatsOptions, cmd_stats, help="histograms, pairs and n-gram counts of a corpus",
                epilog=NGRAM_EXAMPLES)


__all__ = ["NGramEvalOptions", "NGramFitOptions", "NGramProbOptions", "NGramSampleOptions", "NGramStatsOptions",
           "register"]
