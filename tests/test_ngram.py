"""The n-gram models: against counts done by hand, against NLTK and an independent
dict-based Kneser-Ney, then the contract (distributions, errors, persistence, sampling)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest

from rnnlab.data.vocab import Vocab
from rnnlab.decoding import Argmax, Sample
from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError
from rnnlab.metrics import token_metrics
from rnnlab.ngram import (
    FALLBACK_DISCOUNTS,
    SMOOTHINGS,
    NGramLM,
    NotFittedError,
    bigram_counts,
    estimate_discounts,
    load_ngram,
    ngram_table,
    pair_asymmetry,
    unigram_histogram,
)

A, B, C, D = 0, 1, 2, 3
TINY = np.array([A, B, C, A, B])  # "abcab"; V = 4, so d is a symbol never seen in training
SMOOTHED = ("add-k", "witten-bell", "kneser-ney")


def markov_text(n: int, v: int, seed: int) -> np.ndarray:
    """A seeded order-2 Markov chain over v symbols: repeated n-grams at every order, some never seen."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(v, 0.3), size=(v, v))  # (V, V, V): p(x_t | x_{t-2}, x_{t-1})
    x = [0, 1]
    for _ in range(n - 2):
        x.append(int(rng.choice(v, p=trans[x[-2], x[-1]])))
    return np.array(x[:n], dtype=np.int64)


def p_of(lm: NGramLM, context: list[int], w: int) -> float:
    return float(lm.next_distribution(np.array(context, dtype=np.int64))[w])


# Against counts done by hand ----------------------------------------------------------
# "abcab": unigram counts a 2, b 2, c 1, d 0 (N = 5); bigrams ab 2, bc 1, ca 1, so the
# context totals are A(a) = 2, A(b) = 1 (the last b is followed by nothing), A(c) = 1, A(d) = 0.


def test_mle_by_hand():
    lm = NGramLM(order=2, smoothing="mle").fit(TINY, vocab_size=4)
    assert p_of(lm, [A], B) == 2 / 2  # c(ab) / A(a)
    assert p_of(lm, [B], C) == 1 / 1
    assert p_of(lm, [B], A) == 0.0  # "ba" never occurs
    assert p_of(lm, [], A) == 2 / 5  # the first target's shorter context: the unigram c(a) / N
    assert lm.next_distribution(np.array([D])).tolist() == [0.0] * 4  # A(d) = 0: undefined, all zero
    assert np.allclose(np.exp(lm.log_prob([A, B, C, A])), [1.0, 1.0, 1.0])
    assert lm.score([A, B, C, A])["loss"] == 0.0


def test_add_k_by_hand():
    lm = NGramLM(order=2, smoothing="add-k", k=1.0).fit(TINY, vocab_size=4)
    assert p_of(lm, [A], B) == pytest.approx((2 + 1) / (2 + 4))  # (c(ab) + k) / (A(a) + k V) = 1/2
    assert p_of(lm, [A], A) == pytest.approx((0 + 1) / (2 + 4))
    assert p_of(lm, [B], C) == pytest.approx((1 + 1) / (1 + 4))
    assert p_of(lm, [D], C) == pytest.approx(1 / 4)  # unseen context: uniform
    half = NGramLM(order=2, smoothing="add-k", k=0.5).fit(TINY, vocab_size=4)
    assert p_of(half, [A], B) == pytest.approx((2 + 0.5) / (2 + 0.5 * 4))  # 0.625
    assert p_of(half, [], C) == pytest.approx((1 + 0.5) / (5 + 0.5 * 4))  # unigram level


def test_witten_bell_by_hand():
    lm = NGramLM(order=2, smoothing="witten-bell").fit(TINY, vocab_size=4)
    # p1(w) = (c(w) + N1+(.) / V) / (N + N1+(.)), N1+(.) = 3 distinct symbols seen, N = 5
    p1 = {A: (2 + 3 / 4) / 8, B: (2 + 3 / 4) / 8, C: (1 + 3 / 4) / 8, D: (0 + 3 / 4) / 8}
    assert p1[A] == 0.34375 and p1[D] == 0.09375
    for w in (A, B, C, D):
        assert p_of(lm, [], w) == pytest.approx(p1[w])
    # p2(b | a) = (c(ab) + N1+(a.) p1(b)) / (A(a) + N1+(a.)) = (2 + 1 * 0.34375) / (2 + 1)
    assert p_of(lm, [A], B) == pytest.approx(2.34375 / 3)
    assert p_of(lm, [A], A) == pytest.approx(0.34375 / 3)
    assert p_of(lm, [B], C) == pytest.approx((1 + 1 * p1[C]) / (1 + 1))
    assert p_of(lm, [D], D) == pytest.approx(p1[D])  # unseen context backs off whole


