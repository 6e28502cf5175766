"""Plots of a run's curves (matplotlib's object API with the Agg canvas: no display needed,
and importing rnnlab never changes the pyplot backend of a notebook).

Every function that draws returns its :class:`~matplotlib.figure.Figure` as well as writing
the PNG, so a notebook shows it (a ``Figure`` is displayed as the value of a cell); given
``None`` for the file, it only returns the figure."""

from __future__ import annotations

import json
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnlab.errors import OutputError


def save_figure(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    """Write ``fig`` to ``path`` (PNG) atomically: a temporary file beside it, then a rename; the
    temporary file is removed if writing fails (a full disk), and the old picture stays.
    ``path`` None writes nothing. Returns ``fig``."""
    if path is None:
        return fig
    path = Path(path)
    check_writable(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return fig


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputError` where a file cannot be written at ``path``: its folder is missing or
    it is a folder (checked before the work whose result it will hold, not after)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name (for example {path / 'plot.png'})")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: the folder {path.parent} does not exist")


def read_metrics(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file; a partly written or damaged line is skipped."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a half-written or damaged line
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def loss_curves(rows: list[dict], unit: str = "bpc") -> dict[str, list[tuple[int, float]]]:
    """The points of the loss curves in ``metrics.jsonl`` rows (:func:`read_metrics`), in ``unit``:
    ``{"train": [(step, value), ...], "val": [...]}``, as :func:`plot_curves` draws them."""
    return {split: [(r["step"], r[unit]) for r in rows if r.get("split") == split and r.get(unit) is not None]
            for split in ("train", "val")}


def plot_curves(metrics_path: str | os.PathLike[str], out_png: str | os.PathLike[str] | None,
                unit: str = "bpc") -> Figure:
    """Training and validation loss against optimiser steps, in ``unit`` (bits per token); below it,
    the gradient norm before clipping (log scale) and the fraction of steps clipped, where logged."""
    rows = read_metrics(metrics_path)
    points = loss_curves(rows, unit)
    train, val = points["train"], points["val"]
    grads = [(r["step"], r["grad_norm"], r.get("clipped_frac") or 0.0) for r in rows
             if r.get("split") == "train" and isinstance(r.get("grad_norm"), (int, float)) and r["grad_norm"] > 0]
    fig = Figure(figsize=(7, 6.5 if grads else 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if grads else [fig.subplots()]
    ax = axes[0]
    if train:
        ax.plot(*zip(*train), label="training (batch)", alpha=0.6, linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation (whole split)", linewidth=2)
    ax.set_ylabel({"bpc": "bits per character", "bpw": "bits per word"}.get(unit, unit))
    ax.grid(True, alpha=0.3)
    ax.legend()
    if grads:
        steps, norms, clipped = zip(*grads)
        g = axes[1]
        g.plot(steps, norms, linewidth=1, color="tab:red", label="gradient norm before clipping")
        g.set_yscale("log")
        g.set_ylabel("gradient norm")
        g.grid(True, alpha=0.3)
        c = g.twinx()
        c.plot(steps, clipped, linewidth=1, color="tab:gray", alpha=0.7, label="fraction of steps clipped")
        c.set_ylim(-0.02, 1.02)
        c.set_ylabel("clipped")
        g.legend(handles=[*g.get_lines(), *c.get_lines()], loc="upper right", fontsize=8)
    axes[-1].set_xlabel("optimiser step")
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_unigrams(symbols: list[str], counts, out_png: str | os.PathLike[str] | None, top: int = 60) -> Figure:
    """A bar chart of the ``top`` most frequent symbols (``symbols`` and ``counts`` sorted, most first)."""
    n = min(top, len(symbols))
    total = float(sum(counts))
    fig = Figure(figsize=(max(6, n * 0.18), 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(range(n), [c / total for c in counts[:n]])
    ax.set_xticks(range(n))
    ax.set_xticklabels([repr(s)[1:-1] or " " for s in symbols[:n]], fontsize=7, rotation=90)
    ax.set_ylabel("relative frequency")
    ax.set_title(f"unigram histogram ({len(symbols)} symbols, {int(total):,} tokens)")
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_confusion(confusion: list[list[int]], classes: list[str], out_png: str | os.PathLike[str] | None,
                   title: str = "") -> Figure:
    """The confusion matrix as a heat map, each row normalised (recall on the diagonal), counts written in."""
    import numpy as np

    m = np.asarray(confusion, dtype=np.float64)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(size + 1, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=90, fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if rows[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, out_png)
