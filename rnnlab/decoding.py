r"""Choosing the next token from a model's scores: one implementation for every model.

This module needs only NumPy, so the neural models and the count-based n-gram models
share it. A *sampler* maps logits (B, V) to token ids (B,):

* :class:`Argmax` -- the most probable token (greedy decoding);
* :class:`Sample` -- a random draw from :func:`distribution`, which applies, in order,

  - temperature :math:`\tau`: :math:`p_i \propto \exp(z_i / \tau)`; :math:`\tau < 1`
    sharpens the distribution, :math:`\tau > 1` flattens it, :math:`\tau = 1` is the
    model's own softmax;
  - top-k: keep the k largest probabilities (ties at the k-th value broken by index);
  - top-p (nucleus, Holtzman et al. 2020): keep the smallest set of most probable
    tokens whose total reaches p;

  and renormalises what is kept.

:func:`beam_search` keeps the ``beam_width`` most probable prefixes at every step of
any model given as a step function; :func:`beam_search_tree` runs the same search and
also returns its tree (:class:`BeamTree`: every step's kept hypotheses, the best of those
pruned, the best path), for showing how the beam chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

import numpy as np

from rnnlab.config import sampling_problems
from rnnlab.errors import ConfigError

if TYPE_CHECKING:
    from rnnlab.data.vocab import Vocab


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Probabilities (B, V) after temperature, top-k and top-p; each row sums to 1."""
    x = np.atleast_2d(np.asarray(logits, dtype=np.float64))  # (B, V)
    # shift before dividing, so the best token sits at 0: a huge spread of logits or a tiny
    # temperature then sends far-off tokens to -inf (probability 0) instead of overflowing to NaN
    with np.errstate(over="ignore"):
        z = (x - x.max(axis=-1, keepdims=True)) / temperature  # (B, V), <= 0
    p = np.exp(z)  # the best token's z is exactly 0: its term is 1, so the row sums to >= 1 (no underflow)
    p /= p.sum(axis=-1, keepdims=True)
    v = p.shape[-1]
    if not (0 < top_k < v or top_p < 1.0):
        return p
    # rank by the raw logits, not the probabilities nor z: exp() and a huge temperature can make
    # near-ties exact ties, and the most probable token must stay first
    order = np.argsort(-x, axis=-1, kind="stable")  # (B, V), most probable first
    if 0 < top_k < v:
        np.put_along_axis(p, order[:, top_k:], 0.0, axis=-1)
    if top_p < 1.0:
        sorted_p = np.take_along_axis(p, order, axis=-1)
        cum = np.cumsum(sorted_p, axis=-1)
        # keep a token if the mass before it has not yet reached p; the first always (top_p * mass
        # can underflow to 0)
        keep_sorted = (cum - sorted_p) < top_p * cum[:, -1:]
        keep_sorted[:, 0] = True
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
    return p / p.sum(axis=-1, keepdims=True)


def prime_end(vocab: Vocab, prime: str, ids: np.ndarray) -> str | None:
    """The symbol a continuation is written after (:meth:`Vocab.separator`'s ``prev``): the prime's last,
    or None where there is no prime or it ends in white space (at word level no second space is written)."""
    return vocab.symbols[int(ids[-1])] if prime and len(ids) and not prime[-1].isspace() else None


def token_buffer(num_samples: int, length: int) -> np.ndarray:
    """Zeros (num_samples, length) for generated ids; a :class:`ConfigError` where that cannot be held."""
    try:
        return np.zeros((num_samples, length), dtype=np.int64)
    except (MemoryError, ValueError):
        raise ConfigError(f"{num_samples:,} sample(s) of {length:,} tokens do not fit in memory") from None


