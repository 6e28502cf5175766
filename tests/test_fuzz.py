"""Fuzzing (hypothesis): whatever the input, a valid result or one of rnnlab's own errors.

Every property here has the same shape: feed a reader, a sampler or the checkpoint loader
arbitrary input, and accept either a result that passes an independent check (an oracle
where one exists) or an :class:`~rnnlab.errors.RnnlabError` whose message is one line.
Anything else escaping (KeyError, TypeError, IndexError, struct.error, a JSON or
safetensors error, ...) fails the property. ``tests/test_properties.py`` holds the first
few such tests; these go further.

The default run takes well under a minute on two cores. ``RNNLAB_FUZZ_EXAMPLES=N`` sets N
examples for every property (``benchmarks/bench_hostile.py`` uses 2000).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rnnlab import jsonio
from rnnlab.checkpoint import Checkpoint, checkpoint_kind, load_checkpoint, read_config, save_checkpoint
from rnnlab.config import ClassifyRunConfig, DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig, from_dict
from rnnlab.data.batches import EvalStreams, StreamBatcher
from rnnlab.data.corpus import decode_text, load_corpus, read_text
from rnnlab.data.sequences import read_labelled
from rnnlab.data.vocab import Vocab, tokenize_words
from rnnlab.decoding import Argmax, Sample, beam_search, distribution, log_softmax, make_sampler
from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError, VocabError
from rnnlab.nn import RNNLanguageModel
from rnnlab.sampling import generate, sample_steps

EXAMPLES = int(os.environ.get("RNNLAB_FUZZ_EXAMPLES", "0") or 0)
T = TypeVar("T")


def fuzz(n: int) -> settings:
    """``n`` examples a property by default, ``RNNLAB_FUZZ_EXAMPLES`` when set; no example database is
    written (tests never write into the working directory), no deadline (the machine is shared)."""
    return settings(max_examples=EXAMPLES or n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


def ours(fn: Callable[[], T], *allowed: type[RnnlabError]) -> T | RnnlabError:
    """``fn()``'s result, or the rnnlab error it raised (one of ``allowed``, one line); anything else propagates."""
    try:
        return fn()
    except RnnlabError as e:
        assert isinstance(e, allowed or (RnnlabError,)), f"{type(e).__name__}: {e}"
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return e


ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"]))  # surrogates too
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
# text that breaks naive JSON handling: nesting past the recursion limit, an integer past Python's 4,300 digits,
# an overflowing float, the non-standard constants, a lone surrogate escaped
NASTY_JSON = st.sampled_from(["[" * 50_000 + "]" * 50_000, '{"a": ' * 5_000 + "1" + "}" * 5_000, "1" * 5_000,
                              "1e999", "-1e999", "NaN", "-Infinity", '"\\ud800"', '["\\udfff"]', "", " ", "\x00"])
