"""Samplers: exact definitions, statistics, seeds; beam search against brute force."""

import itertools

import numpy as np
import pytest

from rnnlab.decoding import Argmax, Sample, beam_search, beam_search_tree, distribution, log_softmax, make_sampler
from rnnlab.errors import ConfigError

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 12)) * 2


def test_distribution_is_the_softmax_by_default():
    p = distribution(LOGITS)
    e = np.exp(LOGITS - LOGITS.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("tau", [0.3, 0.7, 1.5, 4.0])
def test_temperature_is_softmax_of_logits_over_tau(tau):
    p = distribution(LOGITS, temperature=tau)
    np.testing.assert_allclose(np.log(p), log_softmax(LOGITS / tau), atol=1e-12)


def test_temperature_sharpens_and_flattens():
    def entropy(p):
        return -(p * np.log(p)).sum(1)
    h = [entropy(distribution(LOGITS, temperature=t)) for t in (0.25, 0.5, 1.0, 2.0, 8.0)]
    for lo, hi in zip(h, h[1:]):
        assert (lo < hi).all()
    assert (h[-1] < np.log(12)).all()  # never beyond uniform


def test_top_k_keeps_exactly_the_k_largest():
    p = distribution(LOGITS, top_k=3)
    full = distribution(LOGITS)
    for row, frow in zip(p, full):
        kept = np.flatnonzero(row)
        assert set(kept) == set(np.argsort(-frow)[:3])
        np.testing.assert_allclose(row[kept], frow[kept] / frow[kept].sum())


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(distribution(logits, top_p=0.5), [[1, 0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(distribution(logits, top_p=0.79), [[0.625, 0.375, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(distribution(logits, top_p=0.81), [[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]],
                               atol=1e-12)
    np.testing.assert_allclose(distribution(logits, top_p=1.0), [[0.5, 0.3, 0.15, 0.05]], atol=1e-12)


def test_argmax_equals_top_k_one():
    rng = np.random.default_rng(1)
    greedy = Argmax().choose(LOGITS, rng)
    for _ in range(5):
        assert (Sample(top_k=1).choose(LOGITS, rng) == greedy).all()
    assert (greedy == LOGITS.argmax(1)).all()


def test_a_seeded_sample_repeats():
    s = Sample(temperature=0.9, top_p=0.95)
    a = [s.choose(LOGITS, np.random.default_rng(7)) for _ in range(2)]
    assert (a[0] == a[1]).all()
    draws = np.stack([s.choose(LOGITS, r) for r in [np.random.default_rng(7)] for _ in range(30)])
    assert len({tuple(d) for d in draws}) > 1  # and the stream itself is random


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.6}, {"top_k": 4}, {"top_p": 0.8}])
def test_sampled_frequencies_match_the_distribution(kw):
    """Pearson chi-square over 40,000 draws against the 0.999 quantile (Wilson-Hilferty)."""
    logits = LOGITS[:1]
    p = distribution(logits, **kw)[0]
    rng = np.random.default_rng(123)
    s = Sample(**kw)
    n = 40_000
    ids = s.choose(np.repeat(logits, n, axis=0), rng)
    counts = np.bincount(ids, minlength=12)
    assert counts[p == 0].sum() == 0  # never outside the kept set
    keep = p > 0
    expected = n * p[keep]
    chi2 = ((counts[keep] - expected) ** 2 / expected).sum()
    dof = keep.sum() - 1
    quantile = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < quantile


class _Zeros:
    """A generator whose every uniform draw is exactly 0 (the edge of [0, 1))."""

    def random(self, shape):
        return np.zeros(shape)


def test_a_zero_draw_never_picks_a_token_of_probability_zero():
    logits = np.array([[0.0, 5.0, 1.0], [-np.inf, -np.inf, 2.0]])
    assert Sample(top_k=1).choose(logits, _Zeros()).tolist() == [1, 2]
    assert Sample(top_p=0.5).choose(logits, _Zeros()).tolist() == [1, 2]
    assert Sample().choose(logits, _Zeros()).tolist() == [0, 2]  # token 0 has mass here: the first cell of the CDF


def test_make_sampler_rejects_bad_values():
    with pytest.raises(ConfigError):
        make_sampler("sample", temperature=0)
    with pytest.raises(ConfigError):
        make_sampler("nucleus")


# beam search on a tiny Markov model, where the best sequence can be found by brute force -----

V = 4
TRANS = np.log(np.random.default_rng(5).dirichlet(np.ones(V) * 0.5, size=V))  # (V, V) log P(next | cur)


def _step(tokens, state):
    return TRANS[tokens], state


def _reorder(state, idx):
    return state[idx] if state is not None else None


def test_beam_search_finds_the_most_probable_sequence():
    first = TRANS[0]
    length = 5
    best = max(itertools.product(range(V), repeat=length),
               key=lambda s: first[s[0]] + sum(TRANS[a, b] for a, b in zip(s, s[1:])))
    seq, score = beam_search(_step, _reorder, np.zeros(1), first, beam_width=V ** length, length=length)
    assert tuple(seq) == best
    np.testing.assert_allclose(score, first[best[0]] + sum(TRANS[a, b] for a, b in zip(best, best[1:])))


def test_beam_width_one_is_greedy():
    first = TRANS[2]
    seq, _ = beam_search(_step, _reorder, np.zeros(1), first, beam_width=1, length=6)
    greedy = [int(first.argmax())]
    for _ in range(5):
        greedy.append(int(TRANS[greedy[-1]].argmax()))
    assert seq == greedy


def _path_score(first, seq):
    return first[seq[0]] + sum(TRANS[a, b] for a, b in zip(seq, seq[1:]))


def _prefixes(tree, t, i):
    """The tokens of hypothesis ``i`` of step ``t``, read back through the parents."""
    out = []
    for s in range(t, -1, -1):
        node = tree.steps[s].kept[i]
        out.append(node.token)
        i = node.parent
    return out[::-1]


def test_a_beam_as_wide_as_every_sequence_keeps_them_all_in_order_and_finds_the_best():
    """Width V^L: every step keeps every prefix, sorted by its exact log probability; the tree's best
    path is the brute-force best sequence."""
    first, length = TRANS[1], 3
    tree = beam_search_tree(_step, _reorder, np.zeros(1), first, beam_width=V ** length, length=length)
    for t, step in enumerate(tree.steps):
        seqs = [tuple(_prefixes(tree, t, i)) for i in range(len(step.kept))]
        assert sorted(seqs) == list(itertools.product(range(V), repeat=t + 1))  # all of them, once each
        exact = [_path_score(first, s) for s in seqs]
        np.testing.assert_allclose([n.score for n in step.kept], exact, rtol=1e-12)
        assert np.all(np.diff(exact) <= 1e-12) and step.pruned == []  # best first
    best = max(itertools.product(range(V), repeat=length), key=lambda s: _path_score(first, s))
    assert tuple(tree.tokens) == best
    assert [tree.steps[t].kept[i].token for t, i in enumerate(tree.best)] == list(best)
    np.testing.assert_allclose(tree.score, _path_score(first, best), rtol=1e-12)


def test_the_tree_of_a_narrow_beam_is_the_search_beam_search_runs():
    first, width, length = TRANS[3], 2, 6
    tree = beam_search_tree(_step, _reorder, np.zeros(1), first, beam_width=width, length=length, pruned=3)
    seq, score = beam_search(_step, _reorder, np.zeros(1), first, beam_width=width, length=length)
    assert tree.tokens == seq and tree.score == score
    assert _prefixes(tree, length - 1, tree.best[-1]) == seq
    for t, step in enumerate(tree.steps):
        candidates = V if t == 0 else width * V
        assert len(step.kept) == width and len(step.pruned) == min(3, candidates - width)
        before = [0.0] if t == 0 else [n.score for n in tree.steps[t - 1].kept]
        prev_tok = None if t == 0 else [n.token for n in tree.steps[t - 1].kept]
        for n in step.kept + step.pruned:
            own = first[n.token] if t == 0 else TRANS[prev_tok[n.parent], n.token]
            np.testing.assert_allclose([n.logprob, n.score], [own, before[n.parent] + own], rtol=1e-12)
        # the pruned are the next best candidates: none beats a kept one
        assert min(n.score for n in step.kept) >= max(n.score for n in step.pruned)
        assert [n.score for n in step.pruned] == sorted((n.score for n in step.pruned), reverse=True)
    for t in range(1, length):  # the best path runs through parents
        assert tree.steps[t].kept[tree.best[t]].parent == tree.best[t - 1]