class Argmax:
    """Greedy decoding: always the most probable token (ties: the lowest id)."""

    def choose(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.atleast_2d(logits).argmax(axis=-1)


@dataclass
class Sample:
    """A random draw from :func:`distribution` (temperature, top-k, top-p)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        problems = sampling_problems(self.temperature, self.top_k, self.top_p)
        if problems:
            raise ConfigError(problems)

    def choose(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = distribution(logits, self.temperature, self.top_k, self.top_p)  # (B, V)
        u = rng.random((p.shape[0], 1))
        cum = np.cumsum(p, axis=-1)
        ids = (cum <= u * cum[:, -1:]).sum(axis=-1)  # inverse-CDF draw, one per row: the first id with cum > u
        return np.minimum(ids, p.shape[-1] - 1)


def make_sampler(strategy: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Argmax | Sample:
    if strategy == "argmax":
        return Argmax()
    if strategy == "sample":
        return Sample(temperature, top_k, top_p)
    raise ConfigError(f"no sampler named {strategy!r} (expected sample or argmax; beam search is separate)")


StepFn = Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]  # ids (K,), state -> log-probs (K, V), state
ReorderFn = Callable[[Any, np.ndarray], Any]  # state, beam indices (K,) -> state


ObserveFn = Callable[[np.ndarray, np.ndarray, int], None]
"""Sees one step of a beam search: every candidate's total log probability (K*V,) (row-major over
(parent, token)) and their ranking, best first (K*V,); the first ``kept`` of the ranking survive."""


def beam_search(step: StepFn, reorder: ReorderFn, state: Any, first_logprobs: np.ndarray, beam_width: int,
                length: int, observe: ObserveFn | None = None) -> tuple[list[int], float]:
    r"""The most probable continuation of ``length`` tokens found with a beam of ``beam_width``.

    ``first_logprobs`` (V,) scores the first token; ``state`` is the model's state for one
    hypothesis, which ``reorder`` repeats and selects (it is called with indices of length
    K <= beam_width). Returns the token ids and their total log probability
    :math:`\sum_t \log p(y_t \mid y_{<t}, \text{prime})`.

    Each step scores every extension of every kept hypothesis, K x V candidates, and keeps the
    ``beam_width`` best (ties: the lower parent, then the lower token id). ``observe``, where
    given, is shown every step's candidates and ranking (:data:`ObserveFn`; the first step's
    candidates are the V extensions of the prime alone); without it nothing extra is computed.
    """
    if length == 0:
        return [], 0.0
    v = first_logprobs.shape[-1]
    k = min(beam_width, v)
    ranked = np.argsort(-first_logprobs, kind="stable")  # (V,)
    top = ranked[:k]
    if observe is not None:
        observe(np.asarray(first_logprobs, dtype=np.float64), ranked, k)
    scores = first_logprobs[top].astype(np.float64)  # (K,)
    seqs = top[:, None]  # (K, 1)
    state = reorder(state, np.zeros(k, dtype=np.int64))
    for _ in range(length - 1):
        logprobs, state = step(seqs[:, -1], state)  # (K, V)
        total = (scores[:, None] + logprobs).ravel()  # (K*V,)
        ranked = np.argsort(-total, kind="stable")  # (K*V,)
        best = ranked[: min(beam_width, total.size)]
        if observe is not None:
            observe(total, ranked, len(best))
        parent, token = best // v, best % v
        scores = total[best]
        seqs = np.concatenate([seqs[parent], token[:, None]], axis=1)
        state = reorder(state, parent)
    i = int(np.argmax(scores))
    return seqs[i].tolist(), float(scores[i])


@dataclass
class BeamNode:
    r"""One hypothesis of a beam search step: the kept hypothesis it extends (its index in the step
    before; 0, the prime, at the first step), the token it adds, its total log probability and
    the token's own :math:`\log p(y_t \mid y_{<t})`."""

    parent: int
    token: int
    score: float
    logprob: float


@dataclass
class BeamStep:
    """One step of a beam search: the hypotheses kept (best first) and the best of those pruned."""

    kept: list[BeamNode]
    pruned: list[BeamNode]


@dataclass
class BeamTree:
    """A beam search as it ran: ``steps[t]`` the hypotheses of length t + 1; ``best[t]`` the index in
    ``steps[t].kept`` of the best final hypothesis' prefix of length t + 1; ``tokens`` and ``score``
    what :func:`beam_search` returns."""

    steps: list[BeamStep]
    best: list[int]
    tokens: list[int]
    score: float


def beam_search_tree(step: StepFn, reorder: ReorderFn, state: Any, first_logprobs: np.ndarray, beam_width: int,
                     length: int, pruned: int = 3) -> BeamTree:
    """:func:`beam_search` (the same arguments, the same result) with its tree: at every step the kept
    hypotheses and the ``pruned`` best candidates that fell out of the beam."""
    v = first_logprobs.shape[-1]
    steps: list[BeamStep] = []

    def observe(total: np.ndarray, ranked: np.ndarray, kept: int) -> None:
        before = [0.0] if not steps else [n.score for n in steps[-1].kept]

        def node(i: int) -> BeamNode:
            parent, token = divmod(int(i), v)
            return BeamNode(parent, token, float(total[i]), float(total[i] - before[parent]))

        steps.append(BeamStep([node(i) for i in ranked[:kept]], [node(i) for i in ranked[kept:kept + pruned]]))

    tokens, score = beam_search(step, reorder, state, first_logprobs, beam_width, length, observe)
    best = [0] * len(steps)  # beam_search's best is the last step's first (the kept are sorted)
    for t in range(len(steps) - 1, 0, -1):
        best[t - 1] = steps[t].kept[best[t]].parent
    return BeamTree(steps, best, tokens, score)