def test_kneser_ney_by_hand():
    # Estimated discounts need c1, c2, c3 > 0; "abcab" has no count 3 at any order, so
    # every order falls back to KenLM's (0.5, 1, 1.5), which the arithmetic below uses.
    lm = NGramLM(order=2).fit(TINY, vocab_size=4)
    assert lm.discount_fallback_.tolist() == [True, True]
    assert lm.discounts_.tolist() == [list(FALLBACK_DISCOUNTS)] * 2
    # Continuation counts of the unigrams, distinct tokens before each: a after c and after
    # the start of the stream (2), b after a only (1), c after b (1); A_1 = 4. Raw at order 2.
    assert lm.counts_[0].tolist() == [2, 1, 1]
    assert lm.counts_[1].tolist() == [2, 1, 1]  # ab, bc, ca
    # gamma_1 = (D1 N1 + D2 N2) / A_1 = (0.5 * 2 + 1.0 * 1) / 4 = 0.5
    p1 = {A: (2 - 1.0) / 4 + 0.5 / 4, B: (1 - 0.5) / 4 + 0.5 / 4, C: (1 - 0.5) / 4 + 0.5 / 4, D: 0.5 / 4}
    assert (p1[A], p1[B], p1[D]) == (0.375, 0.25, 0.125)
    for w in (A, B, C, D):
        assert p_of(lm, [], w) == pytest.approx(p1[w])
    # context a: A(a) = 2, one bigram with count 2: gamma = 1.0 * 1 / 2 = 0.5
    assert p_of(lm, [A], B) == pytest.approx((2 - 1.0) / 2 + 0.5 * p1[B])  # 0.625
    assert p_of(lm, [A], A) == pytest.approx(0.5 * p1[A])  # 0.1875
    # context b: A(b) = 1, one bigram with count 1: gamma = 0.5 * 1 / 1
    assert p_of(lm, [B], C) == pytest.approx((1 - 0.5) / 1 + 0.5 * p1[C])
    assert p_of(lm, [D], B) == pytest.approx(p1[B])  # unseen context: the lower order whole
    # fixed discounts are used as given
    fixed = NGramLM(order=2, discounts=(0.25, 1.0, 1.5)).fit(TINY, vocab_size=4)
    gamma1 = (0.25 * 2 + 1.0 * 1) / 4
    assert p_of(fixed, [], B) == pytest.approx((1 - 0.25) / 4 + gamma1 / 4)


def test_discounts_by_hand():
    # c1 = 6, c2 = 2, c3 = 2, c4 = 1: Y = 6 / (6 + 2 * 2) = 0.6,
    # D1 = 1 - 2 * 0.6 * 2/6 = 0.6, D2 = 2 - 3 * 0.6 * 2/2 = 0.2, D3+ = 3 - 4 * 0.6 * 1/2 = 1.8
    d, fell_back = estimate_discounts(np.array([1] * 6 + [2] * 2 + [3] * 2 + [4, 9]))
    assert d == pytest.approx([0.6, 0.2, 1.8]) and not fell_back
    d, fell_back = estimate_discounts(np.array([1, 1, 2]))  # no count 3: undefined
    assert d.tolist() == list(FALLBACK_DISCOUNTS) and fell_back
    # a fitted model estimates each order from its own (continuation) counts
    lm = NGramLM(order=4).fit(markov_text(400, 4, seed=1), vocab_size=5)
    for m in range(4):
        assert lm.discounts_[m] == pytest.approx(estimate_discounts(lm.counts_[m])[0])
    assert not lm.discount_fallback_.all()


# Against independent implementations --------------------------------------------------


