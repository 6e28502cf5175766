r"""Statistical n-gram language models beside the RNNs (NumPy only; no torch here).

:class:`NGramLM` counts every m-gram (m = 1..n) of a stream of token ids and predicts
the next token from the previous n - 1. It reads the same ids as the RNNs (the same
corpus loading, splits and :class:`~rnnlab.data.vocab.Vocab`), scores every target after
the first exactly as :func:`rnnlab.evaluate.evaluate_tokens` does, in nats per token, and
samples with the same :mod:`rnnlab.decoding` samplers.

Notation (the symbols of the code): V symbols, ids 0..V-1; the model's order n; for a
target w at order m its context h holds the m - 1 previous tokens and h' is h without
its first (oldest) token. a_m(hw) is the count of the m-gram hw that smoothing uses
(raw counts, except Kneser-Ney's lower orders, below), and

* A_m(h) = sum_w a_m(hw), the context's total (a context seen only at the very end of
  the training stream has A_m(h) = 0: it was never followed by anything);
* N_{m,k}(h) = |{w : a_m(hw) = k}| for k = 1, 2 and N_{m,3+}(h) = |{w : a_m(hw) >= 3}|;
  N_{m,1+}(h) = |{w : a_m(hw) > 0}|.

Smoothings (``smoothing=``):

* ``"mle"`` -- maximum likelihood, p(w | h) = a_n(hw) / A_n(h). An unseen n-gram has
  probability 0 and an honest infinite loss; in a context never followed by anything
  (A_n(h) = 0) the estimate is 0/0, and the model gives every symbol probability 0.
* ``"add-k"`` -- p(w | h) = (a_n(hw) + k) / (A_n(h) + k V) (Laplace when k = 1); an
  unseen context gives the uniform 1/V.
* ``"witten-bell"`` -- interpolated, recursive down to the uniform distribution:
  p_0(w) = 1/V and for m = 1..n

  .. math:: p_m(w | h) = \frac{a_m(hw) + N_{m,1+}(h)\, p_{m-1}(w | h')}{A_m(h) + N_{m,1+}(h)}

  (p_m = p_{m-1} where A_m(h) = 0). This is NLTK's ``WittenBellInterpolated`` except
  that NLTK stops at the maximum-likelihood unigram, which gives an unseen symbol 0.
* ``"kneser-ney"`` (the default) -- interpolated modified Kneser-Ney (Chen & Goodman
  1998, eq. 17 and 26) in the form KenLM's ``lmplz`` uses: p_0(w) = 1/V and

  .. math:: p_m(w | h) = \frac{\max(a_m(hw) - D_m(a_m(hw)), 0)}{A_m(h)} + \gamma_m(h)\, p_{m-1}(w | h'),
            \qquad \gamma_m(h) = \frac{D_{m,1} N_{m,1}(h) + D_{m,2} N_{m,2}(h) + D_{m,3+} N_{m,3+}(h)}{A_m(h)}

  (p_m = p_{m-1} where A_m(h) = 0), with D_m(0) = 0, D_m(1) = D_{m,1}, D_m(2) = D_{m,2},
  D_m(c >= 3) = D_{m,3+}. At the highest order a_n is the raw count; below it a_m(hw) is
  the *continuation count* N_{1+}(. hw), the number of distinct tokens seen just before
  hw, where the start of the stream counts as one more such token (as ``<s>`` does in
  KenLM). The discounts of each order come from the count-of-counts c_k (how many
  m-grams have a_m = k):

  .. math:: Y = \frac{c_1}{c_1 + 2 c_2}, \qquad D_{m,j} = j - (j + 1)\, Y \frac{c_{j+1}}{c_j} \quad (j = 1, 2, 3)

  An order whose estimate is undefined or outside 0 < D_{m,j} <= j (tiny or artificial
  data) uses KenLM's ``--discount_fallback`` values 0.5, 1, 1.5 instead
  (``discount_fallback_`` records which orders did).

Every conditional distribution of a smoothed model sums to one over the V symbols and
gives every symbol a positive probability, whatever the context.

The training ids are one stream, as for the RNN: the first targets of a text have fewer
than n - 1 previous tokens, and target t is predicted by the order min(n, t + 1) model
from ids[max(0, t - n + 1) : t]. With a sentence ``boundary`` id (KenLM's convention for
a text with one sentence a line) the context of target t also starts no earlier than the
last boundary before t: n-grams that span a boundary are neither counted nor used.

Counting is vectorised. An m-gram is the integer key r * V + w, where r is the rank of
its (m - 1)-gram prefix among the distinct (m - 1)-grams (sorted) and w its last id, so
one ``np.unique`` per order counts it and keys never overflow, whatever V and n; a
text is scored by one ``np.searchsorted`` per order over all its positions at once.
``nbytes_`` is the memory the fitted tables take.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.data.vocab import Vocab
from rnnlab.decoding import Argmax, Sample, beam_search, token_buffer
from rnnlab.errors import CheckpointError, ConfigError, DataError, NotFittedError
from rnnlab.metrics import LN2

__all__ = ["FALLBACK_DISCOUNTS", "MAX_ORDER", "SMOOTHINGS", "NGramLM", "NotFittedError", "estimate_discounts",
           "bigram_counts", "load_ngram", "ngram_table", "pair_asymmetry", "unigram_histogram"]

SMOOTHINGS = ("mle", "add-k", "witten-bell", "kneser-ney")
MAX_ORDER = 20  # tables for every order 1..n are kept; beyond ~20 almost every n-gram of a text is unique
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # D1, D2, D3+ when an order's estimate fails (KenLM's --discount_fallback)
FORMAT = "rnnlab-ngram"  # the "format" field of a saved model's metadata
VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz file is a zip archive


# Counting -------------------------------------------------------------------------


def _ngram_orders(x: np.ndarray, vocab_size: int, max_order: int, boundary: int | None = None
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """For m = 1..max_order: ``(m, keys, counts, first, inverse)`` of the distinct m-grams of ``x``.

    ``keys`` (U_m,) sorted; the m-gram ``x[s:s+m]`` has key r * V + x[s+m-1], r the rank of
    ``x[s:s+m-1]`` among the distinct (m-1)-grams (r = 0 for m = 1). ``counts`` (U_m,) its
    occurrences, ``first`` (U_m,) the start of its first occurrence, ``inverse`` (N-m+1,) the
    rank of the m-gram starting at every s, -1 where it is not counted: with a ``boundary``
    id, an m-gram that holds the boundary anywhere but first or last (it spans two
    sentences) is not counted.
    """
    n = len(x)
    prev = np.zeros(n + 1, dtype=np.int64)  # rank of the empty gram at every start s = 0..n
    inner = None if boundary is None else (x == boundary)
    for m in range(1, max_order + 1):
        cnt = max(n - m + 1, 0)  # m-grams in the stream
        key = prev[:cnt] * vocab_size + x[m - 1:m - 1 + cnt]  # (cnt,)
        ok = prev[:cnt] >= 0  # (cnt,) its (m-1)-gram prefix was counted
        if inner is not None and m >= 3:
            ok &= ~inner[m - 2:m - 2 + cnt]  # x[s+m-2], the newest interior position, is no boundary
        if ok.all():
            keys, first, inv, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            inv = inv.reshape(-1).astype(np.int64)
        else:
            where = np.flatnonzero(ok)
            keys, first, inv_ok, counts = np.unique(key[where], return_index=True, return_inverse=True,
                                                    return_counts=True)
            first = where[first]
            inv = np.full(cnt, -1, dtype=np.int64)
            inv[where] = inv_ok.reshape(-1)
        yield m, keys.astype(np.int64), counts, first, inv
        prev = inv


def _compact(counts: np.ndarray) -> np.ndarray:
    """Counts in 4 bytes each where they fit (they always do below 4e9 training tokens)."""
    return counts.astype(np.uint32 if (len(counts) == 0 or counts.max() < 2**32) else np.int64)


def estimate_discounts(counts: np.ndarray) -> tuple[np.ndarray, bool]:
    r"""Modified Kneser-Ney discounts (D1, D2, D3+) of one order from its counts (Chen & Goodman eq. 26).

    :math:`Y = c_1 / (c_1 + 2 c_2)`, :math:`D_j = j - (j + 1) Y c_{j+1} / c_j`, where c_k is the
    number of n-grams counted exactly k times. Returns ``(discounts (3,), fell_back)``: where
    some c_1, c_2, c_3 is 0 or a discount falls outside (0, j], the order takes
    :data:`FALLBACK_DISCOUNTS` instead and ``fell_back`` is True.

    >>> estimate_discounts(np.array([1] * 6 + [2] * 2 + [3] * 2 + [4]))[0].round(4).tolist()
    [0.6, 0.2, 1.8]
    """
    c = np.bincount(np.minimum(np.asarray(counts, dtype=np.int64), 5), minlength=6)[1:5].astype(np.float64)
    if c[0] > 0 and c[1] > 0 and c[2] > 0:
        y = c[0] / (c[0] + 2.0 * c[1])
        j = np.arange(1.0, 4.0)
        d = j - (j + 1.0) * y * c[1:4] / c[0:3]
        if np.all((d > 0) & (d <= j)):
            return d, False
    return np.array(FALLBACK_DISCOUNTS, dtype=np.float64), True


def _check_ids(ids: Any, vocab_size: int, name: str, min_len: int) -> np.ndarray:
    """``ids`` as a 1-D int64 array, or a :class:`DataError` saying what is wrong with them."""
    x = np.asarray(ids)
    if x.ndim != 1:
        raise DataError(f"the {name} must be a 1-D sequence of token ids, got an array of shape {x.shape}")
    if len(x) < min_len:
        raise DataError(f"the {name} hold {len(x)} token(s); at least {min_len} needed")
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"the {name} must be integer token ids, got dtype {x.dtype}")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise DataError(f"the {name} hold id {bad}, outside the vocabulary 0..{vocab_size - 1}")
    return x.astype(np.int64, copy=False)


def _tail(x: np.ndarray, k: int) -> np.ndarray:
    """The last ``k`` entries along the last axis (none for k = 0, where ``x[..., -0:]`` would be all)."""
    return x[..., x.shape[-1] - min(k, x.shape[-1]):]


def _take(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``arr[idx]`` as float64 where idx >= 0, else 0 (``arr`` may be empty)."""
    if len(arr) == 0:
        return np.zeros(idx.shape, dtype=np.float64)
    return np.where(idx >= 0, arr[np.maximum(idx, 0)], 0).astype(np.float64)


