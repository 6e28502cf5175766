"""The lab's statistical language models: a text's unigrams, bigrams, pairs, n-gram table and n-gram samples.

Every number comes from :mod:`rnnlab.ngram`, the functions ``rnnlab ngram stats`` and ``rnnlab ngram
sample`` call, on the text as the command line reads it: its training split (the first 90%, as
:func:`rnnlab.data.corpus.split_text` cuts it) and the vocabulary :func:`rnnlab.data.corpus.build_vocab`
makes of it. To keep a first answer under a second or two, only the first :data:`COUNT_CHARS`
characters of the training split are counted (every answer says how many of how many); on a shorter
text the page's numbers are the command line's.

=======  ================================  ==========================================================
POST     ``/api/lab/ngrams/stats``          the unigram histogram, the bigram table, the pairs (the
                                            most frequent, the least symmetric, the most dependent)
                                            and the scatter points of P(a, b) against P(b, a) and
                                            against P(a) P(b)
POST     ``/api/lab/ngrams/table``          |V|^n against the n-grams seen, n = 1..max_order
POST     ``/api/lab/ngrams/sample``         a sample of the order-n model (:class:`~rnnlab.ngram.NGramLM`)
                                            with a seed
=======  ================================  ==========================================================

The counts of a text at a level are made once, on first use, and kept (:data:`KEEP_TEXTS` of them);
the fitted models too (:data:`KEEP_MODELS`), and the stats and tables answered (:data:`KEEP_ANSWERS`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rnnlab.data.corpus import Corpus, build_vocab, split_text
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import make_sampler, prime_end
from rnnlab.errors import DataError
from rnnlab.ngram import NGramLM, bigram_counts, ngram_table, pair_asymmetry, unigram_histogram
from rnnlab.serve import _json, _Request

if TYPE_CHECKING:
    from rnnlab.lab import Lab

COUNT_CHARS = 300_000  # characters of the training split counted: a first render within ~1 s on one core
VAL_FRACTION = 0.1  # the command line's default split (DataConfig.val_fraction)
MAX_ORDER = 8  # the table's and the slider's largest n
KEEP_TEXTS = 4  # counted (text, level) pairs kept
KEEP_MODELS = 16  # fitted (text, level, order, smoothing) models kept
KEEP_ANSWERS = 16  # stats and table answers kept (a counted text's identity is in the key: recounted, recomputed)
MAX_SAMPLE = {"char": 1_000, "word": 200}  # tokens one sample may hold
MAX_SEED = 2**53 - 1  # what the page's JavaScript numbers hold exactly

Level = Literal["char", "word"]
_TEXT = Field("builtin", min_length=1, max_length=200, description="a text's name, as /api/lab/texts lists it")
_LEVEL = Field("char", description="count characters or words")


class StatsRequest(_Request):
    text: str = _TEXT
    level: Level = _LEVEL
    top: int = Field(30, ge=1, le=200, description="bars of the unigram histogram (the rest summed in one more)")
    bigram_top: int = Field(20, ge=2, le=60, description="the bigram table's rows and columns: the most frequent symbols")
    pairs_top: int = Field(10, ge=1, le=50, description="rows of each list of pairs")
    points: int = Field(1500, ge=0, le=5000, description="points of each scatter plot: the most frequent pairs")


class TableRequest(_Request):
    text: str = _TEXT
    level: Level = _LEVEL
    max_order: int = Field(MAX_ORDER, ge=1, le=MAX_ORDER, description="the largest n")


class SampleRequest(_Request):
    text: str = _TEXT
    level: Level = _LEVEL
    order: int = Field(3, ge=1, le=MAX_ORDER, description="n: the model reads the n - 1 tokens before")
    smoothing: Literal["mle", "add-k", "witten-bell", "kneser-ney"] = Field(
        "kneser-ney", description="how the model gives unseen n-grams a probability (mle: it does not)")
    length: int = Field(200, ge=1, le=max(MAX_SAMPLE.values()),
                        description=f"tokens to write (at most {MAX_SAMPLE['word']} words)")
    temperature: float = Field(1.0, ge=0.05, le=10.0, allow_inf_nan=False, description="divide the logits by this")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the same seed gives the same text")


@dataclass(frozen=True)
class Counted:
    """A text read for counting: its vocabulary and the ids of the counted part of its training split."""

    name: str
    level: str
    vocab: Vocab
    ids: np.ndarray  # (N,) int64: the first COUNT_CHARS characters of the training split, as ids
    counted_chars: int  # characters counted
    train_chars: int  # characters in the training split

    def describe(self) -> dict[str, Any]:
        return {"text": self.name, "level": self.level, "tokens": len(self.ids), "vocab_size": len(self.vocab),
                "counted_chars": self.counted_chars, "train_chars": self.train_chars,
                "prefix": self.counted_chars < self.train_chars}


def count_text(name: str, text: str, level: str, max_chars: int | None = None) -> Counted:
    """The text as ``rnnlab ngram stats --data TEXT --level LEVEL`` reads it: its training split (cut as the
    command line cuts it) and its vocabulary, then the first ``max_chars`` (default :data:`COUNT_CHARS`)
    characters of that split as ids.

    Where the split is cut short the vocabulary is that of what is counted (for characters, with the
    validation split's, as :func:`~rnnlab.data.corpus.build_vocab` does), so every id counted is a symbol
    of it. Raises :class:`~rnnlab.errors.DataError` for a text too short to split."""
    train, val = split_text(text, VAL_FRACTION, f"text {name!r}")
    counted = train[:COUNT_CHARS if max_chars is None else max_chars]
    vocab = build_vocab(Corpus(counted, val), level)
    ids = vocab.encode(counted)
    if len(ids) < 2:
        raise DataError(f"text {name!r} holds {len(ids)} {level}(s) to count; at least 2 are needed")
    return Counted(name, level, vocab, ids, len(counted), len(train))


V = TypeVar("V")


class _Kept:
    """A small least-recently-used store whose values are made once each, one maker at a time per key."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._making: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._making.setdefault(key, threading.Lock())
        with lock:  # a second request for the same key waits for the first's answer
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = make()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._making.pop(key, None)
            return value


def _symbols(vocab: Vocab, ids: np.ndarray) -> list[str]:
    return [vocab.symbols[int(i)] for i in ids]


def stats(c: Counted, top: int, bigram_top: int, pairs_top: int, points: int) -> dict[str, Any]:
    """The histogram, the bigram table and the pairs of a counted text (JSON-ready)."""
    h = unigram_histogram(c.ids, len(c.vocab), top)
    sym, table = bigram_counts(c.ids, len(c.vocab), bigram_top)
    pairs = pair_asymmetry(c.ids, c.vocab, pairs_top, points=points)
    return {**c.describe(),
            "unigrams": {"symbols": _symbols(c.vocab, h["ids"]), "counts": h["counts"].tolist(), "rest": h["rest"],
                         "rest_symbols": h["rest_symbols"], "total": h["total"]},
            "bigrams": {"symbols": _symbols(c.vocab, sym), "counts": table.tolist(), "pairs": len(c.ids) - 1},
            "pairs": pairs}


def table(c: Counted, max_order: int) -> dict[str, Any]:
    """:func:`rnnlab.ngram.ngram_table` of a counted text; ``possible`` as a decimal string too (V^8 is past
    what a JavaScript number holds exactly) and its log10."""
    rows = ngram_table(c.ids, len(c.vocab), max_order)
    return {**c.describe(), "rows": [{**r, "possible": str(r["possible"]),
                                      "log10_possible": r["n"] * math.log10(len(c.vocab))} for r in rows]}


def sample(c: Counted, model: NGramLM, length: int, temperature: float, seed: int) -> dict[str, Any]:
    """What ``rnnlab ngram sample MODEL --length L --temperature T --seed S`` prints for a model fitted on the
    counted text: one sample, no prime."""
    prime = np.zeros(0, dtype=np.int64)
    row = model.generate(prime, length, make_sampler("sample", temperature, 0, 1.0), np.random.default_rng(seed))[0]
    return {**c.describe(), "order": model.order, "smoothing": model.smoothing, "seed": seed,
            "temperature": temperature, "length": length,
            "sample": c.vocab.decode(row, after=prime_end(c.vocab, "", prime))}


def router(lab: Lab) -> APIRouter:
    """The section's endpoints, on ``lab``'s texts."""
    r = APIRouter(prefix="/api/lab/ngrams", tags=["lab: statistical language models"])
    texts = _Kept(KEEP_TEXTS)
    models = _Kept(KEEP_MODELS)
    answers = _Kept(KEEP_ANSWERS)  # the stats and tables answered, by request: each costs a second of counting

    def counted(name: str, level: str) -> Counted:
        text = lab.text(name)  # a 404 for a name that is not one of lab.texts()
        return texts.get((name, level), lambda: count_text(name, text, level))

    def fitted(c: Counted, order: int, smoothing: str) -> NGramLM:
        return models.get((c.name, c.level, order, smoothing),
                          lambda: NGramLM(order, smoothing).fit(c.ids, len(c.vocab)))

    def stats_of(req: StatsRequest) -> dict[str, Any]:
        c = counted(req.text, req.level)
        return answers.get(("stats", c.name, c.level, id(c), req.top, req.bigram_top, req.pairs_top, req.points),
                           lambda: stats(c, req.top, req.bigram_top, req.pairs_top, req.points))

    def table_of(req: TableRequest) -> dict[str, Any]:
        c = counted(req.text, req.level)
        return answers.get(("table", c.name, c.level, id(c), req.max_order), lambda: table(c, req.max_order))

    def warm() -> None:  # what the page asks first: the built-in corpus's characters, their stats, table and sample
        c = counted("builtin", "char")
        stats_of(StatsRequest())
        table_of(TableRequest())
        fitted(c, SampleRequest().order, SampleRequest().smoothing)

    lab.add_warm_up("ngrams: count the built-in corpus", warm)

    # plain functions: FastAPI runs them in its thread pool, so counting never blocks the event loop
    @r.post("/stats", summary="A text's unigram histogram, bigram table and pairs (order and dependence)")
    def post_stats(req: StatsRequest) -> Response:
        return _json(stats_of(req))

    @r.post("/table", summary="|V|^n possible n-grams against those seen, n = 1..max_order")
    def post_table(req: TableRequest) -> Response:
        return _json(table_of(req))

    @r.post("/sample", summary="A sample of the order-n n-gram model of a text, with a seed")
    def post_sample(req: SampleRequest) -> Response:
        if req.length > MAX_SAMPLE[req.level]:
            from rnnlab.lab import LabError

            raise LabError(422, f"length: at most {MAX_SAMPLE[req.level]} {req.level}s, got {req.length}")
        c = counted(req.text, req.level)
        return _json(sample(c, fitted(c, req.order, req.smoothing), req.length, req.temperature, req.seed))

    return r
