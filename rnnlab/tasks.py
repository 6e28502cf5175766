r"""Long-memory tasks: synthetic problems whose answer depends on inputs far back in time.

Each task is generated from a seed for any length T (NumPy only; no torch here), and
knows the score of its *trivial baseline* -- what a model that remembers nothing can
get -- so a result reads as "how far below knowing nothing". Every metric is a loss
(lower is better), and every task uses the same rule for success:

.. math:: \text{success} \iff \text{metric} < \text{baseline} / 10 \quad (\texttt{SUCCESS\_FACTOR})

Tasks:

* :class:`AddingTask` -- the adding problem (Hochreiter & Schmidhuber 1997, in the form
  of Le et al. 2015 and Arjovsky et al. 2016): inputs (N, T, 2), channel 0 a value
  uniform in [0, 1], channel 1 a marker with exactly two ones, one in each half of the
  sequence; the target is the sum of the two marked values, predicted after the last
  step. Metric: mean squared error. Baseline: always predicting 1 (the mean of the
  target) gives :math:`\operatorname{Var}(U_1 + U_2) = 2/12 = 1/6 \approx 0.167`.
  Success: MSE < 0.0167.
* :class:`CopyTask` -- the copy-memory task (Arjovsky et al. 2016): K = 10 symbols drawn
  from an alphabet of S = 8, then T - 1 blanks, a delimiter, and K more blanks (length
  T + 2K); the output must be blank for T + K steps and then the K symbols in order.
  Metric: cross entropy in nats per output step. Baseline: blanks for T + K steps,
  then uniform over the S symbols, :math:`K \ln S / (T + 2K)`. Success: below a tenth
  of that, i.e. an average of less than :math:`\ln(8)/10 \approx 0.21` nats on each
  recalled symbol, whatever T.
* :class:`TemporalOrderTask` -- the temporal-order problem (Hochreiter & Schmidhuber
  1997, experiment 6a): a sequence of distractors a, b, c, d between a start and an end
  symbol holds two relevant symbols, each X or Y, one at a position in [0.1T, 0.2T], the
  other in [0.5T, 0.6T]; the class (XX, XY, YX, YY) is predicted after the last step.
  Metric: cross entropy in nats per sequence. Baseline: chance, :math:`\ln 4 \approx
  1.386` (the classes are equally likely). Success: < 0.139 nats (about 87% of the
  probability on the right class, on average in the log).

Shapes: N sequences of T steps, batch-first; token inputs are ids (N, T) (one-hot them,
width :attr:`Task.input_size`), real inputs are (N, T, I).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from rnnlab.decoding import log_softmax
from rnnlab.errors import ConfigError

SUCCESS_FACTOR = 10.0
"""A task is solved when its metric is below its trivial baseline divided by this."""

RngLike = np.random.Generator | int


def _rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ConfigError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def _check_n(n: Any) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n (the number of sequences) must be an integer >= 1, got {n!r}")
    return int(n)


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross entropy in nats: logits or log-probabilities (..., C) against ids (...)."""
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets)
    if logits.shape[:-1] != targets.shape:
        raise ConfigError(f"logits (..., C) must match targets (...): got {logits.shape} and {targets.shape}")
    logp = log_softmax(logits)
    return float(-np.take_along_axis(logp, targets[..., None].astype(np.int64), axis=-1).mean())