# The estimator ----------------------------------------------------------------------


class NGramLM:
    """An n-gram language model over token ids; see the module docstring for the equations.

    Follows scikit-learn's estimator contract: ``__init__`` stores the hyperparameters
    unchanged, :meth:`fit` validates them and returns ``self``, learned attributes end in
    ``_``, and using the model before :meth:`fit` raises :class:`NotFittedError`.

    Parameters
    ----------
    order : int
        n, 1..:data:`MAX_ORDER`; the model conditions on the previous n - 1 tokens.
    smoothing : str
        ``"mle"``, ``"add-k"``, ``"witten-bell"`` or ``"kneser-ney"``.
    k : float
        The pseudo-count of ``"add-k"`` (1: Laplace); ignored by the others.
    discounts : None or array-like
        ``"kneser-ney"`` only: None estimates D1, D2, D3+ for every order from the data;
        three numbers fix them for every order; an (order, 3) array fixes them per order
        (row m - 1 for order m). Each D_j must lie in (0, j].
    boundary : None or int
        The id of a sentence boundary (the newline of a text with one sentence a line):
        no n-gram spans it, as in KenLM and SRILM, where each sentence is scored after
        ``<s>``. The boundary is both a sentence's last token (it is predicted) and the next
        one's first (the context starts there); an (m-1)-gram starting with it keeps its raw
        count, as nothing can precede it. None (the default) reads one unbroken stream, as
        the RNN does, whose state is carried across line ends.

    Learned attributes
    ------------------
    vocab_size_ : int
    n_tokens_ : int -- training tokens
    keys_ : list of (U_m,) int64 -- the distinct m-grams, ``keys_[m - 1]`` for order m
    counts_ : list of (U_m,) -- a_m, the counts smoothing uses (continuation counts below
        the highest order for Kneser-Ney)
    discounts_ : (order, 3) float64 or None -- Kneser-Ney's D_{m,1}, D_{m,2}, D_{m,3+}
    discount_fallback_ : (order,) bool or None -- orders whose estimate fell back
    nbytes_ : int -- memory of the fitted tables in bytes

    >>> lm = NGramLM(order=2, smoothing="mle").fit(np.array([0, 1, 0, 1, 0, 2]), vocab_size=3)
    >>> np.exp(lm.log_prob(np.array([0, 1, 0, 2]))).round(3).tolist()
    [0.667, 1.0, 0.333]
    """

    def __init__(self, order: int = 5, smoothing: str = "kneser-ney", k: float = 1.0, discounts: Any = None,
                 boundary: int | None = None):
        self.order = order
        self.smoothing = smoothing
        self.k = k
        self.discounts = discounts
        self.boundary = boundary

    # hyperparameters ------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"order": self.order, "smoothing": self.smoothing, "k": self.k, "discounts": self.discounts,
                "boundary": self.boundary}

    def set_params(self, **params: Any) -> NGramLM:
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise ConfigError(f"unknown NGramLM parameter(s) {', '.join(unknown)} (known: {', '.join(self.get_params())})")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return "NGramLM(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def _problems(self) -> list[str]:
        """Everything wrong with the hyperparameters, at once."""
        p = []
        order_ok = isinstance(self.order, Integral) and not isinstance(self.order, bool)
        if not order_ok or not 1 <= self.order <= MAX_ORDER:
            p.append(f"order must be an integer from 1 to {MAX_ORDER}, got {self.order!r}")
        if self.smoothing not in SMOOTHINGS:
            p.append(f"smoothing must be one of {', '.join(SMOOTHINGS)}, got {self.smoothing!r}")
        if not (isinstance(self.k, Real) and not isinstance(self.k, bool) and math.isfinite(self.k) and self.k > 0):
            p.append(f"k must be a positive number, got {self.k!r}")
        if self.boundary is not None and not (isinstance(self.boundary, Integral) and not isinstance(self.boundary, bool)
                                              and self.boundary >= 0):
            p.append(f"boundary must be None or a token id (an integer >= 0), got {self.boundary!r}")
        if self.discounts is not None:
            if self.smoothing != "kneser-ney":
                p.append(f"discounts apply to kneser-ney smoothing only, not {self.smoothing!r}")
            else:
                try:
                    d = np.asarray(self.discounts, dtype=np.float64)
                except (TypeError, ValueError):
                    d = np.zeros((0,))
                shapes = [(3,)] + ([(self.order, 3)] if order_ok else [])
                if d.shape not in shapes:
                    p.append(f"discounts must be 3 numbers (D1, D2, D3+) or an (order, 3) array, got {self.discounts!r}")
                elif not np.all((d > 0) & (d <= np.arange(1.0, 4.0))):
                    p.append(f"discounts must satisfy 0 < D1 <= 1, 0 < D2 <= 2, 0 < D3+ <= 3, got {d.tolist()}")
        return p

    # fitting --------------------------------------------------------------------------
    def fit(self, ids: Any, vocab_size: int) -> NGramLM:
        """Count the m-grams (m = 1..order) of ``ids`` (N,), one stream of ids in 0..vocab_size-1.

        Raises :class:`~rnnlab.errors.ConfigError` listing every bad hyperparameter and
        :class:`~rnnlab.errors.DataError` for empty or out-of-range ids.
        """
        problems = self._problems()
        if not (isinstance(vocab_size, Integral) and not isinstance(vocab_size, bool) and vocab_size >= 1):
            problems.append(f"vocab_size must be a positive integer, got {vocab_size!r}")
        elif isinstance(self.boundary, Integral) and self.boundary >= vocab_size:
            problems.append(f"boundary must be a token id below vocab_size {vocab_size}, got {self.boundary!r}")
        if problems:
            raise ConfigError(problems)
        v, n = int(vocab_size), int(self.order)
        x = _check_ids(ids, v, "training ids", min_len=1)
        if (len(x) + 1) * v >= 2**63:
            raise DataError(f"{len(x)} training tokens x {v} symbols overflow the 64-bit n-gram keys")
        kn = self.smoothing == "kneser-ney"
        keys: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        inv_prev = first_prev = np.zeros(0, dtype=np.int64)
        for m, k_m, c_m, first, inv in _ngram_orders(x, v, n, self.boundary):
            keys.append(k_m)
            counts.append(c_m)
            if kn and m >= 2:
                # continuation counts of the (m-1)-grams: the distinct m-grams ending in each,
                # i.e. the (m-1)-gram that starts one after each distinct m-gram's first occurrence
                cont = np.bincount(inv_prev[first + 1], minlength=len(keys[m - 2]))
                if len(inv_prev) and inv_prev[0] >= 0:
                    cont[inv_prev[0]] += 1  # the start of the stream precedes its first (m-1)-gram
                if self.boundary is not None and m >= 3:
                    # nothing precedes a sentence's start (as <s> in KenLM): its raw count stands
                    starts = x[first_prev] == self.boundary
                    cont[starts] = counts[m - 2][starts]
                counts[m - 2] = cont
            inv_prev, first_prev = inv, first
        self.vocab_size_ = v
        self.n_tokens_ = len(x)
        self.keys_ = keys
        self.counts_ = [_compact(c) for c in counts]
        if kn:
            self.discounts_, self.discount_fallback_ = self._discounts_for(self.counts_)
        else:
            self.discounts_, self.discount_fallback_ = None, None
        self._prepare()
        return self

    def _discounts_for(self, counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        n = len(counts)
        if self.discounts is not None:
            d = np.asarray(self.discounts, dtype=np.float64)
            return np.broadcast_to(d, (n, 3)).copy(), np.zeros(n, dtype=bool)
        est = [estimate_discounts(c) for c in counts]
        return np.stack([d for d, _ in est]), np.array([f for _, f in est], dtype=bool)

    def _prepare(self) -> None:
        """Per-context arrays for scoring, aligned with the (m-1)-gram table of each order m:
        ``_total[m-1]`` = A_m(h) and ``_weight[m-1]`` = the back-off mass numerator
        (Kneser-Ney: D1 N1 + D2 N2 + D3+ N3+; Witten-Bell: N1+)."""
        v = self.vocab_size_
        self._total: list[np.ndarray] = []
        self._weight: list[np.ndarray] = []
        self._dtab: list[np.ndarray] = []
        for m in range(1, len(self.keys_) + 1):
            keys, a = self.keys_[m - 1], self.counts_[m - 1]
            u_prev = 1 if m == 1 else len(self.keys_[m - 2])  # contexts: the distinct (m-1)-grams
            ctx = keys // v  # (U_m,) rank of each m-gram's context
            self._total.append(np.bincount(ctx, weights=a.astype(np.float64), minlength=u_prev))
            if self.smoothing == "kneser-ney":
                d = self.discounts_[m - 1]
                w = (d[0] * np.bincount(ctx[a == 1], minlength=u_prev)
                     + d[1] * np.bincount(ctx[a == 2], minlength=u_prev)
                     + d[2] * np.bincount(ctx[a >= 3], minlength=u_prev))
                self._dtab.append(np.array([0.0, *d]))
            elif self.smoothing == "witten-bell":
                w = np.bincount(ctx, minlength=u_prev).astype(np.float64)
            else:
                w = np.zeros(0)
            self._weight.append(w)
        tables = [*self.keys_, *self.counts_, *self._total, *self._weight]
        self.nbytes_ = int(sum(t.nbytes for t in tables))

    def _check_fitted(self) -> None:
        if not hasattr(self, "keys_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(ids, vocab_size) first")

    # the model ------------------------------------------------------------------------
    def _lookup(self, m: int, c: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Rank of the m-gram (context rank ``c``, last id ``w``) in the order-m table; -1 where unseen."""
        keys = self.keys_[m - 1]
        if len(keys) == 0:
            return np.full(np.broadcast(c, w).shape, -1, dtype=np.int64)
        q = c * self.vocab_size_ + w
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where((c >= 0) & (keys[pos] == q), pos, -1)

    def _level(self, m: int, c: np.ndarray, g: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """p_m(w | h) from the context ranks ``c``, the m-gram ranks ``g`` and p_{m-1}(w | h') ``lower``."""
        a = _take(self.counts_[m - 1], g)  # a_m(hw)
        total = _take(self._total[m - 1], c)  # A_m(h)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        if self.smoothing == "mle":
            return np.where(seen, a / safe, 0.0)
        if self.smoothing == "add-k":
            return (a + self.k) / (total + self.k * self.vocab_size_)
        weight = _take(self._weight[m - 1], c)
        if self.smoothing == "witten-bell":
            return np.where(seen, (a + weight * lower) / np.where(seen, total + weight, 1.0), lower)
        disc = self._dtab[m - 1][np.minimum(a, 3).astype(np.int64)]  # D_m(a)
        return np.where(seen, (np.maximum(a - disc, 0.0) + weight * lower) / safe, lower)

    def _orders_within_sentence(self, x: np.ndarray) -> np.ndarray:
        """For each position t of ``x`` (T,), the highest order m whose context x[t-m+1:t] holds the
        boundary (the model has one) at most as its first id: t - b + 1 for the last boundary b < t (no
        limit where none came before).
        Higher orders' n-grams span two sentences and were never counted; every smoothing then keeps
        the order below (Kneser-Ney and Witten-Bell would reach it through their unseen contexts, but
        MLE and add-k would give 0 or 1/V)."""
        t_len = len(x)
        pos = np.where(x == self.boundary, np.arange(t_len), -1)
        last = np.maximum.accumulate(pos)  # the last boundary at or before each position
        before = np.concatenate([[-1], last[:-1]])  # ... strictly before t
        return np.where(before >= 0, np.arange(t_len) - before + 1, np.iinfo(np.int64).max)

    def log_prob(self, ids: Any, include_first: bool = False) -> np.ndarray:
        """ln p(ids[t] | ids[max(0, t-n+1) : t]) for t = 1..T-1, shape (T-1,), as the RNN scores.

        With ``include_first`` the first token's ln p(ids[0]) (from the empty context) leads,
        shape (T,), so the sum is the log probability of the whole sequence. Under
        ``"mle"`` an unseen n-gram gives -inf.
        """
        self._check_fitted()
        x = _check_ids(ids, self.vocab_size_, "ids", min_len=0)
        t_len = len(x)
        p = np.full(t_len, 1.0 / self.vocab_size_)  # p_0, then p_m for every target t >= m - 1
        c = np.zeros(t_len, dtype=np.int64)  # rank of the (m-1)-gram starting at each s: the empty gram first
        # (T,) the highest order whose context starts at the last boundary (None: no boundary, no limit)
        top = self._orders_within_sentence(x) if self.boundary is not None else None
        for m in range(1, len(self.keys_) + 1):
            cnt = t_len - m + 1  # targets t = m-1..T-1, their context starting at s = t - m + 1
            if cnt <= 0:
                break
            g = self._lookup(m, c[:cnt], x[m - 1:])  # (cnt,) rank of x[s:s+m]
            q = self._level(m, c[:cnt], g, p[m - 1:])
            p[m - 1:] = q if top is None else np.where(m <= top[m - 1:], q, p[m - 1:])
            c = g
        with np.errstate(divide="ignore"):
            lp = np.log(p)
        return lp if include_first else lp[1:]

    def score(self, ids: Any) -> dict[str, float]:
        """Mean loss over the targets after the first, as :func:`rnnlab.evaluate.evaluate_tokens`
        reports it: ``{"loss": nats per token, "bits": bits per token, "tokens": T - 1}``
        (pass ``loss`` to :func:`rnnlab.metrics.token_metrics` for bpc/bpw and perplexity).
        ``loss`` is inf where an MLE model gives a target probability 0."""
        self._check_fitted()
        x = _check_ids(ids, self.vocab_size_, "ids to score", min_len=2)
        lp = self.log_prob(x)
        loss = float(-lp.mean())
        return {"loss": loss, "bits": loss / LN2, "tokens": len(lp)}

    def next_distribution(self, context_ids: Any) -> np.ndarray:
        """p(. | context), shape (V,) for a 1-D context or (B, V) for contexts (B, L).

        Only the last n - 1 ids matter; a shorter context uses the order L + 1 model. Each
        row sums to one, except under ``"mle"`` in a context never followed by anything in
        training, where every entry is 0 (the estimate is undefined there)."""
        self._check_fitted()
        v, n = self.vocab_size_, len(self.keys_)
        ctx = np.asarray(context_ids)
        squeeze = ctx.ndim == 1
        ctx = np.atleast_2d(ctx)
        if ctx.ndim != 2:
            raise DataError(f"a context must be 1-D (L,) or 2-D (B, L), got shape {ctx.shape}")
        if ctx.size:
            _check_ids(ctx.ravel(), v, "context ids", min_len=0)
        h = _tail(ctx.astype(np.int64), n - 1)  # (B, L)
        b, length = h.shape
        w = np.tile(np.arange(v, dtype=np.int64), b)  # (B*V,) every symbol after every context
        p = np.full(b * v, 1.0 / v)
        ranks = np.zeros((b, length + 1), dtype=np.int64)  # rank of h[:, s:s+m-1] for s = 0..L-m+1
        top = None  # the highest order within each context's last sentence (see _orders_within_sentence)
        if self.boundary is not None and length:
            at = h == self.boundary  # (B, L)
            last = np.where(at.any(axis=1), length - 1 - np.argmax(at[:, ::-1], axis=1), -1)  # (B,) -1: none
            top = np.repeat(np.where(last >= 0, length - last + 1, np.iinfo(np.int64).max), v)  # (B*V,)
        for m in range(1, min(n, length + 1) + 1):
            c = np.repeat(ranks[:, length - m + 1], v)  # (B*V,) the last m-1 ids of each context
            q = self._level(m, c, self._lookup(m, c, w), p)
            p = q if top is None else np.where(m <= top, q, p)
            if m <= length:
                ranks = self._lookup(m, ranks[:, :length - m + 1], h[:, m - 1:])  # (B, L-m+1)
        p = p.reshape(b, v)
        return p[0] if squeeze else p

    def next_logits(self, context_ids: Any) -> np.ndarray:
        """ln :meth:`next_distribution` (-inf for probability 0): logits for the samplers."""
        with np.errstate(divide="ignore"):
            return np.log(self.next_distribution(context_ids))

    def generate(self, prime_ids: Any, length: int, sampler: Argmax | Sample | None = None,
                 rng: np.random.Generator | None = None, num_samples: int = 1) -> np.ndarray:
        """``num_samples`` continuations of ``prime_ids`` (may be empty), shape (num_samples, length).

        ``sampler`` is one of :mod:`rnnlab.decoding`'s (default ``Sample()``: the model's own
        distribution), the same objects the RNN samples with. Raises :class:`DataError` where
        an MLE model reaches a context it never saw followed by anything."""
        self._check_fitted()
        if not (isinstance(length, Integral) and length >= 0 and isinstance(num_samples, Integral) and num_samples >= 1):
            raise ConfigError(f"length must be >= 0 and num_samples >= 1, got {length!r} and {num_samples!r}")
        sampler = Sample() if sampler is None else sampler
        rng = np.random.default_rng() if rng is None else rng
        keep = len(self.keys_) - 1
        prime = _check_ids(prime_ids, self.vocab_size_, "prime ids", min_len=0)
        hist = np.tile(_tail(prime, keep), (num_samples, 1))  # (B, <= n-1)
        out = token_buffer(num_samples, length)
        for t in range(length):
            logits = self.next_logits(hist)  # (B, V)
            if np.isneginf(logits).all(axis=-1).any():
                raise DataError(f"the {self.smoothing} model has no next token after context {hist[0].tolist()} "
                                "(never followed by anything in training); use a smoothed model")
            out[:, t] = sampler.choose(logits, rng)
            hist = _tail(np.concatenate([hist, out[:, t:t + 1]], axis=1), keep)
        return out

    def beam(self, prime_ids: Any, length: int, beam_width: int = 5) -> tuple[list[int], float]:
        """The most probable continuation of ``length`` ids found by :func:`rnnlab.decoding.beam_search`,
        and its total log probability."""
        self._check_fitted()
        keep = len(self.keys_) - 1
        prime = _tail(_check_ids(prime_ids, self.vocab_size_, "prime ids", min_len=0), keep)

        def step(tokens: np.ndarray, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            hist = _tail(np.concatenate([hist, tokens[:, None]], axis=1), keep)
            return self.next_logits(hist), hist

        return beam_search(step, lambda hist, idx: hist[idx], prime[None, :], self.next_logits(prime),
                           beam_width, length)

    # persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], vocab: Vocab | None = None,
             extra: dict[str, Any] | None = None) -> None:
        """Write the model (and its vocabulary, if given) to one ``.npz`` file, atomically.
        ``extra`` is any JSON-able record kept beside it (``extra_`` after loading; the CLI
        stores the data config there).

        Arrays only (``keys_<m>``, ``counts_<m>``, ``discounts``) and a JSON string of the
        hyperparameters: no pickle, so :meth:`load` reads it with ``allow_pickle=False``."""
        self._check_fitted()
        if vocab is not None and len(vocab) != self.vocab_size_:
            raise DataError(f"the vocabulary has {len(vocab)} symbols but the model {self.vocab_size_}")
        d = self.discounts
        params = {"order": int(self.order), "smoothing": str(self.smoothing), "k": float(self.k),  # JSON, not NumPy
                  "discounts": None if d is None else np.asarray(d, dtype=np.float64).tolist(),
                  "boundary": None if self.boundary is None else int(self.boundary)}
        meta = {"format": FORMAT, "version": VERSION, "params": params, "vocab_size": self.vocab_size_,
                "n_tokens": self.n_tokens_, "vocab": vocab.to_dict() if vocab is not None else None,
                "extra": extra}
        arrays = {"meta": np.array(json.dumps(meta))}
        for m, (k, c) in enumerate(zip(self.keys_, self.counts_), start=1):
            arrays[f"keys_{m}"], arrays[f"counts_{m}"] = k, c
        if self.discounts_ is not None:
            arrays["discounts"] = self.discounts_
            arrays["discount_fallback"] = self.discount_fallback_
        p = Path(path)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # a file object: numpy adds no ".npz" to the name
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NGramLM:
        """A model written by :meth:`save`; :class:`CheckpointError` for anything else."""
        return load_ngram(path)[0]


def load_ngram(path: str | os.PathLike[str]) -> tuple[NGramLM, Vocab | None]:
    """The model and vocabulary (None if none was saved) of a file written by :meth:`NGramLM.save`.

    Refuses, with a one-line :class:`CheckpointError`, a missing, foreign, truncated or
    inconsistent file; nothing in it is unpickled."""
    p = Path(path)
    what = f"{p} is not an rnnlab n-gram model"
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read n-gram model {p}: {e.strerror or e}") from None
    if magic != _ZIP_MAGIC:
        raise CheckpointError(f"{what} (expected an .npz file written by NGramLM.save)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{what} or is corrupt ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(str(arrays["meta"][()]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("no rnnlab-ngram metadata")
    except (KeyError, ValueError, IndexError, TypeError):
        raise CheckpointError(f"{what} (no rnnlab-ngram metadata)") from None
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{p} is an n-gram model of format version {meta.get('version')!r}; "
                              f"this rnnlab reads version {VERSION}")
    try:
        params, v, n_tokens = meta["params"], meta["vocab_size"], meta["n_tokens"]
        model = NGramLM(**params)
        problems = model._problems()
        if problems:
            raise ValueError("; ".join(problems))
        if not isinstance(v, int) or v < 1 or not isinstance(n_tokens, int):
            raise ValueError("bad vocab_size or n_tokens")
        if model.boundary is not None and model.boundary >= v:
            raise ValueError(f"boundary {model.boundary} outside the vocabulary")
        keys = [arrays[f"keys_{m}"] for m in range(1, model.order + 1)]
        counts = [arrays[f"counts_{m}"] for m in range(1, model.order + 1)]
        for m, (k, c) in enumerate(zip(keys, counts), start=1):
            u_prev = 1 if m == 1 else len(keys[m - 2])
            ok = (k.ndim == 1 and k.dtype == np.int64 and c.shape == k.shape and np.issubdtype(c.dtype, np.integer)
                  and np.all(np.diff(k) > 0) and (len(k) == 0 or (k[0] >= 0 and k[-1] // v < u_prev))
                  and np.all(c > 0))
            if not ok:
                raise ValueError(f"inconsistent {m}-gram table")
        if model.smoothing == "kneser-ney":
            d, fb = arrays["discounts"], arrays["discount_fallback"]
            if d.shape != (model.order, 3) or fb.shape != (model.order,) or not np.all((d > 0) & (d <= [1, 2, 3])):
                raise ValueError("bad discounts")
        else:
            d, fb = None, None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p} is a corrupt n-gram model ({e})") from None
    vocab = Vocab.from_dict(meta["vocab"]) if meta.get("vocab") is not None else None
    if vocab is not None and len(vocab) != v:
        raise CheckpointError(f"{p} is a corrupt n-gram model (vocabulary of {len(vocab)} symbols, model of {v})")
    model.vocab_size_, model.n_tokens_ = v, n_tokens
    model.extra_ = meta.get("extra")
    model.keys_, model.counts_ = keys, counts
    model.discounts_ = None if d is None else d.astype(np.float64)
    model.discount_fallback_ = None if fb is None else fb.astype(bool)
    model._prepare()
    return model, vocab


# The lecture's questions -----------------------------------------------------------


def ngram_table(ids: Any, vocab_size: int, max_order: int) -> list[dict[str, Any]]:
    """For n = 1..max_order: how many n-grams are possible (|V|^n) against how many occur.

    Each row: ``n``, ``possible`` (V**n, an exact int), ``observed`` (distinct n-grams in
    ``ids``), ``occurrences`` (N - n + 1), ``fraction`` (observed / possible) and
    ``singletons`` (n-grams seen once).

    Examples:
        >>> [(r["n"], r["possible"], r["observed"]) for r in ngram_table([0, 1, 0, 1, 1], 2, 3)]
        [(1, 2, 2), (2, 4, 3), (3, 8, 3)]
    """
    if not (isinstance(max_order, Integral) and max_order >= 1 and isinstance(vocab_size, Integral) and vocab_size >= 1):
        raise ConfigError(f"max_order and vocab_size must be positive integers, got {max_order!r} and {vocab_size!r}")
    x = _check_ids(ids, int(vocab_size), "ids", min_len=1)
    rows = []
    for m, keys, counts, _, _ in _ngram_orders(x, int(vocab_size), int(max_order)):
        possible = int(vocab_size) ** m
        rows.append({"n": m, "possible": possible, "observed": len(keys), "occurrences": max(len(x) - m + 1, 0),
                     "fraction": len(keys) / possible, "singletons": int((counts == 1).sum())})
    return rows


def unigram_histogram(ids: Any, vocab_size: int, top: int) -> dict[str, Any]:
    """The ``top`` most frequent ids of ``ids`` (N,) and how often each occurs, the rest summed.

    Returns ``ids`` (K,) int64, most frequent first (ties: the lower id), K = min(top, V);
    ``counts`` (K,) int64; ``rest`` (the occurrences of every other id), ``rest_symbols`` (how
    many other ids occur at all) and ``total`` (N). ``counts.sum() + rest == total``.

    Examples:
        >>> h = unigram_histogram([2, 0, 2, 1, 2, 0], vocab_size=4, top=2)
        >>> h["ids"].tolist(), h["counts"].tolist(), h["rest"], h["rest_symbols"]
        ([2, 0], [3, 2], 1, 1)
    """
    if not (isinstance(top, Integral) and top >= 1 and isinstance(vocab_size, Integral) and vocab_size >= 1):
        raise ConfigError(f"top and vocab_size must be positive integers, got {top!r} and {vocab_size!r}")
    x = _check_ids(ids, int(vocab_size), "ids", min_len=1)
    counts = np.bincount(x, minlength=int(vocab_size))  # (V,)
    order = np.argsort(-counts, kind="stable")[:top]  # (K,)
    shown = counts[order]
    keep = shown > 0  # an id that never occurs is not a bar
    order, shown = order[keep], shown[keep]
    return {"ids": order.astype(np.int64), "counts": shown.astype(np.int64), "rest": int(len(x) - shown.sum()),
            "rest_symbols": int((counts > 0).sum() - len(order)), "total": len(x)}


def bigram_counts(ids: Any, vocab_size: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The bigram table of the ``top`` most frequent ids: c(a b), how often b follows a.

    Returns ``(symbols (K,) int64, counts (K, K) int64)``: the K = min(top, ids that occur)
    most frequent ids (as :func:`unigram_histogram` orders them) and the count of each
    adjacent pair, row a (the first), column b (the next). Divided by N - 1 it is P(a, b);
    divided by its row's sum over all of V, P(b | a).

    Examples:
        >>> ids, c = bigram_counts([0, 1, 0, 1, 1], vocab_size=2, top=2)
        >>> ids.tolist(), c.tolist()
        ([1, 0], [[1, 1], [2, 0]])
    """
    sym = unigram_histogram(ids, vocab_size, top)["ids"]  # (K,)
    x = _check_ids(ids, int(vocab_size), "ids", min_len=1)
    where = np.full(int(vocab_size), -1, dtype=np.int64)
    where[sym] = np.arange(len(sym))  # id -> its row and column, -1: not shown
    a, b = where[x[:-1]], where[x[1:]]  # (N-1,)
    both = (a >= 0) & (b >= 0)
    k = len(sym)
    table = np.bincount(a[both] * k + b[both], minlength=k * k).reshape(k, k)  # (K, K)
    return sym, table.astype(np.int64)


def pair_asymmetry(ids: Any, vocab: Vocab, top: int = 10, points: int = 0) -> dict[str, Any]:
    """Adjacent pairs (a, b) as evidence that order and dependence matter.

    With P(a) = c(a) / N and P(a, b) = c(ab) / (N - 1) over the N - 1 adjacent pairs,
    returns ``top`` rows each of

    * ``"frequent"`` -- the most frequent pairs;
    * ``"asymmetric"`` -- the largest P(a, b) - P(b, a) (a != b, the more frequent order first);
    * ``"dependent"`` -- the largest |P(a, b) - P(a) P(b)|, over every pair when V <= 1000
      (so a pair that never occurs but "should" shows up), else over the observed pairs.

    A row: ``a``, ``b`` (symbols), ``count_ab``, ``count_ba``, ``p_ab``, ``p_ba``, ``p_a_p_b``
    and ``pmi`` = log2 P(a, b) / (P(a) P(b)) (-inf for a pair never seen).

    With ``points`` > 0, ``"points"`` holds the ``points`` most frequent observed pairs
    (ties: the lower key a V + b) as columns for a scatter plot, each a list of that length:
    ``a``, ``b``, ``p_ab``, ``p_ba`` and ``p_a_p_b``. P(a, b) against P(b, a) lies on the
    diagonal only where order does not matter; P(a, b) against P(a) P(b) only where a and
    b are independent.
    """
    v = len(vocab)
    if not (isinstance(top, Integral) and top >= 1):
        raise ConfigError(f"top must be a positive integer, got {top!r}")
    if not (isinstance(points, Integral) and points >= 0):
        raise ConfigError(f"points must be an integer >= 0, got {points!r}")
    x = _check_ids(ids, v, "ids", min_len=2)
    n = len(x)
    p_uni = np.bincount(x, minlength=v) / n  # (V,)
    keys, cnt = np.unique(x[:-1] * v + x[1:], return_counts=True)  # observed pairs, sorted

    def count_of(k: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        return np.where(keys[pos] == k, cnt[pos], 0)

    def rows(k: np.ndarray) -> list[dict[str, Any]]:
        a, b = k // v, k % v
        c_ab, c_ba = count_of(k), count_of(b * v + a)
        out = []
        for i in range(len(k)):
            pab, pa_pb = c_ab[i] / (n - 1), p_uni[a[i]] * p_uni[b[i]]
            out.append({"a": vocab.symbols[a[i]], "b": vocab.symbols[b[i]], "count_ab": int(c_ab[i]),
                        "count_ba": int(c_ba[i]), "p_ab": float(pab), "p_ba": float(c_ba[i] / (n - 1)),
                        "p_a_p_b": float(pa_pb), "pmi": float(np.log2(pab / pa_pb)) if pab > 0 else -math.inf})
        return out

    frequent = keys[np.argsort(-cnt, kind="stable")[:top]]
    a, b = keys // v, keys % v
    rev = count_of(b * v + a)
    fwd = (a != b) & ((cnt > rev) | ((cnt == rev) & (a < b)))  # one row per unordered pair, frequent order first
    asym = keys[fwd][np.argsort(-(cnt[fwd] - rev[fwd]), kind="stable")[:top]]
    cand = np.arange(v * v, dtype=np.int64) if v <= 1000 else keys
    dev = np.abs(count_of(cand) / (n - 1) - p_uni[cand // v] * p_uni[cand % v])
    dep = cand[np.argsort(-dev, kind="stable")[:top]]
    out = {"pairs": n - 1, "frequent": rows(frequent), "asymmetric": rows(asym), "dependent": rows(dep)}
    if points:
        pick = np.argsort(-cnt, kind="stable")[:points]  # (P,) into the observed pairs
        pa, pb = a[pick], b[pick]
        out["points"] = {"a": [vocab.symbols[i] for i in pa], "b": [vocab.symbols[i] for i in pb],
                         "p_ab": (cnt[pick] / (n - 1)).tolist(), "p_ba": (rev[pick] / (n - 1)).tolist(),
                         "p_a_p_b": (p_uni[pa] * p_uni[pb]).tolist()}
    return out