JSON = st.recursive(JSON_SCALAR,
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scratch files, rewritten by each example (hypothesis refuses function-scoped fixtures)."""
    return tmp_path_factory.mktemp("fuzz")


# the corpus reader ---------------------------------------------------------------------------------

BYTES = st.one_of(
    st.binary(max_size=300),
    st.text(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=100).map(str.encode),
    st.tuples(st.text(max_size=40), st.binary(max_size=20)).map(lambda t: t[0].encode() + t[1]),  # UTF-8, then junk
    st.text(max_size=40).map(lambda t: b"\xef\xbb\xbf" + t.encode()),  # a byte-order mark first
)


@fuzz(300)
@given(BYTES)
def test_decode_text_is_the_utf8_text_or_a_data_error(raw: bytes) -> None:
    r = ours(lambda: decode_text(raw, "input"), DataError)
    if isinstance(r, str):
        assert r == raw.decode("utf-8").removeprefix("\ufeff") and r and b"\x00" not in raw
    else:
        assert str(r).startswith("input ")
        valid = raw.decode("utf-8", "replace") == raw.decode("utf-8", "ignore")
        assert not raw or b"\x00" in raw or not valid or raw in (b"\xef\xbb\xbf",)


@fuzz(150)
@given(BYTES, st.sampled_from(["corpus.txt", "corpus", "corpus.csv"]), st.floats(0.01, 0.99))
def test_any_file_reads_and_splits_or_gives_a_data_error(folder: Path, raw: bytes, name: str, fraction: float) -> None:
    path = folder / name
    path.write_bytes(raw)
    text = ours(lambda: read_text(path), DataError)
    corpus = ours(lambda: load_corpus(DataConfig(data=str(path), val_fraction=fraction)), DataError)
    if isinstance(text, DataError):
        assert isinstance(corpus, DataError) and str(corpus) == str(text)
        return
    assert text == raw.decode("utf-8").removeprefix("\ufeff")
    if not isinstance(corpus, DataError):
        assert corpus.train + corpus.val == text and len(corpus.train) == int(len(text) * (1 - fraction))
        vocab = Vocab.from_text(corpus.train + corpus.val)
        assert vocab.decode(vocab.encode(text)) == text


GZIP = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.binary(min_size=1, max_size=200), st.integers(0, 400)).map(lambda t: gzip.compress(t[0])[: t[1]]),
    st.tuples(st.text(min_size=1, max_size=100), st.integers(0, 60), st.binary(min_size=1, max_size=4)).map(
        lambda t: (lambda z, i, b: z[:i] + b + z[i + len(b):])(gzip.compress(t[0].encode()), t[1], t[2])),
)


@fuzz(150)
@given(GZIP)
@example((lambda z: z[:10] + b"\xff" * 8 + z[18:])(gzip.compress(b"the cat sat on the mat.\n" * 20)))
def test_a_gzip_corpus_reads_or_gives_a_data_error(folder: Path, raw: bytes) -> None:
    path = folder / "corpus.txt.gz"
    path.write_bytes(raw)
    text = ours(lambda: read_text(path), DataError)
    if isinstance(text, str):
        assert text == gzip.decompress(raw).decode("utf-8").removeprefix("\ufeff")


@fuzz(150)
@given(st.one_of(BYTES, st.lists(JSON, max_size=5).map(lambda xs: "\n".join(map(json.dumps, xs)).encode()),
                 st.lists(st.one_of(NASTY_JSON, st.sampled_from(['{"text": "ab", "label": "x"}',
                                                                '{"text": [[1, 2]], "label": 3}'])),
                          max_size=4).map(lambda xs: "\n".join(xs).encode()),
                 st.lists(st.fixed_dictionaries({"text": JSON, "label": JSON}), max_size=5).map(
                     lambda xs: "\n".join(map(json.dumps, xs)).encode())),
       st.sampled_from(["data.csv", "data.tsv", "data.jsonl"]))
def test_labelled_sequences_read_or_give_a_data_error(folder: Path, raw: bytes, name: str) -> None:
    path = folder / name
    path.write_bytes(raw)
    data = ours(lambda: read_labelled(str(path)), DataError)
    if not isinstance(data, DataError):
        assert len(data.inputs) == len(data.labels) >= 2 and len(set(data.labels)) >= 2
        assert all(isinstance(y, str) and y.strip() and y.encode() for y in data.labels)


# the vocabulary -------------------------------------------------------------------------------------

VOCAB_DICT = st.one_of(
    JSON,
    st.fixed_dictionaries({"level": st.one_of(st.sampled_from(["char", "word"]), JSON),
                           "unk": st.one_of(st.none(), st.just("<unk>"), JSON),
                           "symbols": st.one_of(st.lists(st.text(ANY_CHAR, min_size=1, max_size=2), max_size=8),
                                                st.lists(st.sampled_from(["<unk>", "a", "b", "\n", " "]), max_size=6),
                                                JSON)}),
)


@fuzz(400)
@given(VOCAB_DICT)
def test_vocab_from_dict_takes_any_json_value(d: Any) -> None:
    v = ours(lambda: Vocab.from_dict(d), CheckpointError)
    if isinstance(v, CheckpointError):
        return
    assert len(v) >= 1 and Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    ids = np.arange(len(v))
    if v.level == "char":
        assert v.encode(v.decode(ids)).tolist() == ids.tolist()
    assert all(s.encode("utf-8") for s in v.symbols)  # every symbol can be printed


@fuzz(300)
@given(st.text(ANY_CHAR, max_size=40), st.text(ANY_CHAR, max_size=40), st.integers(1, 3))
def test_encode_any_text_or_name_what_is_unknown(seen: str, text: str, min_count: int) -> None:
    v = ours(lambda: Vocab.from_text(seen), VocabError)
    assert isinstance(v, VocabError) == any(0xD800 <= ord(c) <= 0xDFFF for c in seen)  # a lone surrogate is no text
    if isinstance(v, VocabError):
        return
    ids = ours(lambda: v.encode(text), VocabError)
    unseen = set(text) - set(seen)
    if isinstance(ids, VocabError):
        assert unseen and all(repr(c) in str(ids) for c in sorted(unseen)[:10])
    else:
        assert not unseen and v.decode(ids) == text
    words = ours(lambda: Vocab.from_words(tokenize_words(seen), min_count), VocabError)
    if not isinstance(words, VocabError):
        wids = words.encode(text)  # unknown words become <unk>: never an error
        assert len(wids) == len(tokenize_words(text)) and (wids < len(words)).all()


# the batcher ---------------------------------------------------------------------------------------

@fuzz(300)
@given(st.integers(0, 400), st.integers(1, 40), st.integers(1, 60))
def test_stream_batches_are_the_contiguous_streams(n: int, batch_size: int, seq_len: int) -> None:
    tokens = np.arange(n)
    b = ours(lambda: StreamBatcher(tokens, batch_size, seq_len), DataError)
    if isinstance(b, DataError):
        assert n < batch_size * seq_len + 1
        return
    per = (n - 1) // batch_size
    assert b.batches_per_epoch == per // seq_len >= 1
    for i in range(b.batches_per_epoch):
        x, y = b.batch(i)
        assert x.shape == y.shape == (batch_size, seq_len)
        start = np.arange(batch_size)[:, None] * per + i * seq_len + np.arange(seq_len)[None, :]
        assert (x == tokens[start]).all() and (y == tokens[start + 1]).all()


@fuzz(300)
@given(st.integers(0, 300), st.integers(1, 50))
def test_eval_streams_count_every_target_once(n: int, batch_size: int) -> None:
    tokens = np.arange(n) * 7 % 11
    s = ours(lambda: EvalStreams.from_tokens(tokens, batch_size), DataError)
    if isinstance(s, DataError):
        assert n < 2
        return
    assert s.count == n - 1 == s.mask.sum() and s.x.shape == s.y.shape == s.mask.shape
    assert s.x.shape[0] <= batch_size
    assert (s.x[s.mask] == tokens[:-1]).all() and (s.y[s.mask] == tokens[1:]).all()


SILENT = pytest.fail.Exception  # no error at all: pytest.raises fails


@pytest.mark.parametrize("make,raises", [
    (lambda t: StreamBatcher(t, 0, 5), ZeroDivisionError),
    (lambda t: StreamBatcher(t, 4, 0), ZeroDivisionError),
    (lambda t: StreamBatcher(t, 4, -3), SILENT),  # batches_per_epoch -8
    (lambda t: StreamBatcher(t, -4, 3), DataError),  # "one batch needs ... = -11" tokens
    (lambda t: EvalStreams.from_tokens(t, 0), ZeroDivisionError),
    (lambda t: EvalStreams.from_tokens(t, -2), SILENT),  # a (0, 0) layout that claims 99 targets
], ids=["batch_size 0", "seq_len 0", "seq_len -3", "batch_size -4", "eval batch_size 0", "eval batch_size -2"])
def test_non_positive_batch_sizes_are_a_config_error(make: Callable[[np.ndarray], Any], raises: type,
                                                     request: pytest.FixtureRequest) -> None:
    with pytest.raises(ConfigError, match="must be >= 1"):
        make(np.arange(100))


# decoding and sampling ---------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)


@fuzz(400)
@given(st.integers(1, 4).flatmap(lambda b: st.lists(st.lists(FINITE, min_size=1, max_size=12).filter(bool),
                                                    min_size=b, max_size=b)),
       st.floats(min_value=0, exclude_min=True, allow_infinity=False), st.integers(0, 20),
       st.floats(0, 1, exclude_min=True))
def test_distribution_of_any_finite_logits_is_a_distribution(rows: list[list[float]], temperature: float,
                                                            top_k: int, top_p: float) -> None:
    v = min(map(len, rows))
    z = np.array([r[:v] for r in rows])  # (B, V)
    p = distribution(z, temperature, top_k, top_p)
    assert p.shape == z.shape and np.isfinite(p).all() and (p >= 0).all()
    assert np.allclose(p.sum(axis=-1), 1.0)
    assert (p[np.arange(len(z)), z.argmax(axis=-1)] > 0).all()  # the most probable token is always kept
    if 0 < top_k < v:
        assert ((p > 0).sum(axis=-1) <= top_k).all()
    rng = np.random.default_rng(0)
    ids = Sample(temperature, top_k, top_p).choose(z, rng)
    assert ids.shape == (len(z),) and (p[np.arange(len(z)), ids] > 0).all()
    assert (Argmax().choose(z, rng) == z.argmax(axis=-1)).all()


@fuzz(300)
@given(st.one_of(st.sampled_from(["sample", "argmax", "beam"]), st.text(max_size=8)),
       st.floats(), st.integers(-5, 10**6), st.floats(), st.integers(-3, 10), st.integers(-3, 5), st.integers(-3, 5))
def test_any_sampler_settings_are_valid_or_a_config_error(strategy: str, temperature: float, top_k: int,
                                                          top_p: float, length: int, beam_width: int,
                                                          num_samples: int) -> None:
    ok = temperature > 0 and math.isfinite(temperature) and top_k >= 0 and 0 < top_p <= 1
    sampler = ours(lambda: make_sampler(strategy, temperature, top_k, top_p), ConfigError)
    refused = strategy not in ("sample", "argmax") or (strategy == "sample" and not ok)
    assert isinstance(sampler, ConfigError) == refused
    fields = {"strategy": strategy, "temperature": temperature, "top_k": top_k, "top_p": top_p, "length": length,
              "beam_width": beam_width, "num_samples": num_samples}
    cfg = ours(lambda: from_dict(SampleConfig, fields).validate(), ConfigError)
    valid = ok and strategy in ("sample", "argmax", "beam") and length >= 0 and beam_width >= 1 and num_samples >= 1
    assert isinstance(cfg, ConfigError) != valid


@fuzz(300)
@given(st.integers(1, 4), st.integers(0, 4), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_beam_search_finds_the_best_sequence_when_wide_enough(v: int, length: int, width: int, seed: int) -> None:
    """Against brute force on a bigram model: the returned score is its sequence's, never above the best,
    and equal to the best once the beam holds every prefix (width >= V ** (length - 1))."""
    rng = np.random.default_rng(seed)
    table = log_softmax(rng.normal(size=(v, v)) * 3)  # log p(next | previous), (V, V)
    first = log_softmax(rng.normal(size=v) * 3)  # (V,)

    def score(seq: tuple[int, ...]) -> float:
        return float(first[seq[0]] + sum(table[a, b] for a, b in itertools.pairwise(seq)))

    seq, total = beam_search(lambda ids, st_: (table[ids], st_), lambda st_, idx: st_, None, first, width, length)
    assert len(seq) == length and all(0 <= t < v for t in seq)
    if length == 0:
        assert total == 0.0
        return
    best = max(score(s) for s in itertools.product(range(v), repeat=length))
    assert math.isclose(total, score(tuple(seq)), abs_tol=1e-9) and total <= best + 1e-9
    if width >= v ** (length - 1):
        assert math.isclose(total, best, abs_tol=1e-9)


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[RNNLanguageModel, Vocab]]:
    """Untrained tiny language models (sampling does not care how good they are): characters and words."""
    torch.manual_seed(0)
    out = {}
    for level, vocab in (("char", Vocab.from_text("ab c\n")), ("word", Vocab.from_words(["the", "cat", "\n"]))):
        cfg = ModelConfig(cell="gru" if level == "char" else "lstm", hidden_size=8, num_layers=1, embedding_size=4,
                          dropout=0.0)
        out[level] = (RNNLanguageModel(cfg, len(vocab)).eval(), vocab)
    return out


@fuzz(200)
@given(st.sampled_from(["char", "word"]), st.sampled_from(["sample", "argmax", "beam"]),
       st.lists(st.one_of(st.sampled_from(list("ab c\n") + ["the ", "cat "]), ANY_CHAR), max_size=6).map("".join),
       st.integers(-1, 12), st.floats(-1, 5), st.integers(-1, 8), st.floats(-0.5, 1.5), st.integers(0, 4),
       st.integers(0, 3), st.integers(0, 2**31))
def test_generate_any_prime_and_settings(models: dict[str, tuple[RNNLanguageModel, Vocab]], level: str,
                                         strategy: str, prime: str, length: int, temperature: float, top_k: int,
                                         top_p: float, beam_width: int, num_samples: int, seed: int) -> None:
    model, vocab = models[level]
    cfg = SampleConfig(strategy=strategy, length=length, prime=prime, temperature=temperature, top_k=top_k,
                       top_p=top_p, beam_width=beam_width, num_samples=num_samples, seed=seed)
    texts = ours(lambda: generate(model, vocab, cfg), ConfigError, VocabError)
    if isinstance(texts, RnnlabError):
        if isinstance(texts, VocabError):
            assert vocab.unknown(prime) and level == "char"
        return
    assert len(texts) == num_samples and all(t.startswith(prime) for t in texts)
    for t in texts:
        rest = t[len(prime):]
        if level == "char":
            assert len(rest) == length and set(rest) <= set(vocab.symbols)
        else:
            assert len(tokenize_words(rest)) == length and set(tokenize_words(rest)) <= set(vocab.symbols)
    if strategy != "beam":  # the step-by-step loop the server streams gives the same tokens
        steps = list(sample_steps(model, vocab, cfg))
        assert len(steps) == length and all(ids.shape == (num_samples,) for ids, _ in steps)


# the checkpoint loader ------------------------------------------------------------------------------

def load_everything(path: Path) -> Checkpoint | CheckpointError:
    """Everything a command reads from a checkpoint, each part a result or a one-line CheckpointError."""
    ours(lambda: read_config(path), CheckpointError)
    ours(lambda: checkpoint_kind(path), CheckpointError)
    ckpt = ours(lambda: load_checkpoint(path), CheckpointError)
    if isinstance(ckpt, CheckpointError):
        return ckpt
    assert isinstance(ckpt.config, (RunConfig, ClassifyRunConfig)) and isinstance(ckpt.train_state, dict)
    assert ckpt.vocab is None or len(ckpt.vocab) >= 1
    assert isinstance(ckpt.labels, list)
    for part in (ckpt.carry, ckpt.rng, ckpt.optimizer_state, ckpt.feeding_state):
        ours(part, CheckpointError)
    model = ours(ckpt.build_model, CheckpointError)
    if isinstance(model, torch.nn.Module) and isinstance(model, RNNLanguageModel):
        with torch.no_grad():
            logits, _ = model(torch.zeros(1, 2, dtype=torch.int64))
        assert logits.shape == (1, 2, len(ckpt.vocab))
    return ckpt


@pytest.fixture(scope="module")
def good(folder: Path) -> Path:
    """A valid checkpoint with everything a resume reads: a 2-layer LSTM, Adam's state, carried state, RNG."""
    cfg = RunConfig(data=DataConfig(data="corpus.txt"), model=ModelConfig(cell="lstm", hidden_size=4, num_layers=2,
                                                                           embedding_size=3),
                    train=TrainConfig(max_steps=1, batch_size=2))
    vocab = Vocab.from_text("abc \n")
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg.model, len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    logits, state = model(torch.randint(0, len(vocab), (2, 5)))
    logits.sum().backward()
    opt.step()
    path = folder / "good.safetensors"
    save_checkpoint(path, model, cfg, vocab, train_state={"step": 1, "epoch": 0, "batch": 1}, optimizer=opt,
                    carry=state, rng={"torch": torch.get_rng_state()})
    assert isinstance(load_everything(path), Checkpoint)
    return path


@fuzz(300)
@given(st.one_of(st.binary(max_size=200),
                 st.tuples(st.integers(0, 300), st.binary(max_size=200)).map(
                     lambda t: struct.pack("<Q", t[0]) + b"{" + t[1]),  # past the sniffing, into the parser
                 st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=40)).map(
                     lambda t: struct.pack("<Q", t[0]) + t[1])))
