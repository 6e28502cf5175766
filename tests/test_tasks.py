"""Long-memory task generators: seeded, the documented layout, and the documented trivial baselines
measured on generated data."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rnnlab.errors import ConfigError
from rnnlab.tasks import SUCCESS_FACTOR, TASKS, AddingTask, CopyTask, TemporalOrderTask, make_task

ALL = [AddingTask(30), CopyTask(12), TemporalOrderTask(40)]


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_generators_are_deterministic_under_a_seed(task):
    a = task.generate(50, np.random.default_rng(3))
    b = task.generate(50, 3)  # an integer seed means default_rng(seed)
    c = task.generate(50, 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_the_trivial_prediction_scores_the_documented_baseline_and_fails(task):
    x, y = task.generate(4000, 0)
    empirical = task.score(task.trivial_prediction(x), y)
    # adding: sd of (S - 1)^2 is sqrt(7/180) = 0.197, so 4000 sequences give a s.e. of 0.003
    assert empirical == pytest.approx(task.baseline(), abs=0.012)
    assert not task.success(empirical)
    assert task.success(task.baseline() / SUCCESS_FACTOR * 0.99)
    assert not task.success(task.baseline() / SUCCESS_FACTOR * 1.01)
    assert not task.success(float("nan"))
    d = task.to_dict()
    assert json.loads(json.dumps(d)) == d and d["name"] == task.name and d["baseline"] == task.baseline()


@pytest.mark.parametrize("length", [2, 3, 10, 101])
def test_adding_layout(length):
    task = AddingTask(length)
    x, y = task.generate(500, 1)
    assert x.shape == (500, length, 2) and x.dtype == np.float32
    assert y.shape == (500,) and y.dtype == np.float32
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()  # [0, 1): float32 may round the top to 1
    assert set(np.unique(marks)) <= {0.0, 1.0}
    half = length // 2
    assert (marks[:, :half].sum(1) == 1).all() and (marks[:, half:].sum(1) == 1).all()
    np.testing.assert_allclose(y, (values * marks).sum(1), rtol=1e-6)


def test_adding_baseline_is_one_sixth_on_many_sequences():
    task = AddingTask(50)
    x, y = task.generate(20000, 7)
    assert task.baseline() == pytest.approx(0.1667, abs=1e-4)
    # s.e. of the mean of (S - 1)^2 over 20000 sequences: 0.0014; 0.007 is 5 s.e.
    assert task.score(np.ones(len(y)), y) == pytest.approx(1 / 6, abs=0.007)
    assert float(np.var(y.astype(np.float64))) == pytest.approx(1 / 6, abs=0.007)  # no constant does better
    assert task.score(y, y) == 0.0 and task.success(task.score(y + 0.05, y))  # an RMSE of 0.05 succeeds


@pytest.mark.parametrize(("length", "k", "s"), [(1, 10, 8), (5, 3, 4), (100, 10, 8)])
def test_copy_layout(length, k, s):
    task = CopyTask(length, copy_len=k, symbols=s)
    x, y = task.generate(300, 2)
    total = length + 2 * k
    assert task.sequence_length == total
    assert x.shape == y.shape == (300, total) and x.dtype == y.dtype == np.int64
    assert task.input_size == s + 2 and task.output_size == s + 1
    remember = x[:, :k]
    assert ((remember >= 1) & (remember <= s)).all()
    assert (x[:, k:k + length - 1] == 0).all()  # T - 1 blanks
    assert (x[:, k + length - 1] == s + 1).all()  # the delimiter
    assert (x[:, k + length:] == 0).all()  # K blanks while the answer is given
    assert (y[:, :length + k] == 0).all()
    np.testing.assert_array_equal(y[:, length + k:], remember)  # the same symbols, in order
    assert (x == s + 1).sum() == 300 and y.max() <= s


@pytest.mark.parametrize("length", [10, 100, 500])
def test_copy_baseline_is_the_formula_and_a_memoryless_model_cannot_beat_it(length):
    task = CopyTask(length)
    assert task.baseline() == pytest.approx(10 * math.log(8) / (length + 20))
    x, y = task.generate(1000, 5)
    assert task.score(task.trivial_prediction(x), y) == pytest.approx(task.baseline(), rel=1e-12)
    # the best a model without memory can do on the recall steps is the symbols' empirical frequencies
    counts = np.bincount(y[:, length + 10:].ravel(), minlength=9)[1:]
    freq = counts / counts.sum()
    entropy = -(freq * np.log(freq)).sum()
    assert entropy * 10 / (length + 20) == pytest.approx(task.baseline(), rel=2e-3)


@pytest.mark.parametrize("length", [10, 11, 57, 100])
def test_temporal_order_layout(length):
    task = TemporalOrderTask(length)
    x, y = task.generate(2000, 3)
    assert x.shape == (2000, length) and y.shape == (2000,) and x.dtype == y.dtype == np.int64
    assert (x[:, 0] == task.START).all() and (x[:, -1] == task.END).all()
    relevant = (x == task.X) | (x == task.Y)
    assert (relevant.sum(1) == 2).all()
    (a1, b1), (a2, b2) = task.positions
    assert 1 <= a1 <= b1 < a2 <= b2 <= length - 2
    pos = np.argwhere(relevant)[:, 1].reshape(-1, 2)  # (N, 2), in order
    assert ((pos[:, 0] >= a1) & (pos[:, 0] <= b1)).all() and ((pos[:, 1] >= a2) & (pos[:, 1] <= b2)).all()
    first, second = (x[np.arange(2000)[:, None], pos] == task.Y).T
    np.testing.assert_array_equal(y, 2 * first + second)
    middle = np.delete(x, [0, length - 1], axis=1)
    assert set(np.unique(middle[~np.delete(relevant, [0, length - 1], axis=1)])) == {0, 1, 2, 3}
    if length == 100:
        assert task.positions == ((10, 20), (50, 60))  # as in the paper


def test_temporal_order_classes_are_balanced_so_chance_is_ln_4():
    task = TemporalOrderTask(30)
    x, y = task.generate(20000, 9)
    freq = np.bincount(y, minlength=4) / len(y)
    np.testing.assert_allclose(freq, 0.25, atol=0.015)
    best_constant = -(freq * np.log(freq)).sum()  # cross entropy of predicting the class frequencies
    assert best_constant == pytest.approx(math.log(4), abs=2e-3)
    assert task.score(task.trivial_prediction(x), y) == pytest.approx(math.log(4), rel=1e-12)
    logits = np.eye(4)[y] * 20.0  # an oracle is near zero
    assert task.success(task.score(logits, y))


def test_make_task_and_bad_parameters_raise_config_error():
    assert isinstance(make_task("copy", 20, copy_len=5), CopyTask) and set(TASKS) == {"adding", "copy", "temporal-order"}
    with pytest.raises(ConfigError, match="task must be one of adding, copy, temporal-order, got 'parity'"):
        make_task("parity", 10)
    with pytest.raises(ConfigError, match="copy_len"):
        make_task("adding", 10, copy_len=3)
    with pytest.raises(ConfigError, match="adding: length must be an integer >= 2, got 1"):
        AddingTask(1)
    with pytest.raises(ConfigError, match="temporal-order: length must be an integer >= 10"):
        TemporalOrderTask(9)
    with pytest.raises(ConfigError, match=r"copy: length .* got 0.*symbols must be an integer >= 2"):
        CopyTask(0, symbols=1)
    with pytest.raises(ConfigError, match="n .* must be an integer >= 1, got 0"):
        AddingTask(5).generate(0, 1)
    with pytest.raises(ConfigError, match="rng must be"):
        AddingTask(5).generate(3, "seed")
    with pytest.raises(ConfigError, match="one prediction per sequence"):
        AddingTask(5).score(np.ones(3), np.ones(4))
    with pytest.raises(ConfigError, match="must match targets"):
        CopyTask(5).score(np.zeros((2, 3, 9)), np.zeros((2, 4), dtype=int))


def test_the_module_imports_no_torch():
    code = "import sys, rnnlab.tasks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