def kn_reference(train: list[int], v: int, n: int, boundary: int | None = None):
    """Interpolated modified Kneser-Ney written again from the equations, with dicts and recursion.

    With a ``boundary`` id, KenLM's sentences: a gram holding it anywhere but first or last
    is not counted, a gram starting with it keeps its raw count, a context starts no
    earlier than its last boundary."""

    def inside(g: tuple) -> bool:
        return boundary is None or boundary not in g[1:-1]

    raw = {m: Counter(g for i in range(len(train) - m + 1) if inside(g := tuple(train[i:i + m])))
           for m in range(1, n + 1)}
    padded = ["<s>", *train]
    adj: dict[int, Counter] = {n: raw[n]}
    for m in range(1, n):  # distinct left neighbours, the start of the stream counting as one
        left: dict[tuple, set] = defaultdict(set)
        for i in range(len(padded) - m):
            g = tuple(padded[i:i + m + 1])
            if inside(g):
                left[g[1:]].add(g[0])
        adj[m] = Counter({g: c if (m >= 2 and g[0] == boundary) else len(left[g]) for g, c in raw[m].items()})
    disc, by_ctx = {}, {}
    for m in range(1, n + 1):
        cc = Counter(adj[m].values())  # count-of-counts: cc[k] m-grams seen exactly k times
        disc[m] = [0.5, 1.0, 1.5]
        if cc[1] and cc[2] and cc[3]:
            y = cc[1] / (cc[1] + 2 * cc[2])
            d = [j - (j + 1) * y * cc[j + 1] / cc[j] for j in (1, 2, 3)]
            if all(0 < d[j - 1] <= j for j in (1, 2, 3)):
                disc[m] = d
        by_ctx[m] = defaultdict(list)
        for g, c in adj[m].items():
            by_ctx[m][g[:-1]].append(c)

    def prob(w: int, h: tuple) -> float:
        if boundary in h:
            h = h[len(h) - 1 - h[::-1].index(boundary):]  # from the last boundary on
        m = len(h) + 1
        lower = prob(w, h[1:]) if h else 1.0 / v
        cs = by_ctx[m].get(h, [])
        total = sum(cs)
        if total == 0:
            return lower
        d1, d2, d3 = disc[m]
        gamma = (d1 * cs.count(1) + d2 * cs.count(2) + d3 * sum(c >= 3 for c in cs)) / total
        c = adj[m].get((*h, w), 0)
        dc = 0.0 if c == 0 else (d1 if c == 1 else d2 if c == 2 else d3)
        return max(c - dc, 0.0) / total + gamma * lower

    return prob


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kneser_ney_against_a_dict_reference(order):
    train, test = markov_text(500, 4, seed=2), markov_text(120, 5, seed=3)  # test holds symbol 4, unseen
    lm = NGramLM(order=order).fit(train, vocab_size=5)
    ref = kn_reference(train.tolist(), 5, order)
    expected = [math.log(ref(int(test[t]), tuple(test[max(0, t - order + 1):t].tolist()))) for t in range(1, len(test))]
    assert np.allclose(lm.log_prob(test), expected, rtol=0, atol=1e-12)


def _nltk_fit(lm, order: int, syms: list[str]):
    from nltk.util import everygrams

    lm.fit([list(everygrams(syms, max_len=order))], vocabulary_text=syms)  # one "sentence", no padding: a stream
    return lm


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("smoothing", ["mle", "add-k", "add-k-0.3", "witten-bell"])
def test_against_nltk(smoothing, order):
    """NLTK 3.x ``nltk.lm`` where its definitions coincide with ours.

    Trained on one unpadded "sentence" of everygrams, NLTK counts exactly the m-grams of
    our stream, and its context total ``counts[h].N()`` is our A(h). Its vocabulary adds
    ``<UNK>``, so our model gets V = seen symbols + 1, the last id standing for ``<UNK>``
    (the test text uses it). ``MLE`` and ``Lidstone``/``Laplace`` then coincide with ours as
    they are. ``WittenBellInterpolated`` stops at the maximum-likelihood unigram, where we
    go on to the uniform distribution, so its unigram is replaced by Witten-Bell's own rule
    one level further; the recursion and every higher order stay NLTK's. (NLTK's
    ``KneserNeyInterpolated`` differs in kind -- one discount, no discount or uniform at the
    unigram, no stream start -- and is checked against the dict reference above instead.)
    """
    pytest.importorskip("nltk")
    from nltk.lm import MLE, Laplace, Lidstone
    from nltk.lm.models import InterpolatedLanguageModel
    from nltk.lm.smoothing import WittenBell

    class WittenBellToUniform(WittenBell):
        def unigram_score(self, word):
            uni = self.counts.unigrams
            n_plus = sum(1 for c in uni.values() if c > 0)
            return (uni[word] + n_plus / len(self.vocab)) / (uni.N() + n_plus)

    letters = "abcde"
    train = markov_text(200, 5, seed=4)
    test = np.concatenate([markov_text(60, 5, seed=5), [5, 0, 1, 5, 2]])  # id 5 = <UNK> ("z" for NLTK)
    syms = [letters[i] for i in train]
    if smoothing == "mle":
        ref, ours = MLE(order), NGramLM(order, "mle")
    elif smoothing == "add-k":
        ref, ours = Laplace(order), NGramLM(order, "add-k", k=1.0)
    elif smoothing == "add-k-0.3":
        ref, ours = Lidstone(0.3, order), NGramLM(order, "add-k", k=0.3)
    else:
        ref, ours = InterpolatedLanguageModel(WittenBellToUniform, order), NGramLM(order, "witten-bell")
    _nltk_fit(ref, order, syms)
    assert len(ref.vocab) == 6
    ours.fit(train, vocab_size=6)
    tsyms = [(letters + "z")[i] for i in test]
    expected = [ref.score(tsyms[t], tuple(tsyms[max(0, t - order + 1):t]) or None) for t in range(1, len(test))]
    got = np.exp(ours.log_prob(test))
    assert np.allclose(got, expected, rtol=0, atol=1e-12)
    if smoothing == "mle":
        assert (got == 0).any()  # the text does hold n-grams MLE never saw