def test_any_bytes_are_a_checkpoint_or_a_checkpoint_error(folder: Path, raw: bytes) -> None:
    path = folder / "any.safetensors"
    path.write_bytes(raw)
    load_everything(path)


@fuzz(300)
@given(st.data())
def test_a_damaged_checkpoint_loads_or_is_refused(good: Path, folder: Path, data: st.DataObject) -> None:
    raw = bytearray(good.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    at = st.one_of(st.integers(0, header - 1), st.integers(0, len(raw) - 1))  # the header half of the time
    for i, b in data.draw(st.lists(st.tuples(at, st.integers(0, 255)), max_size=4), label="flips"):
        raw[i] = b
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))), label="cut")
    path = folder / "damaged.safetensors"
    path.write_bytes(bytes(raw[:cut]))
    load_everything(path)


def _with(d: dict[str, Any], section: str, key: str, value: Any, delete: bool) -> dict[str, Any]:
    """``d`` with ``d[section][key]`` set to ``value`` (or deleted), copied."""
    d = json.loads(json.dumps(d))
    target = d.get(section) if isinstance(d.get(section), dict) else d
    if delete:
        target.pop(key, None)
    else:
        target[key] = value
    return d


META_KEYS = ["format", "version", "kind", "config", "vocab", "train_state", "extra", "optimizer", "feeding"]


