import numpy as np
import pytest

from rnnlab.config import DataConfig
from rnnlab.data import BUILTIN, EvalStreams, StreamBatcher, Vocab, load_corpus, read_text, tokenize_words
from rnnlab.data.corpus import read_folder, stdlib_corpus
from rnnlab.errors import DataError, VocabError


# vocabulary -------------------------------------------------------------------------------

def test_char_vocab_round_trips_and_is_sorted():
    text = "héllo wörld\n☃"
    v = Vocab.from_text(text)
    assert v.symbols == sorted(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int64 and v.decode(ids) == text
    assert [v.index[c] for c in text] == ids.tolist()


def test_unknown_characters_are_named():
    v = Vocab.from_text("abc")
    with pytest.raises(VocabError) as e:
        v.encode("abxyz")
    assert "'x'" in str(e.value) and "'z'" in str(e.value) and "3 character(s)" in str(e.value)


def test_word_vocab_min_count_and_unk():
    toks = tokenize_words("a b a c\na b")
    assert toks == ["a", "b", "a", "c", "\n", "a", "b"]
    v = Vocab.from_words(toks, min_count=2)
    assert v.symbols[0] == "<unk>" and set(v.symbols) == {"<unk>", "a", "b"}
    assert v.decode(v.encode("a c zz b")) == "a <unk> <unk> b"


def test_vocab_json_round_trip_and_malformed():
    v = Vocab.from_words(["x", "y", "x"])
    assert Vocab.from_dict(v.to_dict()) == v
    from rnnlab.errors import CheckpointError
    with pytest.raises(CheckpointError):
        Vocab.from_dict({"level": "char", "symbols": ["ab"], "unk": None})
    with pytest.raises(CheckpointError):
        Vocab.from_dict({"symbols": 3})


# corpus reading ---------------------------------------------------------------------------

def test_read_text_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "bin").write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="binary"):
        read_text(tmp_path / "bin")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8.*0xe9 at offset 3"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(DataError, match="folder"):
        read_text(tmp_path)


def test_gzip_files_are_read_and_a_broken_one_is_refused(tmp_path):
    import gzip

    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"hello\n"))
    assert read_text(tmp_path / "t.txt.gz") == "hello\n"
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"hello world" * 100)[:30])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_text(tmp_path / "bad.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain text")
    with pytest.raises(DataError, match="cannot read"):
        read_text(tmp_path / "notgz.gz")


def test_bom_is_dropped(tmp_path):
    (tmp_path / "b.txt").write_bytes("\ufeffhi".encode("utf-8"))
    assert read_text(tmp_path / "b.txt") == "hi"


def test_single_file_is_split_90_10_by_characters(corpus_file):
    c = load_corpus(DataConfig(data=str(corpus_file)))
    text = corpus_file.read_text()
    cut = int(len(text) * 0.9)  # as nanoGPT: data[:int(n * 0.9)]
    assert c.train == text[:cut] and c.val == text[cut:]
    assert c.record["train_chars"] == cut and c.record["sha256"]


def test_folder_is_read_in_sorted_order_skipping_hidden(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / ".hidden").write_text("never\n")
    text, files = read_folder(tmp_path)
    assert text == "first\nsecond\n" and files == ["a.txt", "b.txt"]


def test_ptb_char_format(tmp_path):
    from rnnlab.data.corpus import ptb_char

    assert ptb_char(" a _ c a t \n\n t h e _ e n d\n") == "a_cat\nthe_end\n"
    for n, t in (("tr", "a _ b\n" * 30), ("va", "b _ a\n" * 5)):
        (tmp_path / n).write_text(t)
    c = load_corpus(DataConfig(train=str(tmp_path / "tr"), val=str(tmp_path / "va"), format="ptb-char"))
    assert c.train == "a_b\n" * 30 and c.val == "b_a\n" * 5 and c.record["format"] == "ptb-char"


def test_val_and_test_files_need_train():
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="go with --train"):
        from rnnlab.config import RunConfig, TrainConfig

        RunConfig(data=DataConfig(data="x", test="y"), train=TrainConfig(max_steps=1)).validate()


def test_explicit_files(tmp_path):
    for n in ("tr", "va", "te"):
        (tmp_path / n).write_text(n * 5)
    c = load_corpus(DataConfig(train=str(tmp_path / "tr"), val=str(tmp_path / "va"), test=str(tmp_path / "te")))
    assert (c.train, c.val, c.test) == ("tr" * 5, "va" * 5, "te" * 5)


def test_builtin_corpus_is_deterministic_python_source():
    a, rec = stdlib_corpus(max_chars=50_000)
    b, _ = stdlib_corpus(max_chars=50_000)
    assert a == b and len(a) == 50_000 and "def " in a and rec["files"]
    c = load_corpus(DataConfig(data=BUILTIN))
    assert c.record["kind"] == "builtin" and len(c.train) > 9 * len(c.val) - 10


# batches ------------------------------------------------------------------------------------

def test_streams_are_contiguous_across_batches():
    tokens = np.arange(1000)
    b = StreamBatcher(tokens, batch_size=4, seq_len=7)
    n = (1000 - 1) // 4
    xs = np.concatenate([b.batch(i)[0] for i in range(b.batches_per_epoch)], axis=1)  # (B, steps*T)
    ys = np.concatenate([b.batch(i)[1] for i in range(b.batches_per_epoch)], axis=1)
    for s in range(4):
        # each stream is one unbroken run of the text, and its targets are the next tokens
        assert (xs[s] == np.arange(s * n, s * n + xs.shape[1])).all()
        assert (ys[s] == xs[s] + 1).all()
    # batch i + 1 starts exactly where batch i ended, in every stream
    x0, _ = b.batch(0)
    x1, _ = b.batch(1)
    assert (x1[:, 0] == x0[:, -1] + 1).all()


def test_batcher_rejects_a_corpus_shorter_than_one_batch():
    with pytest.raises(DataError, match="one batch needs"):
        StreamBatcher(np.arange(50), batch_size=8, seq_len=10)


@pytest.mark.parametrize("n,b", [(2, 4), (101, 4), (100, 7), (1000, 32)])
def test_eval_streams_count_every_target_exactly_once(n, b):
    tokens = np.arange(n) * 3
    s = EvalStreams.from_tokens(tokens, b)
    assert s.count == n - 1 and s.mask.sum() == n - 1
    pairs = sorted(zip(s.x[s.mask].tolist(), s.y[s.mask].tolist()))
    assert pairs == sorted(zip(tokens[:-1].tolist(), tokens[1:].tolist()))


@pytest.mark.parametrize("mmap", ["no", "yes"])
def test_a_validation_fraction_too_small_for_the_text_names_the_option(tmp_path, capsys, mmap):
    from rnnlab.cli import main

    p = tmp_path / "c.txt"
    p.write_text("abcdefgh " * 100, encoding="utf-8")  # 900 characters: 0.0001 of them is none
    assert main(["train", "--data", str(p), "--val-fraction", "0.0001", "--mmap", mmap, "--max-steps", "1",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"rnnlab: error: {p} has 900 characters: --val-fraction 0.0001 leaves 899 to train and 1 to " \
                  f"validate, and each needs at least 2 (give a larger --val-fraction)"