# The contract: every distribution sums to one -----------------------------------------


def seen_followed(train: np.ndarray, h: tuple) -> bool:
    """Whether h occurs in train with a token after it (the MLE is defined there)."""
    k = len(h)
    return any(tuple(train[i:i + k].tolist()) == h for i in range(len(train) - k))


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3, 4, 6])
def test_every_distribution_sums_to_one(smoothing, order):
    train = markov_text(300, 4, seed=6)  # symbol 4 of V = 5 is never seen
    lm = NGramLM(order=order, smoothing=smoothing).fit(train, vocab_size=5)
    rng = np.random.default_rng(7)
    for length in range(order + 2):  # shorter, equal and longer contexts than n - 1
        ctx = rng.integers(0, 5, size=(20, length))
        ctx[:5] = np.stack([train[s:s + length] for s in rng.integers(0, 200, 5)])  # some seen ones
        p = lm.next_distribution(ctx)  # (20, V)
        assert p.shape == (20, 5)
        if smoothing == "mle":
            for row, h in zip(p, ctx):
                h = tuple(h[len(h) - min(len(h), order - 1):].tolist())
                assert row.sum() == pytest.approx(1.0 if seen_followed(train, h) else 0.0, abs=1e-12)
        else:
            assert np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
            assert (p > 0).all()  # no context, no symbol, gets zero


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_scoring_agrees_with_next_distribution(smoothing):
    train, test = markov_text(300, 4, seed=8), markov_text(40, 5, seed=9)
    lm = NGramLM(order=3, smoothing=smoothing).fit(train, vocab_size=5)
    lp = lm.log_prob(test, include_first=True)
    with np.errstate(divide="ignore"):
        one_by_one = [np.log(lm.next_distribution(test[:t])[test[t]]) for t in range(len(test))]
    assert np.allclose(lp, one_by_one, rtol=0, atol=1e-12)  # -inf (MLE) matches -inf
    assert np.array_equal(lm.log_prob(test), lp[1:])


def test_unseen_contexts_and_symbols_are_finite_except_under_mle():
    train = markov_text(300, 4, seed=10)
    test = np.array([4, 4, 0, 4, 1, 2, 4, 3, 3, 3, 3, 0])  # symbol 4 never seen: unseen contexts and n-grams
    for smoothing in SMOOTHED:
        s = NGramLM(order=4, smoothing=smoothing).fit(train, vocab_size=5).score(test)
        assert math.isfinite(s["loss"]) and s["loss"] > 0 and s["tokens"] == len(test) - 1
    mle = NGramLM(order=4, smoothing="mle").fit(train, vocab_size=5)
    lp = mle.log_prob(test)
    assert lp[0] == -math.inf  # p(4 | 4): neither context nor symbol seen
    s = mle.score(test)
    assert s["loss"] == math.inf and s["bits"] == math.inf
    assert token_metrics(s["loss"], "char")["bpc"] == math.inf


def test_score_reports_what_evaluate_reports():
    train = markov_text(300, 4, seed=11)
    lm = NGramLM(order=3).fit(train, vocab_size=4)
    s = lm.score(train[:50])
    lp = lm.log_prob(train[:50])
    assert set(s) == {"loss", "bits", "tokens"} and s["tokens"] == 49
    assert s["loss"] == pytest.approx(-lp.mean()) and s["bits"] == pytest.approx(s["loss"] / math.log(2))
    # a model of every order fits its own training text better as the order grows (it memorises)
    losses = [NGramLM(order=n).fit(train, vocab_size=4).score(train)["loss"] for n in (1, 2, 4)]
    assert losses[0] > losses[1] > losses[2]


