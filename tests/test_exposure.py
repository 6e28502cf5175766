"""Exposure bias: the divergence, the report's shape and meaning, the command line."""

import json

import numpy as np
import pytest
from collections import Counter

from rnnlab.cli import main
from rnnlab.exposure import js_divergence


def test_js_divergence_by_hand():
    assert js_divergence(Counter(a=3, b=1), Counter(a=3, b=1)) == 0.0
    assert js_divergence(Counter(a=2), Counter(b=5)) == pytest.approx(1.0)
    # P = (1/2, 1/2), Q = (1, 0): M = (3/4, 1/4); JS = 1/2 [1/2 log2(2/3) + 1/2 log2 2] + 1/2 log2(4/3)
    expected = 0.5 * (0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25)) + 0.5 * np.log2(1 / 0.75)
    assert js_divergence(Counter(a=1, b=1), Counter(a=4)) == pytest.approx(expected)


def test_an_untrained_model_drifts_and_a_trained_one_less(tmp_path, corpus_file, capsys):
    def run(name, steps):
        out = tmp_path / name
        assert main(["train", "--data", str(corpus_file), "--cell", "gru", "--hidden-size", "32", "--num-layers", "1",
                     "--max-steps", str(steps), "--eval-interval", str(steps), "--lr", "0.01", "--out", str(out),
                     "--quiet"]) == 0
        js = tmp_path / f"{name}.json"
        assert main(["exposure", str(out), "--prefixes", "6", "--prefix-len", "20", "--length", "40", "--buckets", "4",
                     "--json-out", str(js), "--plot", str(tmp_path / f"{name}.png")]) == 0
        return json.loads(js.read_text())

    raw = run("raw", 1)
    trained = run("trained", 200)
    capsys.readouterr()
    for r in (raw, trained):
        assert len(r["distance"]) == 4 and r["distance"] == sorted(r["distance"])
        assert all(0.0 <= v <= 1.0 for v in r["divergence"] + r["real_divergence"])
    # the reference model finds the untrained model's samples far less likely than real text,
    # and the trained model's samples closer to real text than the untrained one's
    assert raw["summary"]["ref_gap_bits"] > 1.0
    assert trained["summary"]["ref_gap_bits"] < raw["summary"]["ref_gap_bits"]
    assert trained["summary"]["divergence"] < raw["summary"]["divergence"]
    # the floor (true vs other true text, the same number of n-grams) lies below an untrained model's drift
    assert raw["summary"]["real_divergence"] < raw["summary"]["divergence"]
    assert trained["summary"]["teacher_bits"] < raw["summary"]["teacher_bits"]
    assert (tmp_path / "trained.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_options_are_one_line(tmp_path, corpus_file, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(corpus_file), "--max-steps", "1", "--hidden-size", "8", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["exposure", str(out), "--buckets", "50", "--length", "10"]) == 2
    assert "buckets (50) cannot exceed length (10)" in capsys.readouterr().err
    assert main(["exposure", str(out), "--buckets", "10", "--length", "10"]) == 2  # bands of 1 token: no bigram
    assert "holds 1 token(s), fewer than stat_order (2)" in capsys.readouterr().err
    assert main(["exposure", str(out), "--length", "100000"]) == 1
    assert "validation text has" in capsys.readouterr().err


def test_a_corpus_changed_since_training_is_refused_as_eval_refuses_it(tmp_path, corpus_file, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(corpus_file), "--max-steps", "1", "--hidden-size", "8", "--out", str(out),
                 "--quiet"]) == 0
    args = ["--prefixes", "2", "--prefix-len", "10", "--length", "20", "--buckets", "2"]
    text = corpus_file.read_text()
    corpus_file.write_text(text.replace("cat", "cow"))
    capsys.readouterr()
    for command in (["eval", str(out)], ["exposure", str(out), *args]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "the corpus has changed since the run" in err and len(err.strip().splitlines()) == 1, command
    corpus_file.write_text(text)
    (out / "split.json").write_text("[damaged")  # a record that cannot be read: a warning, the corpus read unchecked
    code = main(["exposure", str(out), *args])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "is damaged" in err and "the corpus is read unchecked" in err


def test_a_shared_reference_model_gives_the_same_report(corpus_file):
    import torch

    from rnnlab.config import ModelConfig
    from rnnlab.data.vocab import Vocab
    from rnnlab.errors import ConfigError
    from rnnlab.exposure import exposure_bias, reference_model
    from rnnlab.nn.models import RNNLanguageModel

    text = corpus_file.read_text()
    train, val = text[:1500], text[1500:]
    vocab = Vocab.from_text(text)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell="gru", hidden_size=8, num_layers=1), len(vocab))
    kw = dict(prefixes=3, prefix_len=10, length=20, buckets=2, ref_order=3)
    alone = exposure_bias(model, vocab, val, train, **kw)
    shared = exposure_bias(model, vocab, val, "", reference=reference_model(vocab, train, 3), **kw)
    assert shared == alone
    with pytest.raises(ConfigError, match="fitted 5-gram model"):
        exposure_bias(model, vocab, val, train, **{**kw, "ref_order": 5}, reference=reference_model(vocab, train, 3))


def test_plot_exposure_returns_its_figure_and_writes_only_where_asked(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from rnnlab.exposure import plot_exposure

    report = {"config": {"stat_order": 3}, "distance": [1.5, 4.5, 7.5], "teacher_bits": [2.0, 2.1, 2.2],
              "real_ref_bits": [2.5, 2.5, 2.6], "generated_ref_bits": [2.6, 2.9, 3.3],
              "divergence": [0.1, 0.2, 0.4], "real_divergence": [0.05, 0.05, 0.06]}
    monkeypatch.chdir(tmp_path)
    fig = plot_exposure(report)  # no path: the figure alone, for a notebook
    assert isinstance(fig, Figure) and list(tmp_path.iterdir()) == []
    top, bottom = fig.axes
    assert [list(line.get_ydata()) for line in top.get_lines()] == [
        report["teacher_bits"], report["real_ref_bits"], report["generated_ref_bits"]]
    assert [list(line.get_ydata()) for line in bottom.get_lines()] == [report["divergence"], report["real_divergence"]]
    assert list(top.get_lines()[0].get_xdata()) == report["distance"]
    written = plot_exposure(report, tmp_path / "exposure.png", title="t")
    assert (tmp_path / "exposure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written.axes[0].get_title() == "t"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exposure.png"]  # no temporary file left