@pytest.fixture(scope="module")
def parts(good: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The good checkpoint's metadata and tensors, read once."""
    with safe_open(str(good), framework="pt") as f:
        return dict(f.metadata()), load_file(good)


@fuzz(250)
@given(st.data())
def test_any_metadata_is_a_checkpoint_or_a_checkpoint_error(parts: tuple[dict[str, str], dict[str, torch.Tensor]],
                                                            folder: Path, data: st.DataObject) -> None:
    meta, tensors = dict(parts[0]), parts[1]
    config, vocab = json.loads(meta["config"]), json.loads(meta["vocab"])
    for key in data.draw(st.lists(st.sampled_from([*META_KEYS, "other"]), min_size=1, max_size=3), label="keys"):
        how = data.draw(st.sampled_from(["delete", "text", "json", "field"]), label=f"how {key}")
        if how == "delete":
            meta.pop(key, None)
        elif how == "text":
            meta[key] = data.draw(st.one_of(st.text(max_size=30), NASTY_JSON), label=f"text {key}")
        elif how == "json":
            meta[key] = json.dumps(data.draw(JSON, label=f"json {key}"))
        else:  # one field of the config, vocabulary or training state changed
            value = data.draw(JSON, label=f"field {key}")
            delete = data.draw(st.booleans(), label="delete field")
            if key == "config":
                section = data.draw(st.sampled_from(list(config)), label="section")
                name = data.draw(st.sampled_from([*config[section], "unknown"]), label="name")
                meta[key] = json.dumps(_with(config, section, name, value, delete))
            elif key == "vocab":
                meta[key] = json.dumps(_with(vocab, "", data.draw(st.sampled_from(list(vocab))), value, delete))
            elif key in meta and key not in ("format", "version", "kind"):
                try:
                    base = json.loads(meta[key])
                except (ValueError, RecursionError):  # an earlier draw made it text (or nested JSON)
                    base = None
                if isinstance(base, dict) and base:
                    name = data.draw(st.sampled_from(list(base)), label="name")
                    meta[key] = json.dumps(_with(base, "", name, value, delete))
    path = folder / "meta.safetensors"
    save_file(tensors, path, metadata=meta)
    load_everything(path)


@fuzz(120)
@given(st.dictionaries(st.sampled_from(["model", "optim", "carry", "rng", "feeding", "x"]),
                       st.tuples(st.text("abc.0123", max_size=8), st.sampled_from([(0,), (3,), (2, 4), (1, 1, 1)]),
                                 st.sampled_from([torch.float32, torch.int64, torch.uint8, torch.float16])),
                       max_size=4))
def test_any_extra_tensors_are_a_checkpoint_or_a_checkpoint_error(parts: tuple[dict[str, str], dict[str, torch.Tensor]],
                                                                 folder: Path, extra: dict[str, Any]) -> None:
    meta, tensors = parts[0], dict(parts[1])
    for prefix, (name, shape, dtype) in extra.items():
        tensors[f"{prefix}.{name}" if prefix != "x" else name or "x"] = torch.zeros(shape, dtype=dtype)
    path = folder / "tensors.safetensors"
    save_file(tensors, path, metadata=meta)
    load_everything(path)


# strict JSON for people and programs ----------------------------------------------------------------

@fuzz(200)
@given(st.recursive(JSON_SCALAR | st.tuples(FINITE, FINITE),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                    max_leaves=12))
def test_jsonio_writes_strict_json_for_any_value(obj: Any) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in strict JSON")

    back = json.loads(jsonio.dumps(obj), parse_constant=refuse)
    assert back == json.loads(json.dumps(jsonio.finite(obj)))