@pytest.mark.parametrize("order", range(1, 11))
def test_orders_one_to_ten(order):
    train, test = markov_text(250, 5, seed=12), markov_text(60, 6, seed=13)
    lm = NGramLM(order=order).fit(train, vocab_size=6)
    assert len(lm.keys_) == order == len(lm.counts_) and lm.discounts_.shape == (order, 3)
    assert lm.nbytes_ > 0 and math.isfinite(lm.score(test)["loss"])
    p = lm.next_distribution(test[:20])
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()


def test_order_longer_than_the_training_text():
    lm = NGramLM(order=8).fit([0, 1, 2], vocab_size=3)
    assert len(lm.keys_[7]) == 0
    assert np.isfinite(lm.log_prob([0, 1, 2, 0, 1, 2, 0, 1, 2])).all()
    assert lm.next_distribution([0, 1, 2, 0, 1, 2, 0]).sum() == pytest.approx(1.0)


def test_large_vocabularies_need_no_wide_keys():
    # V**n overflows 64 bits here (1e6 ** 4); the rank encoding does not care. MLE does not
    # depend on V, so relabelled ids must give the same log probabilities.
    train, test = markov_text(300, 4, seed=14), markov_text(50, 4, seed=15)
    small = NGramLM(order=4, smoothing="mle").fit(train, vocab_size=4)
    big = NGramLM(order=4, smoothing="mle").fit(train * 333_331 + 3, vocab_size=10**6)
    assert np.array_equal(small.log_prob(test), big.log_prob(test * 333_331 + 3))


# The estimator contract, errors -------------------------------------------------------


def test_init_stores_hyperparameters_unchanged_and_validates_nothing():
    odd = object()
    lm = NGramLM(order=0, smoothing="nope", k=-1, discounts=odd, boundary="x")
    assert lm.get_params() == {"order": 0, "smoothing": "nope", "k": -1, "discounts": odd, "boundary": "x"}
    assert not hasattr(lm, "vocab_size_")
    assert lm.set_params(order=3, smoothing="mle").order == 3
    with pytest.raises(ConfigError, match="unknown NGramLM parameter"):
        lm.set_params(alpha=1)
    assert NGramLM().fit(TINY, 4) is not None and isinstance(NGramLM().fit(TINY, 4), NGramLM)


@pytest.mark.parametrize("params, message", [
    ({"order": 0}, "order must be an integer from 1 to 20, got 0"),
    ({"order": 21}, "order must be an integer from 1 to 20, got 21"),
    ({"order": 2.5}, "order must be an integer"),
    ({"smoothing": "good-turing"}, "smoothing must be one of mle, add-k, witten-bell, kneser-ney, got 'good-turing'"),
    ({"smoothing": "add-k", "k": 0}, "k must be a positive number, got 0"),
    ({"discounts": (0.5, 2.5, 1.0)}, "0 < D1 <= 1, 0 < D2 <= 2"),
    ({"discounts": (0.5, 1.0)}, "discounts must be 3 numbers"),
    ({"smoothing": "mle", "discounts": (0.5, 1.0, 1.5)}, "discounts apply to kneser-ney smoothing only"),
    ({"boundary": -1}, "boundary must be None or a token id (an integer >= 0), got -1"),
    ({"boundary": "\n"}, "boundary must be None or a token id"),
    ({"boundary": 9}, "boundary must be a token id below vocab_size 4, got 9"),
])
def test_bad_hyperparameters_raise_config_error_at_fit(params, message):
    lm = NGramLM(**params)
    with pytest.raises(ConfigError) as e:
        lm.fit(TINY, vocab_size=4)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as e:
        NGramLM(order=0, smoothing="x", k=0).fit(TINY, vocab_size=0)
    assert len(e.value.problems) == 4


@pytest.mark.parametrize("ids, vocab_size, message", [
    ([], 4, "the training ids hold 0 token(s); at least 1 needed"),
    ([0, 1, 4], 4, "id 4, outside the vocabulary 0..3"),
    ([0, -1], 4, "id -1, outside the vocabulary 0..3"),
    ([0.5, 1.0], 4, "must be integer token ids, got dtype float64"),
    ([[0, 1], [1, 0]], 4, "1-D sequence of token ids"),
])
def test_bad_training_ids_raise_data_error(ids, vocab_size, message):
    with pytest.raises(DataError) as e:
        NGramLM().fit(ids, vocab_size)
    assert message in str(e.value)


def test_bad_input_at_scoring_time():
    lm = NGramLM(order=3).fit(TINY, vocab_size=4)
    with pytest.raises(DataError, match="at least 2 needed"):
        lm.score([1])
    with pytest.raises(DataError, match="id 9, outside"):
        lm.log_prob([0, 9])
    with pytest.raises(DataError, match="outside"):
        lm.next_distribution([0, 4])
    assert lm.log_prob([2]).shape == (0,)


