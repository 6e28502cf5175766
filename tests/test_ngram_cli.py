"""The n-gram command line: fit, eval, sample, prob, stats on the RNN's splits and vocabulary."""

import json
import math

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.config import DataConfig
from rnnlab.data import build_vocab, load_corpus
from rnnlab.ngram import NGramLM, load_ngram


@pytest.fixture
def model(corpus_file, tmp_path):
    out = tmp_path / "m.npz"
    assert main(["ngram", "fit", "--data", str(corpus_file), "--order", "4", "--out", str(out)]) == 0
    return out


def test_fit_uses_the_rnn_split_and_vocabulary_and_reports_bpc(corpus_file, tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["ngram", "fit", "--data", str(corpus_file), "--order", "3", "--smoothing", "witten-bell",
                 "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    corpus = load_corpus(DataConfig(data=str(corpus_file)))
    vocab = build_vocab(corpus)
    ref = NGramLM(3, "witten-bell").fit(vocab.encode(corpus.train), len(vocab))
    assert s["val_bpc"] == pytest.approx(ref.score(vocab.encode(corpus.val))["loss"] / math.log(2), rel=1e-12)
    m, v = load_ngram(out)
    assert v == vocab and m.order == 3


def test_sentences_cut_the_stream_at_line_ends(corpus_file, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["ngram", "fit", "--data", str(corpus_file), "--order", "5", "--sentences", "--out", str(out),
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m, v = load_ngram(out)
    assert s["sentences"] is True and m.boundary == int(v.encode("\n")[0])
    corpus = load_corpus(DataConfig(data=str(corpus_file)))
    ref = NGramLM(5, boundary=m.boundary).fit(v.encode(corpus.train), len(v))
    assert s["val_bpc"] == pytest.approx(ref.score(v.encode(corpus.val))["loss"] / math.log(2), rel=1e-12)
    assert main(["ngram", "eval", str(out), "--json"]) == 0  # the boundary is saved with the model
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bpc"] == pytest.approx(s["val_bpc"])
    one_line = tmp_path / "one.txt"
    one_line.write_text("no line ends here " * 50)
    assert main(["ngram", "fit", "--data", str(one_line), "--sentences", "--out", str(tmp_path / "x.npz")]) == 2
    assert "--sentences needs line ends" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_eval_on_the_split_and_a_file(model, corpus_file, tmp_path, capsys):
    assert main(["ngram", "eval", str(model), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["data"] == "val split" and 0 < s["bpc"] < 3
    (tmp_path / "t.txt").write_text("the cat sat on the log.\n")
    assert main(["ngram", "eval", str(model), "--data", str(tmp_path / "t.txt"), "--json"]) == 0
    s2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s2["tokens"] == 23 and s2["bpc"] < s["bpc"] + 2


def test_sample_is_seeded_and_argmax_equals_top_k_one(model, capsys):
    args = ["ngram", "sample", str(model), "--prime", "the ", "--length", "40", "--seed", "2"]
    assert main(args) == 0
    a = capsys.readouterr().out
    assert main(args) == 0
    b = capsys.readouterr().out
    assert a == b and a.startswith("the ") and len(a) == 44 + 1  # the text and a newline
    assert main(["ngram", "sample", str(model), "--strategy", "argmax", "--length", "20"]) == 0
    g = capsys.readouterr().out
    assert main(["ngram", "sample", str(model), "--top-k", "1", "--length", "20", "--seed", "5"]) == 0
    assert capsys.readouterr().out == g
    assert main(["ngram", "sample", str(model), "--strategy", "beam", "--length", "10"]) == 0


def test_prob_is_the_sum_of_conditional_log_probabilities(model, capsys):
    assert main(["ngram", "prob", str(model), "the cat", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m, v = load_ngram(model)
    ids = v.encode("the cat")
    expected = np.log(m.next_distribution(np.zeros(0, dtype=np.int64))[ids[0]])
    for t in range(1, len(ids)):
        expected += np.log(m.next_distribution(ids[max(0, t - 3):t])[ids[t]])
    assert s["log_prob"] == pytest.approx(float(expected), rel=1e-10) and s["tokens"] == 7
    assert main(["ngram", "prob", str(model), "Zebra"]) == 1  # 'Z' never seen: a clear error
    assert "'Z'" in capsys.readouterr().err


def test_stats_answers_the_lectures_questions(corpus_file, tmp_path, capsys):
    png = tmp_path / "u.png"
    assert main(["ngram", "stats", "--data", str(corpus_file), "--max-order", "4", "--plot", str(png), "--json"]) == 0
    out = capsys.readouterr().out
    assert "unigram histogram" in out and "P(a, b) against P(b, a)" in out and "possible" in out
    s = json.loads(out.strip().splitlines()[-1])
    assert [r["n"] for r in s["table"]] == [1, 2, 3, 4]
    assert int(s["table"][1]["possible"]) == s["vocab_size"] ** 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,needle", [
    (["ngram", "fit", "--data", "x.txt", "--order", "0", "--out", "m.npz"], "order"),
    (["ngram", "fit", "--out", "m.npz"], "no corpus"),
    (["ngram", "eval", "missing.npz"], "cannot read"),
    (["ngram", "stats", "--data", "x.txt", "--top", "0"], "top must be >= 1, got 0"),
    (["ngram", "stats", "--data", "x.txt", "--max-order", "0"], "max_order must be >= 1, got 0"),
])
def test_bad_input_is_one_line(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("abc" * 100)
    assert main(argv) != 0
    captured = capsys.readouterr()
    err = captured.err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert captured.out == ""  # refused before anything is printed