class Task:
    """What every task offers (a subclass is a dataclass with ``length`` and its own sizes).

    * ``generate(n, rng) -> (inputs, targets)``, deterministic given the seed;
    * ``kind``: ``"regression"`` (one number per sequence), ``"classification"`` (one
      class per sequence, after the last step) or ``"sequence"`` (a class at every step);
    * ``input_kind``: ``"ids"`` (integer tokens, one-hot of width ``input_size``) or
      ``"values"`` (real inputs (N, T, input_size));
    * ``output_size``: outputs per prediction (1 for regression, else the classes);
    * ``metric``, :meth:`score` (outputs against targets), :meth:`baseline` (the
      closed form), :meth:`trivial_prediction` (outputs that score the baseline),
      :meth:`success`.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["regression", "classification", "sequence"]]
    input_kind: ClassVar[Literal["ids", "values"]]
    metric: ClassVar[str]
    min_length: ClassVar[int] = 1
    length: int

    def _check_length(self) -> None:
        if not isinstance(self.length, (int, np.integer)) or isinstance(self.length, bool) \
                or self.length < self.min_length:
            raise ConfigError(f"{self.name}: length must be an integer >= {self.min_length}, got {self.length!r}")

    @property
    def sequence_length(self) -> int:
        """Steps per sequence: T (copy adds its 2K)."""
        return self.length

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def generate(self, n: int, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def baseline(self) -> float:
        raise NotImplementedError

    def trivial_prediction(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def success_threshold(self) -> float:
        """baseline / SUCCESS_FACTOR."""
        return self.baseline() / SUCCESS_FACTOR

    def success(self, metric: float) -> bool:
        """True if ``metric`` (the task's loss on held-out sequences) is below :meth:`success_threshold`."""
        return bool(math.isfinite(metric) and metric < self.success_threshold())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: name, parameters, kind, sizes, metric, baseline, threshold."""
        return {"name": self.name, **asdict(self), "kind": self.kind, "input_kind": self.input_kind,  # type: ignore[call-overload]
                "input_size": self.input_size, "output_size": self.output_size, "metric": self.metric,
                "baseline": self.baseline(), "success_threshold": self.success_threshold()}


@dataclass(frozen=True)
class AddingTask(Task):
    r"""The adding problem: remember two marked values, output their sum at the end.

    inputs (N, T, 2) float32: ``[..., 0]`` uniform in [0, 1]; ``[..., 1]`` zero except a 1 at
    one position uniform in [0, T//2) and one uniform in [T//2, T). targets (N,) float32:
    the sum of the two marked values, in [0, 2).

    Metric: MSE of one prediction per sequence. Baseline (predict 1, the target's mean):
    :math:`E[(U_1 + U_2 - 1)^2] = 1/6`.
    """

    length: int = 100  # T, steps per sequence (>= 2)

    name: ClassVar[str] = "adding"
    kind: ClassVar[Literal["regression"]] = "regression"
    input_kind: ClassVar[Literal["values"]] = "values"
    metric: ClassVar[str] = "mse"
    min_length: ClassVar[int] = 2

    def __post_init__(self) -> None:
        self._check_length()

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    def generate(self, n: int, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
        n, g, t = _check_n(n), _rng(rng), self.length
        values = g.random((n, t))  # (N, T)
        half = t // 2
        first = g.integers(0, half, n)  # (N,) in the first half
        second = g.integers(half, t, n)  # (N,) in the second half
        marks = np.zeros((n, t))
        rows = np.arange(n)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        inputs = np.stack([values, marks], axis=-1).astype(np.float32)  # (N, T, 2)
        targets = (values[rows, first] + values[rows, second]).astype(np.float32)  # (N,)
        return inputs, targets

    def baseline(self) -> float:
        return 1.0 / 6.0

    def trivial_prediction(self, inputs: np.ndarray) -> np.ndarray:
        """Always 1: (N,)."""
        return np.ones(len(inputs))

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """Mean squared error of predictions (N,) (or (N, 1)) against targets (N,)."""
        out = np.asarray(outputs, dtype=np.float64).reshape(-1)
        tgt = np.asarray(targets, dtype=np.float64).reshape(-1)
        if out.shape != tgt.shape:
            raise ConfigError(f"adding: one prediction per sequence expected, got {out.shape} for targets {tgt.shape}")
        return float(np.mean((out - tgt) ** 2))


@dataclass(frozen=True)
class CopyTask(Task):
    r"""The copy-memory task (Arjovsky, Shah & Bengio 2016): recall K symbols after a delay of T.

    Ids: 0 blank, 1..S the symbols, S + 1 the delimiter (input width S + 2). With
    L = T + 2K:

    * inputs (N, L) int64: K symbols uniform in 1..S, T - 1 blanks, the delimiter, K blanks;
    * targets (N, L) int64: T + K blanks, then the K symbols in the same order (ids 0..S,
      so the output layer has S + 1 classes; the delimiter is never a target).

    Metric: mean cross entropy over all N * L output steps, in nats. Baseline: probability 1
    on blank for T + K steps, then 1/S on each symbol: :math:`K \ln S / (T + 2K)`.
    """

    length: int = 100  # T, the delay: steps from the last symbol shown to the delimiter
    copy_len: int = 10  # K, symbols to remember
    symbols: int = 8  # S, alphabet size

    name: ClassVar[str] = "copy"
    kind: ClassVar[Literal["sequence"]] = "sequence"
    input_kind: ClassVar[Literal["ids"]] = "ids"
    metric: ClassVar[str] = "cross_entropy"
    min_length: ClassVar[int] = 1

    def __post_init__(self) -> None:
        problems = []
        for name, lo in (("length", 1), ("copy_len", 1), ("symbols", 2)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                problems.append(f"copy: {name} must be an integer >= {lo}, got {v!r}")
        if problems:
            raise ConfigError(problems)

    @property
    def blank(self) -> int:
        return 0

    @property
    def delimiter(self) -> int:
        return self.symbols + 1

    @property
    def sequence_length(self) -> int:
        """L = T + 2K."""
        return self.length + 2 * self.copy_len

    @property
    def input_size(self) -> int:
        return self.symbols + 2

    @property
    def output_size(self) -> int:
        return self.symbols + 1

    def generate(self, n: int, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
        n, g = _check_n(n), _rng(rng)
        k, t, total = self.copy_len, self.length, self.sequence_length
        seq = g.integers(1, self.symbols + 1, (n, k))  # (N, K) the symbols to remember
        inputs = np.zeros((n, total), dtype=np.int64)  # (N, L), blanks
        inputs[:, :k] = seq
        inputs[:, k + t - 1] = self.delimiter  # after T - 1 blanks
        targets = np.zeros((n, total), dtype=np.int64)  # (N, L)
        targets[:, t + k:] = seq
        return inputs, targets

    def baseline(self) -> float:
        return self.copy_len * math.log(self.symbols) / self.sequence_length

    def trivial_prediction(self, inputs: np.ndarray) -> np.ndarray:
        """Log-probabilities (N, L, S + 1): blank for T + K steps, then uniform over the symbols."""
        n = len(inputs)
        out = np.full((n, self.sequence_length, self.output_size), -np.inf)
        out[:, :self.length + self.copy_len, self.blank] = 0.0
        out[:, self.length + self.copy_len:, 1:] = -math.log(self.symbols)
        return out

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """Mean cross entropy (nats per step) of logits or log-probabilities (N, L, S + 1)."""
        return cross_entropy(outputs, targets)


@dataclass(frozen=True)
class TemporalOrderTask(Task):
    r"""The temporal-order problem (Hochreiter & Schmidhuber 1997, experiment 6a), length T.

    Ids: 0..3 the distractors a, b, c, d; 4 X; 5 Y; 6 the start symbol; 7 the end symbol.
    inputs (N, T) int64: the start symbol, distractors uniform over a..d, the end symbol;
    position t1 uniform in [max(1, T//10), max(1, T//5)] and t2 uniform in
    [T//2, 3T//5] hold X or Y (each with probability 1/2). targets (N,) int64: the class
    2 [s_{t1} = Y] + [s_{t2} = Y], i.e. 0 XX, 1 XY, 2 YX, 3 YY.

    For T = 100 the relevant positions are 10..20 and 50..60, as in the paper; the paper
    draws T in 100..110 for every sequence, here T is fixed so that a batch is one array.
    Metric: cross entropy per sequence (one prediction after the last step), in nats.
    Baseline: chance, ln 4 (the four classes are equally likely).
    """

    length: int = 100  # T, steps per sequence (>= 10)

    name: ClassVar[str] = "temporal-order"
    kind: ClassVar[Literal["classification"]] = "classification"
    input_kind: ClassVar[Literal["ids"]] = "ids"
    metric: ClassVar[str] = "cross_entropy"
    min_length: ClassVar[int] = 10
    X: ClassVar[int] = 4
    Y: ClassVar[int] = 5
    START: ClassVar[int] = 6
    END: ClassVar[int] = 7

    def __post_init__(self) -> None:
        self._check_length()

    @property
    def positions(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The inclusive ranges of t1 and t2 (0-based)."""
        t = self.length
        lo1 = max(1, t // 10)
        return (lo1, max(lo1, t // 5)), (t // 2, 3 * t // 5)

    @property
    def input_size(self) -> int:
        return 8

    @property
    def output_size(self) -> int:
        return 4

    def generate(self, n: int, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
        n, g, t = _check_n(n), _rng(rng), self.length
        inputs = g.integers(0, 4, (n, t))  # (N, T) distractors
        inputs[:, 0], inputs[:, -1] = self.START, self.END
        (a1, b1), (a2, b2) = self.positions
        t1 = g.integers(a1, b1 + 1, n)  # (N,)
        t2 = g.integers(a2, b2 + 1, n)  # (N,)
        is_y = g.integers(0, 2, (n, 2))  # (N, 2): the first and the second relevant symbol is Y
        rows = np.arange(n)
        inputs[rows, t1] = self.X + is_y[:, 0]
        inputs[rows, t2] = self.X + is_y[:, 1]
        targets = 2 * is_y[:, 0] + is_y[:, 1]  # (N,)
        return inputs.astype(np.int64), targets.astype(np.int64)

    def baseline(self) -> float:
        return math.log(4.0)

    def trivial_prediction(self, inputs: np.ndarray) -> np.ndarray:
        """Uniform log-probabilities (N, 4)."""
        return np.full((len(inputs), 4), -math.log(4.0))

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """Mean cross entropy (nats per sequence) of logits or log-probabilities (N, 4)."""
        return cross_entropy(outputs, targets)


TASKS: dict[str, type[Task]] = {"adding": AddingTask, "copy": CopyTask, "temporal-order": TemporalOrderTask}


def make_task(name: str, length: int, **kwargs: Any) -> Task:
    """The task called ``name`` (a key of :data:`TASKS`) with sequence length ``length``."""
    if name not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    try:
        return TASKS[name](length=length, **kwargs)  # type: ignore[call-arg]
    except TypeError as e:  # an option the task does not have
        raise ConfigError(f"{name}: {e}") from None