def test_unfitted_use_raises_not_fitted_error(tmp_path):
    lm = NGramLM()
    for call in (lambda: lm.log_prob([0, 1]), lambda: lm.score([0, 1]), lambda: lm.next_distribution([0]),
                 lambda: lm.generate([0], 3), lambda: lm.beam([0], 3), lambda: lm.save(tmp_path / "m.npz")):
        with pytest.raises(NotFittedError, match="not fitted yet: call fit"):
            call()
    assert issubclass(NotFittedError, RnnlabError) and issubclass(NotFittedError, ValueError)


@pytest.mark.parametrize("order", [3, 5])
def test_sentence_boundaries_against_a_dict_reference(order):
    train, test = markov_text(600, 4, seed=4), markov_text(150, 5, seed=5)  # id 0 is the boundary
    lm = NGramLM(order=order, boundary=0).fit(train, vocab_size=5)
    ref = kn_reference(train.tolist(), 5, order, boundary=0)
    expected = [math.log(ref(int(test[t]), tuple(test[max(0, t - order + 1):t].tolist()))) for t in range(1, len(test))]
    assert np.allclose(lm.log_prob(test), expected, rtol=0, atol=1e-12)
    assert not np.allclose(NGramLM(order=order).fit(train, vocab_size=5).log_prob(test), expected)


def test_nothing_before_a_boundary_matters():
    train = markov_text(800, 4, seed=6)
    # two contexts seen in training that differ only before a boundary (id 0): "x y 0 z"
    seen = {tuple(train[i:i + 4].tolist()) for i in range(len(train) - 4) if train[i + 2] == 0 and 0 not in train[i:i + 2]}
    first = min(seen)
    second = next(c for c in sorted(seen) if c[2:] == first[2:] and c != first)
    lm = NGramLM(order=5, boundary=0).fit(train, vocab_size=4)
    after = lm.next_distribution(np.array(first[2:]))
    for before in (first, second):
        assert np.allclose(lm.next_distribution(np.array(before)), after, rtol=0, atol=1e-15)
    stream = NGramLM(order=5).fit(train, vocab_size=4)  # without the boundary the far context counts
    assert not np.allclose(stream.next_distribution(np.array(first)), stream.next_distribution(np.array(second)))
    with pytest.raises(ConfigError, match="boundary must be a token id below vocab_size 4"):
        NGramLM(boundary=4).fit(train, vocab_size=4)


# Persistence ---------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_save_load_round_trip(tmp_path, smoothing):
    vocab = Vocab.from_text("abcde")
    train, test = markov_text(300, 4, seed=16), markov_text(60, 5, seed=17)
    lm = NGramLM(order=4, smoothing=smoothing, k=0.5, boundary=1).fit(train, vocab_size=5)
    path = tmp_path / "model.npz"
    lm.save(path, vocab=vocab)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind
    back, vocab_back = load_ngram(path)
    assert vocab_back == vocab and back.get_params() == lm.get_params()
    assert np.array_equal(back.log_prob(test), lm.log_prob(test))
    assert np.array_equal(back.next_distribution(test[:7]), lm.next_distribution(test[:7]))
    assert back.nbytes_ == lm.nbytes_ and back.n_tokens_ == 300
    lm.save(tmp_path / "bare.npz")
    assert NGramLM.load(tmp_path / "bare.npz").score(test) == lm.score(test)
    assert load_ngram(tmp_path / "bare.npz")[1] is None


def test_fixed_discounts_round_trip(tmp_path):
    lm = NGramLM(order=3, discounts=np.array([0.3, 0.9, 1.2])).fit(markov_text(100, 3, seed=18), vocab_size=3)
    lm.save(tmp_path / "m.npz")
    back = NGramLM.load(tmp_path / "m.npz")
    assert back.discounts == [0.3, 0.9, 1.2] and np.array_equal(back.discounts_, lm.discounts_)


