"""The drawing functions return their matplotlib figure as well as writing the PNG (for notebooks)."""

import json

import numpy as np
from matplotlib.figure import Figure

from rnnlab.plots import loss_curves, plot_confusion, plot_curves, plot_unigrams, read_metrics


def _metrics(path):
    rows = [{"split": "train", "step": s, "bpc": 4.0 - s / 100, "grad_norm": 1.0 + s, "clipped_frac": 0.1}
            for s in range(0, 100, 10)]
    rows += [{"split": "val", "step": 50, "bpc": 3.6}, {"split": "val", "step": 100, "bpc": 3.1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_plot_curves_returns_the_figure_it_writes(tmp_path):
    fig = plot_curves(_metrics(tmp_path / "metrics.jsonl"), tmp_path / "curves.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    top, grads = fig.axes[:2]  # the loss curves, then the gradient norm under them
    val = [line for line in top.get_lines() if line.get_label().startswith("validation")][0]
    assert list(val.get_xdata()) == [50, 100] and list(val.get_ydata()) == [3.6, 3.1]
    assert grads.get_yscale() == "log"


def test_no_file_given_draws_the_figure_and_writes_nothing(tmp_path):
    fig = plot_curves(_metrics(tmp_path / "metrics.jsonl"), None)
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_plot_unigrams_and_confusion_return_their_figures(tmp_path):
    fig = plot_unigrams(["e", "t", " "], np.array([50, 30, 20]), tmp_path / "u.png", top=2)
    assert [round(p.get_height(), 6) for p in fig.axes[0].patches] == [0.5, 0.3]  # relative frequencies, top 2
    conf = plot_confusion([[3, 1], [0, 4]], ["a", "b"], None, title="t")
    assert isinstance(conf, Figure) and conf.axes[0].get_title() == "t"
    image = conf.axes[0].get_images()[0].get_array()
    assert np.allclose(image, [[0.75, 0.25], [0.0, 1.0]])  # each row normalised
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.png"]


def test_loss_curves_are_the_points_plot_curves_draws(tmp_path):
    path = _metrics(tmp_path / "metrics.jsonl")
    with path.open("a", encoding="utf-8") as f:  # a row without the unit, a damaged line, a word-level row
        f.write('{"split": "train", "step": 200}\n{"split": "val", "st\n{"split": "val", "step": 300, "bpw": 9.0}\n')
    rows = read_metrics(path)
    points = loss_curves(rows)
    top = plot_curves(path, None).axes[0]
    drawn = {line.get_label().split()[0]: list(zip(line.get_xdata(), line.get_ydata())) for line in top.get_lines()}
    assert points == {"train": drawn["training"], "val": drawn["validation"]}
    assert points["val"] == [(50, 3.6), (100, 3.1)] and len(points["train"]) == 10
    assert loss_curves(rows, "bpw") == {"train": [], "val": [(300, 9.0)]}
