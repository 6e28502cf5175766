r"""Exposure bias, measured: how far a model drifts when it reads its own samples.

A model trained with teacher forcing has only ever read true text; at generation it
reads its own output. From K prefixes of the validation text (each P tokens, evenly
spaced), the model continues for L tokens with its own samples, and three curves are
reported against the distance d = 1..L from the prefix (in ``buckets`` equal bands):

* ``teacher_bits``: the teacher-forced bits per token of the *true* continuation (the
  model reads the truth: no exposure bias, the reference line);
* ``generated_ref_bits``: the bits per token of the *generated* continuation under an
  independent reference model (a Kneser-Ney n-gram model fitted on the training split),
  beside ``real_ref_bits``, the same reference model on the true continuation: a model
  that drifts away from the language writes text the reference finds ever less likely;
* ``divergence``: the Jensen-Shannon divergence (bits, in [0, 1]) between the n-gram
  histograms (``stat_order``-grams) of the generated and of the true continuations
  pooled over the K prefixes, band by band:

  .. math:: \mathrm{JS}(P, Q) = \tfrac12 \mathrm{KL}(P \,\|\, M) + \tfrac12 \mathrm{KL}(Q \,\|\, M), \quad M = \tfrac12 (P + Q)

  With few samples per band this has a positive floor even between two real texts;
  ``real_divergence`` gives that floor on equal terms: the same statistic between the K
  true continuations and K *other* true stretches of the validation text, of the same
  length (the L tokens just before each prefix; after the continuation for a prefix at
  the very start), so both figures pool the same number of n-grams per band.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rnnlab.config import SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError
from rnnlab.metrics import LN2
from rnnlab.ngram import NGramLM
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.sampling import sample_steps

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["exposure_bias", "js_divergence", "plot_exposure", "reference_model"]


def js_divergence(p: Counter, q: Counter) -> float:
    """Jensen-Shannon divergence in bits between two histograms (0 for identical, 1 for disjoint)."""
    keys = sorted(set(p) | set(q))
    if not keys:
        return 0.0
    a = np.array([p.get(k, 0) for k in keys], dtype=np.float64)
    b = np.array([q.get(k, 0) for k in keys], dtype=np.float64)
    if a.sum() == 0 or b.sum() == 0:
        return 1.0
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return 0.5 * kl(a) + 0.5 * kl(b)


@torch.no_grad()
def _teacher_nats(model: RNNLanguageModel, ids: np.ndarray, start: int) -> np.ndarray:
    """-ln p(ids[t] | ids[:t]) for t = start..N-1, the model reading the true ids."""
    device = model.decoder.weight.device
    x = torch.as_tensor(ids[None, :-1], device=device)  # (1, N-1)
    logits, _ = model(x)  # (1, N-1, V)
    lp = torch.log_softmax(logits[0].double(), dim=-1)  # (N-1, V)
    tgt = torch.as_tensor(ids[1:], device=device)
    nats = -lp[torch.arange(len(tgt)), tgt].cpu().numpy()  # target t+1 at row t
    return nats[start - 1:]


def _bands(values: np.ndarray, buckets: int) -> list[float]:
    """Mean of (K, L) values in ``buckets`` equal bands of the distance axis."""
    return [float(v.mean()) for v in np.array_split(values, buckets, axis=1)]


def _grams(rows: list[np.ndarray], lo: int, hi: int, n: int) -> Counter:
    c: Counter = Counter()
    for r in rows:
        seg = r[lo:hi]
        c.update(tuple(seg[i:i + n].tolist()) for i in range(len(seg) - n + 1))
    return c


def exposure_bias(model: RNNLanguageModel, vocab: Vocab, val_text: str, train_text: str, prefixes: int = 20,
                  prefix_len: int = 100, length: int = 200, buckets: int = 10, ref_order: int = 5,
                  stat_order: int = 2, temperature: float = 1.0, seed: int = 0,
                  reference: NGramLM | None = None) -> dict[str, Any]:
    """The exposure-bias report of ``model`` (see the module docstring); JSON-able.

    ``reference``: the reference model, already fitted (:func:`reference_model` of the same
    training text, vocabulary and ``ref_order``), to share one fit between several models of
    one corpus; None fits it here.
    """
    problems = []
    for name, v in (("prefixes", prefixes), ("prefix_len", prefix_len), ("length", length), ("buckets", buckets),
                    ("ref_order", ref_order), ("stat_order", stat_order)):
        if not isinstance(v, int) or v < 1:
            problems.append(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(buckets, int) and isinstance(length, int) and buckets > length:
        problems.append(f"buckets ({buckets}) cannot exceed length ({length})")
    elif all(isinstance(v, int) and v > 0 for v in (buckets, length, stat_order)) and length // buckets < stat_order:
        # a band shorter than one n-gram holds none: its divergence would read 0, perfect agreement
        problems.append(f"each of the {buckets} bands of length {length} holds {length // buckets} token(s), fewer "
                        f"than stat_order ({stat_order}): give fewer --buckets or a larger --length")
    if problems:
        raise ConfigError(problems)
    val = vocab.encode(val_text)
    span = prefix_len + length
    if len(val) < span + 1:
        raise DataError(f"the validation text has {len(val)} tokens; prefix_len + length + 1 = {span + 1} needed")
    model.eval()
    if reference is None:
        ref = reference_model(vocab, train_text, ref_order)
    else:
        ref = reference
        if getattr(ref, "order", None) != ref_order or getattr(ref, "vocab_size_", None) != len(vocab):
            raise ConfigError(f"the reference model must be a fitted {ref_order}-gram model of the vocabulary's "
                              f"{len(vocab)} symbols, got order {getattr(ref, 'order', '?')} over "
                              f"{getattr(ref, 'vocab_size_', '?')} symbols")
    starts = np.linspace(0, len(val) - span - 1, prefixes).astype(np.int64)
    teacher, gen_ref, real_ref, generated, real, other = [], [], [], [], [], []
    for k, s in enumerate(starts):
        window = val[s:s + span]  # (P + L,)
        teacher.append(_teacher_nats(model, window, prefix_len))  # (L,)
        prime = vocab.decode(window[:prefix_len])
        cfg = SampleConfig(prime=prime, length=length, temperature=temperature, seed=seed + k)
        gen = np.array([int(nxt[0]) for nxt, _ in sample_steps(model, vocab, cfg)], dtype=np.int64)  # (L,)
        gen_ref.append(-ref.log_prob(np.concatenate([window[:prefix_len], gen]))[prefix_len - 1:])
        real_ref.append(-ref.log_prob(window)[prefix_len - 1:])
        generated.append(gen)
        real.append(window[prefix_len:])
        o = int(s) - length if s >= length else min(int(s) + span, len(val) - length)
        other.append(val[o:o + length])  # (L,) another true stretch, for the floor
    to_bits = 1.0 / LN2
    bounds = [int(b[0]) for b in np.array_split(np.arange(length), buckets)] + [length]
    report: dict[str, Any] = {
        "config": {"prefixes": prefixes, "prefix_len": prefix_len, "length": length, "buckets": buckets,
                   "ref_order": ref_order, "stat_order": stat_order, "temperature": temperature, "seed": seed},
        "distance": [(bounds[i] + bounds[i + 1] + 1) / 2 for i in range(buckets)],  # band centres, 1-based
        "teacher_bits": _bands(np.stack(teacher) * to_bits, buckets),
        "generated_ref_bits": _bands(np.stack(gen_ref) * to_bits, buckets),
        "real_ref_bits": _bands(np.stack(real_ref) * to_bits, buckets),
        "divergence": [js_divergence(_grams(generated, bounds[i], bounds[i + 1], stat_order),
                                     _grams(real, bounds[i], bounds[i + 1], stat_order)) for i in range(buckets)],
        "real_divergence": [js_divergence(_grams(other, bounds[i], bounds[i + 1], stat_order),
                                          _grams(real, bounds[i], bounds[i + 1], stat_order))
                            for i in range(buckets)],
    }
    report["summary"] = {k: float(np.mean(report[k])) for k in
                         ("teacher_bits", "generated_ref_bits", "real_ref_bits", "divergence", "real_divergence")}
    report["summary"]["ref_gap_bits"] = report["summary"]["generated_ref_bits"] - report["summary"]["real_ref_bits"]
    if not all(math.isfinite(v) for v in report["summary"].values()):
        raise DataError("the exposure-bias measurement came out non-finite")
    return report


def reference_model(vocab: Vocab, train_text: str, ref_order: int = 5) -> NGramLM:
    """The independent reference of :func:`exposure_bias`: a Kneser-Ney ``ref_order``-gram model fitted on the
    training text (encoded with ``vocab``), which several models of one corpus and vocabulary can share."""
    return NGramLM(order=ref_order).fit(vocab.encode(train_text), len(vocab))


def plot_exposure(report: dict[str, Any], path: str | os.PathLike[str] | None = None, title: str = "") -> Figure:
    """Two panels against the distance from the prefix: bits per token, and the n-gram divergence.

    Returns the :class:`~matplotlib.figure.Figure` (a notebook shows it); with a ``path`` it is also written
    there as a PNG (atomically, :func:`rnnlab.plots.save_figure`), with ``path`` None nothing is written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = report["distance"]
    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    a, b = fig.subplots(2, 1, sharex=True)
    a.plot(d, report["teacher_bits"], "o-", label="model, true text (teacher-forced)")
    a.plot(d, report["real_ref_bits"], "s--", label="reference n-gram, true text")
    a.plot(d, report["generated_ref_bits"], "^-", label="reference n-gram, generated text")
    a.set_ylabel("bits per token")
    a.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    b.plot(d, report["divergence"], "^-", label="generated vs true")
    b.plot(d, report["real_divergence"], "s--", label="true vs true (sampling floor)")
    b.set_ylabel(f"JS divergence of {report['config']['stat_order']}-grams (bits)")
    b.set_xlabel("distance from the prefix (tokens)")
    b.grid(True, alpha=0.3)
    b.legend(fontsize=8)
    if title:
        a.set_title(title)
    fig.tight_layout()
    from rnnlab.plots import save_figure

    return save_figure(fig, path)