def test_wrong_and_corrupt_files_are_refused(tmp_path):
    lm = NGramLM(order=3).fit(markov_text(100, 3, seed=19), vocab_size=3)
    good = tmp_path / "good.npz"
    lm.save(good)
    raw = good.read_bytes()
    cases = {
        "missing.npz": None,
        "text.npz": b"hello, not a model\n",
        "pickle.npz": b"\x80\x04\x95" + b"\x00" * 20,
        "truncated.npz": raw[: len(raw) // 2],
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))  # a valid npz, but not ours
    arrays = dict(np.load(good, allow_pickle=False))
    arrays["keys_2"] = arrays["keys_2"][::-1].copy()  # tables tampered with
    np.savez(tmp_path / "tampered.npz", **arrays)
    for name in [*cases, "other.npz", "tampered.npz"]:
        with pytest.raises(CheckpointError) as e:
            NGramLM.load(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg, msg


# Sampling ------------------------------------------------------------------------------


def test_argmax_generation_and_beam_follow_the_counts():
    abc = np.array([0, 1, 2] * 10)
    lm = NGramLM(order=3).fit(abc, vocab_size=4)
    out = lm.generate([0, 1], 6, sampler=Argmax())
    assert out.tolist() == [[2, 0, 1, 2, 0, 1]]
    seq, logp = lm.beam([0, 1], 4, beam_width=3)
    assert seq == [2, 0, 1, 2]
    assert logp == pytest.approx(lm.log_prob([0, 1, 2, 0, 1, 2])[1:].sum())


def test_sampling_uses_the_shared_samplers():
    train = markov_text(300, 4, seed=20)
    lm = NGramLM(order=3).fit(train, vocab_size=5)
    a = lm.generate([0, 1], 30, sampler=Sample(temperature=0.8), rng=np.random.default_rng(3), num_samples=4)
    b = lm.generate([0, 1], 30, sampler=Sample(temperature=0.8), rng=np.random.default_rng(3), num_samples=4)
    assert a.shape == (4, 30) and np.array_equal(a, b)
    top1 = lm.generate([0, 1], 20, sampler=Sample(top_k=1), rng=np.random.default_rng(0))
    assert np.array_equal(top1, lm.generate([0, 1], 20, sampler=Argmax()))
    # one step from a fixed context, 4000 times: the frequencies are the model's distribution
    draws = lm.generate([2, 3], 1, rng=np.random.default_rng(1), num_samples=4000)[:, 0]
    freq = np.bincount(draws, minlength=5) / 4000
    assert np.abs(freq - lm.next_distribution([2, 3])).max() < 0.03
    assert lm.generate([], 5, rng=np.random.default_rng(0)).shape == (1, 5)  # an empty prime is fine


def test_mle_generates_only_seen_ngrams_and_stops_honestly():
    base = markov_text(300, 4, seed=21)
    train = np.concatenate([base, base[:2]])  # wraps around: every bigram context is followed by something
    lm = NGramLM(order=3, smoothing="mle").fit(train, vocab_size=4)
    seen = set(zip(train[:-2].tolist(), train[1:-1].tolist(), train[2:].tolist()))
    out = lm.generate(train[:2], 200, rng=np.random.default_rng(2))[0]
    path = [*train[:2].tolist(), *out.tolist()]
    assert all(tuple(path[i:i + 3]) in seen for i in range(len(path) - 2))
    dead_end = NGramLM(order=2, smoothing="mle").fit([0, 1, 2, 3], vocab_size=4)  # 3 is never followed
    with pytest.raises(DataError, match=r"no next token after context \[3\]"):
        dead_end.generate([2], 3, sampler=Argmax())


# The lecture's questions ----------------------------------------------------------------


def test_ngram_table_by_hand():
    rows = ngram_table([0, 1, 0, 1, 1], vocab_size=2, max_order=3)
    # unigrams 0, 1; bigrams 01 (2), 10, 11; trigrams 010, 101, 011
    assert [(r["n"], r["possible"], r["observed"], r["occurrences"], r["singletons"]) for r in rows] == [
        (1, 2, 2, 5, 0), (2, 4, 3, 4, 2), (3, 8, 3, 3, 3)]
    big = ngram_table(np.arange(50) % 7, vocab_size=65, max_order=12)
    assert big[-1]["possible"] == 65**12 and big[-1]["observed"] == 7


def test_pair_asymmetry_finds_order_and_dependence():
    vocab = Vocab.from_text("abc")
    ids = vocab.encode("abc" * 10 + "a")  # pairs ab, bc, ca 10 times each; their reverses never
    out = pair_asymmetry(ids, vocab, top=9)
    assert out["pairs"] == 30
    assert {(r["a"], r["b"], r["count_ab"]) for r in out["frequent"]} == {("a", "b", 10), ("b", "c", 10), ("c", "a", 10)}
    asym = out["asymmetric"]
    assert [(r["a"], r["b"]) for r in asym] == [("a", "b"), ("b", "c"), ("c", "a")]  # one row per unordered pair
    assert all(r["p_ab"] == pytest.approx(10 / 30) and r["p_ba"] == 0.0 for r in asym)
    dep = out["dependent"]
    assert len(dep) == 9  # V <= 1000: every pair is a candidate, seen or not
    # P(b, c) = 10/30 against P(b) P(c) = 10/31 * 10/31 (a, once more frequent, makes ab and ca differ less)
    assert (dep[0]["a"], dep[0]["b"]) == ("b", "c") and dep[0]["p_a_p_b"] == pytest.approx(10 / 31 * 10 / 31)
    assert {(r["a"], r["b"]) for r in dep[:3]} == {("a", "b"), ("b", "c"), ("c", "a")}
    aa = next(r for r in dep if (r["a"], r["b"]) == ("a", "a"))
    assert aa["p_ab"] == 0.0 and aa["pmi"] == -math.inf  # a is a third of the text, yet "aa" never occurs


def test_unigram_histogram_and_bigram_table_against_counter():
    ids = markov_text(3_000, 9, seed=4)
    uni = Counter(ids.tolist())
    ranked = sorted(uni, key=lambda s: (-uni[s], s))
    h = unigram_histogram(ids, vocab_size=12, top=5)  # ids 9..11 never occur
    assert h["ids"].tolist() == ranked[:5] and h["counts"].tolist() == [uni[s] for s in ranked[:5]]
    assert h["rest"] == sum(uni[s] for s in ranked[5:]) and h["rest_symbols"] == len(ranked) - 5
    assert h["total"] == len(ids) == h["counts"].sum() + h["rest"]
    assert unigram_histogram(ids, vocab_size=12, top=50)["ids"].tolist() == ranked  # unseen ids are no bars
    pairs = Counter(zip(ids[:-1].tolist(), ids[1:].tolist()))
    sym, table = bigram_counts(ids, vocab_size=12, top=4)
    assert sym.tolist() == ranked[:4] and table.shape == (4, 4)
    assert table.tolist() == [[pairs[(a, b)] for b in ranked[:4]] for a in ranked[:4]]


def test_pair_asymmetry_points_are_the_most_frequent_pairs():
    vocab = Vocab.from_text("abcd")
    text = "abcabdabcaab" * 20 + "dc"
    ids = vocab.encode(text)
    pairs = Counter(zip(text, text[1:]))
    uni = Counter(text)
    n = len(text)
    pts = pair_asymmetry(ids, vocab, top=3, points=5)["points"]
    ranked = sorted(pairs, key=lambda ab: (-pairs[ab], vocab.index[ab[0]], vocab.index[ab[1]]))[:5]
    assert list(zip(pts["a"], pts["b"])) == ranked
    for i, (a, b) in enumerate(ranked):
        assert pts["p_ab"][i] == pytest.approx(pairs[(a, b)] / (n - 1))
        assert pts["p_ba"][i] == pytest.approx(pairs[(b, a)] / (n - 1))
        assert pts["p_a_p_b"][i] == pytest.approx(uni[a] / n * uni[b] / n)
    assert "points" not in pair_asymmetry(ids, vocab, top=3)
    with pytest.raises(ConfigError, match="points"):
        pair_asymmetry(ids, vocab, top=3, points=-1)


# Layering ------------------------------------------------------------------------------


def test_the_module_imports_no_torch():
    code = "import sys, rnnlab.ngram; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("smoothing", ["mle", "add-k"])
def test_mle_and_add_k_with_sentences_back_off_to_the_context_after_the_boundary(smoothing):
    """An n-gram that spans a boundary is never counted: the order below it, whose context starts at the
    boundary, is the estimate (before: MLE gave its own training text probability 0, add-k 1/V)."""
    rng = np.random.default_rng(2)
    v, nl = 5, 4
    x = rng.integers(0, nl, size=300)
    x[rng.choice(300, size=40, replace=False)] = nl  # sentences of random length
    lm = NGramLM(order=3, smoothing=smoothing, k=0.5, boundary=nl).fit(x, v)
    assert np.isfinite(lm.log_prob(x)).all()  # every target of its own training text has probability > 0
    two = NGramLM(order=2, smoothing=smoothing, k=0.5, boundary=nl).fit(x, v)
    for a in range(nl):  # a context ending in the boundary: the order-2 estimate from the boundary alone
        np.testing.assert_allclose(lm.next_distribution([a, nl]), two.next_distribution([nl]), rtol=1e-12)
        assert abs(lm.next_distribution([a, nl]).sum() - 1) < 1e-12
    # scoring agrees with the next-token distributions, position by position
    lp = lm.log_prob(x)
    for t in range(2, 40):
        assert lp[t - 1] == pytest.approx(np.log(lm.next_distribution(x[t - 2:t])[x[t]]), rel=1e-12)
