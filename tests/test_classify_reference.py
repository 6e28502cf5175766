"""The names references of ``benchmarks/bench_classify_reference.py`` against brute force.

Its oracles are claimed to be bounds, over every classifier of the name alone, and its
Kneser-Ney classifier to score each name as one sentence of a per-class model: both are
checked here on small data where every labelling can be enumerated.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlab.ngram import NGramLM

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def ref():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("bench_classify_reference", BENCH / "bench_classify_reference.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


def _examples(seed: int) -> tuple[list[str], np.ndarray]:
    """12 copies of 5 names with 3 labels: names shared by several classes, classes of unequal size."""
    rng = np.random.default_rng(seed)
    names = [str(n) for n in rng.choice(["ab", "ba", "abc", "ca", "bb"], size=12)]
    y = rng.choice(3, size=12, p=[0.6, 0.3, 0.1])
    y[:3] = [0, 1, 2]  # every class present
    return names, y


@pytest.mark.parametrize("seed", range(8))
def test_the_oracles_are_the_best_labelling_of_the_names(ref, seed):
    names, y = _examples(seed)
    distinct = sorted(set(names))
    best_acc = best_bal = 0.0
    for labels in itertools.product(range(3), repeat=len(distinct)):  # every function name -> label
        pick = dict(zip(distinct, labels))
        acc, bal = ref.scores(y, np.array([pick[n] for n in names]))
        best_acc, best_bal = max(best_acc, acc), max(best_bal, bal)
    acc, _ = ref.scores(y, ref.ceiling(names, y))
    _, bal = ref.scores(y, ref.balanced_ceiling(names, y))
    assert acc == pytest.approx(best_acc)
    assert bal == pytest.approx(best_bal)


def test_the_balanced_oracle_gives_a_shared_name_the_rarer_class(ref):
    # "x" is 3 copies of class 0 (of 10) and 1 of class 1 (of 2): 1/2 > 3/10, so class 1
    names = ["x"] * 4 + ["a"] * 7 + ["b"]
    y = np.array([0, 0, 0, 1] + [0] * 7 + [1])
    assert ref.ceiling(names, y)[0] == 0
    assert ref.balanced_ceiling(names, y)[0] == 1


def test_kneser_ney_scores_are_each_names_log_probability_as_one_sentence(ref):
    names = {"train": ["anna", "ann", "bob", "bobby", "anna", "carl"], "val": ["anne", "bo"], "test": ["abby", "c"]}
    ys = {"train": np.array([0, 0, 1, 1, 0, 1]), "val": np.array([0, 1]), "test": np.array([0, 1])}
    got = ref.kneser_ney_scores(names, ys, classes=2, order=3, distinct=True)
    chars = sorted(set("".join(n for s in names.values() for n in s)) | {"\n"})
    ids = {ch: i for i, ch in enumerate(chars)}
    nl = ids["\n"]
    for c, members in enumerate((["ann", "anna"], ["bob", "bobby", "carl"])):  # distinct, sorted
        stream = [nl] + [i for m in members for i in [*(ids[ch] for ch in m), nl]]
        lm = NGramLM(order=3, smoothing="kneser-ney", boundary=nl).fit(np.array(stream), len(chars))
        for s in ("val", "test"):
            for k, name in enumerate(names[s]):
                alone = lm.log_prob(np.array([nl, *(ids[ch] for ch in name), nl])).sum()
                assert got[s][k, c] == pytest.approx(alone, rel=1e-12)
    assert set(got) == {"val", "test"}
