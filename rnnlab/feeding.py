r"""How the model is fed while it learns: teacher forcing, free running, scheduled sampling, professor forcing.

A *feeding strategy* takes a batch and returns the loss to minimise; the training loop
never knows which one runs (:class:`Feeding`). Every strategy reads the same batch::

    x (B, T) int64   x[:, t] is the true input at step t
    y (B, T) int64   y[:, t] is the target at step t (= x[:, t + 1] in a stream)

At t = 0 every strategy feeds the true ``x[:, 0]``; at t > 0 the strategy decides:

* :class:`TeacherForcing` -- the true ``x[:, t]`` (the fused fast path, one call of the
  model on the whole window);
* :class:`FreeRunning` -- the model's own previous output: the softmax vector itself
  (``raw``), a one-hot of a draw from it (``sample``) or of its argmax (``argmax``);
* :class:`ScheduledSampling` (Bengio et al. 2015) -- the true token with probability
  :math:`\epsilon_i`, else the model's own, :math:`\epsilon_i` decaying with the step i
  (:func:`linear`, :func:`exponential`, :func:`inverse_sigmoid`: pure functions);
* :class:`ProfessorForcing` (Lamb et al. 2016) -- teacher forcing, plus an adversarial
  term that makes the free-running dynamics look like the teacher-forced ones.

Whatever is fed, the loss is scored against the true targets ``y``: the mean cross
entropy in nats per token over (B, T) (plus the adversarial term for professor forcing).

Where no gradient flows through what is fed (a drawn or argmax token, as in scheduled
sampling, professor forcing and ``free-sample``/``free-argmax`` by default), training on
the model's own tokens *is* teacher forcing on the sequence it fed itself: the choice of
the tokens is a constant of the loss. Such a strategy runs in two passes
(:func:`own_inputs`): first a pass without gradient through the packed inference step
(:meth:`~rnnlab.nn.models.RNNLanguageModel.stepper`, as at generation: no dropout)
decides the inputs (B, T) step by step; then one ordinary call of the model on those
inputs (the fused fast path) gives the loss and gradient. The step-by-step pass costs a
forward pass without a graph, not a stepped forward and backward pass. Strategies whose
fed value carries a gradient (``free-raw``, straight-through one-hots) step the model
with its graph (``model.step``), so any cell the stack drives can be fed any way.

A one-hot that carries no gradient is fed as its index: the embedding of an index is
the embedding of its one-hot (``E[k] = \mathrm{onehot}(k)\,E``, exactly), and the index
is cheaper. A one-hot that carries a gradient (straight-through) or a softmax vector is
fed as a (B, V) float vector through the input layer as a soft one-hot.

Randomness (draws, coin flips) comes from the ``generator`` passed to
:meth:`Feeding.loss`; ``None`` means torch's global generator, which the training loop
already checkpoints, so a resumed run draws what an uninterrupted one would. A
generator must live on the batch's device.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.nn import paths
from rnnlab.nn.graphs import GraphedStep
from rnnlab.nn.models import RNNLanguageModel, decide_in_kernel, sequence_loss
from rnnlab.nn.stack import RecurrentStack, StackState

__all__ = ["FEEDINGS", "SCHEDULES", "Discriminator", "FeedResult", "Feeding", "FreeRunning", "ProfessorForcing",
           "ScheduledSampling", "TeacherForcing", "exponential", "inverse_sigmoid", "linear", "make_feeding",
           "make_schedule", "own_inputs", "teacher_probability", "uniforms", "DecisionSteps"]

FEEDINGS = ("teacher", "free-raw", "free-sample", "free-argmax", "scheduled", "professor")

# A strategy's state as a checkpoint stores it: tensors (safetensors) and JSON-able scalars.
FeedingState = dict[str, Any]  # {"tensors": {name: Tensor}, "meta": {"feeding": name, ...}}


@dataclass
class FeedResult:
    """What one batch of a strategy gives the job."""

    loss: Tensor  # scalar: what the optimiser minimises
    state: StackState  # the final state to carry to the next batch (not detached; the job detaches it)
    nll: float  # mean cross entropy (nats per token) of the predictions the loss scored against y
    logs: dict[str, float] = field(default_factory=dict)  # extras for the training row of metrics.jsonl


# schedules: pure functions of the step ------------------------------------------------------

def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"a schedule's step must be an integer >= 0, got {step!r}")


def linear(step: int, k: float = 1.0, c: float = 2.5e-4, eps_min: float = 0.0) -> float:
    r"""Linear decay (Bengio et al. 2015): :math:`\epsilon_i = \max(\epsilon_{min},\, k - c\,i)`.

    ``k`` is the offset (the value at step 0), ``c`` the slope per step, ``eps_min`` the
    floor (the paper keeps some teacher forcing for ever with :math:`\epsilon_{min} > 0`).
    A ``k`` above 1 keeps pure teacher forcing for the first ``(k - 1) / c`` steps (the
    strategy clips :math:`\epsilon` to [0, 1]); ``k = 0`` gives :math:`\epsilon_{min}` from the
    start (a constant mix); a negative ``k`` is refused. Defaults: 0.5 at step 2000, 0 from 4000.
    """
    _check_step(step)
    k, c, eps_min = _number(k, "k"), _number(c, "c"), _number(eps_min, "eps_min")
    if k < 0:
        raise ConfigError(f"linear schedule: k (eps at step 0) must be >= 0, got {k}")
    if c < 0:
        raise ConfigError(f"linear schedule: c (the slope) must be >= 0, got {c}")
    if not 0.0 <= eps_min <= 1.0:
        raise ConfigError(f"linear schedule: eps_min must lie in [0, 1], got {eps_min}")
    return max(eps_min, k - c * step)


def exponential(step: int, k: float = 0.9996) -> float:
    r"""Exponential decay (Bengio et al. 2015): :math:`\epsilon_i = k^i` with :math:`0 < k \le 1`.

    Default: 0.5 at step :math:`\ln 0.5 / \ln k \approx 1733`.
    """
    _check_step(step)
    k = _number(k, "k")
    if not 0.0 < k <= 1.0:
        raise ConfigError(f"exponential schedule: k must lie in (0, 1], got {k}")
    return k ** step


def inverse_sigmoid(step: int, k: float = 300.0) -> float:
    r"""Inverse sigmoid decay (Bengio et al. 2015): :math:`\epsilon_i = k / (k + \exp(i / k))`, :math:`k \ge 1`.

    :math:`\epsilon_0 = k / (k + 1)` (not quite 1), and :math:`\epsilon = 1/2` at
    :math:`i = k \ln k` (default k = 300: step 1711). Far out, ``exp`` would overflow; the
    value there is 0 to double precision.
    """
    _check_step(step)
    k = _number(k, "k")
    if k < 1.0:
        raise ConfigError(f"inverse-sigmoid schedule: k must be >= 1, got {k}")
    z = step / k
    if z > 700.0:  # exp(700) ~ 1e304: k / (k + e^z) underflows long before
        return 0.0
    return k / (k + math.exp(z))


SCHEDULES: dict[str, Callable[..., float]] = {"linear": linear, "exponential": exponential,
                                              "inverse-sigmoid": inverse_sigmoid}
_SCHEDULE_PARAMS = {"linear": ("k", "c", "eps_min"), "exponential": ("k",), "inverse-sigmoid": ("k",)}


def make_schedule(name: str, **params: Any) -> Callable[[int], float]:
    """The schedule ``name`` with its parameters bound: ``step -> eps``; checked now, at step 0."""
    if name not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    unknown = sorted(set(params) - set(_SCHEDULE_PARAMS[name]))
    if unknown:
        raise ConfigError(f"the {name} schedule takes {', '.join(_SCHEDULE_PARAMS[name])}; "
                          f"got unknown {', '.join(unknown)}")
    fn = partial(SCHEDULES[name], **params)
    fn(0)  # raises ConfigError for bad parameters
    return fn


# the interface ----------------------------------------------------------------------------------

class Feeding(Protocol):
    """A feeding strategy. Stateless ones inherit the state methods as they are."""

    name: str  # as make_feeding knows it: "teacher", "free-raw", ...

    def loss(self, model: RNNLanguageModel, x: Tensor, y: Tensor, state: StackState, step: int,
             generator: torch.Generator | None = None) -> FeedResult:
        """x, y (B, T) ids; ``state`` the start state; ``step`` the training step (for schedules)."""
        ...

    def state_dict(self) -> FeedingState:
        """Everything to checkpoint: ``{"tensors": {...}, "meta": {...}}`` (meta is JSON-able)."""
        return {"tensors": {}, "meta": {"feeding": self.name}}

    def load_state_dict(self, state: FeedingState) -> None:
        """Restore what :meth:`state_dict` gave; a :class:`CheckpointError` if it is another strategy's."""
        _check_kind(state, self.name)

    def reset(self) -> None:
        """Back to the state just after construction (nothing, for a stateless strategy)."""


def _check_kind(state: Any, name: str) -> dict[str, Any]:
    if not isinstance(state, dict) or not isinstance(state.get("meta"), dict) or \
            not isinstance(state.get("tensors", {}), dict):
        raise CheckpointError("a feeding state must be {'tensors': {...}, 'meta': {...}}")
    got = state["meta"].get("feeding")
    if got != name:
        raise CheckpointError(f"the checkpoint holds the state of feeding {got!r}; this run feeds {name!r}")
    return state["meta"]


def _check_batch(x: Tensor, y: Tensor, generator: torch.Generator | None) -> None:
    if x.dim() != 2 or x.shape != y.shape or x.shape[1] < 1:
        raise ValueError(f"x and y must both be (B, T) with T >= 1, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.is_floating_point() or y.is_floating_point():
        raise ValueError(f"x and y must be token ids, got {x.dtype} and {y.dtype}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"the generator lives on {generator.device}, the batch on {x.device}; "
                         f"give a generator on the batch's device (or None for torch's global one)")


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _flag(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def uniforms(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """The uniform numbers (T - 1, B) float64 in [0, 1) a self-fed run of the batch x (B, T) draws with:
    one per row for each step t >= 1, drawn at once (row t - 1 serves step t)."""
    B, T = x.shape
    return torch.rand((max(T - 1, 0), B), generator=generator, device=x.device, dtype=torch.float64)


def _model_token(logits: Tensor, mode: str, u: Tensor) -> Tensor:
    r"""The model's own token from its logits (B, V): ids (B,), no gradient.

    ``argmax``: :math:`\arg\max_k z_k`. ``sample``: a draw from :math:`p = \operatorname{softmax}(z)`
    by the inverse of its distribution function at the uniform ``u`` (B,): the first k with
    :math:`\sum_{j \le k} p_j > u`, so :math:`P(k) = p_k` (float64; a token of probability 0 is never drawn
    but at the last, for ``u`` within rounding of 1).
    """
    if mode == "argmax":
        return logits.detach().argmax(dim=-1)  # (B,)
    cdf = F.softmax(logits.detach().double(), dim=-1).cumsum_(-1)  # (B, V)
    k = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)  # (B,)
    return k.clamp_(max=logits.shape[-1] - 1)


class DecisionSteps:
    """The inference step :func:`own_inputs` decides with, one per strategy object.

    As :func:`rnnlab.nn.paths.stepping` chooses for a step kept across batches: on the CPU a fresh
    :class:`~rnnlab.nn.models.Stepper` every batch (packing is cheap there,
    and the weights change every step). On a GPU the step is replayed as a CUDA graph
    (:class:`~rnnlab.nn.graphs.GraphedStep`: one launch a step instead of dozens), kept across
    batches: before each batch :meth:`~rnnlab.nn.models.Stepper.refresh` copies the model's new
    weights into the tensors the graph reads. A few graphs are kept (one per batch size and
    set of parameter tensors: a model moved or reloaded records a new one).
    """

    KEEP = 4

    def __init__(self) -> None:
        self._steps: dict[tuple[Any, ...], tuple[Any, GraphedStep]] = {}

    def get(self, model: RNNLanguageModel, batch: int) -> Callable[[Tensor, StackState], tuple[Tensor, StackState]]:
        if paths.stepping(paths.Machine.of_tensor(model.decoder.weight), kept=True).path != "graph":
            return model.stepper(batch)
        key = (batch, *(p.data_ptr() for p in model.parameters()))
        hit = self._steps.get(key)
        if hit is None:
            if len(self._steps) >= self.KEEP:
                self._steps.pop(next(iter(self._steps)))
            stepper = model.stepper(batch)
            hit = self._steps[key] = (stepper, GraphedStep(stepper))
        else:
            hit[0].refresh()
        return hit[1]


@torch.no_grad()
def own_inputs(model: RNNLanguageModel, x: Tensor, state: StackState, mode: str,
               generator: torch.Generator | None = None, truth: Tensor | None = None,
               steps: DecisionSteps | None = None) -> Tensor:
    r"""The inputs (B, T) of a run that feeds the model its own tokens, decided without gradient.

    ``fed[:, 0] = x[:, 0]``; for t >= 1, with :math:`z_{t-1}` the model's prediction after
    reading ``fed[:, :t]`` from ``state``, ``fed[:, t]`` is its own token (``mode``: a draw
    :math:`k \sim \operatorname{softmax}(z_{t-1})` with the :func:`uniforms` of ``generator``,
    or the argmax) -- or the true ``x[:, t]`` where ``truth[:, t - 1]`` (B, T - 1) bool says so.
    On the CPU, in :mod:`rnnlab.nn.kernels`' C++ loop where it is built (:func:`~rnnlab.nn.models.decide_in_kernel`,
    no Python between steps); else by the packed inference step (eval mode: no dropout), from ``steps`` where
    given (on a GPU: a CUDA graph kept across batches; the strategies pass their own), else a fresh eager one.
    """
    u = uniforms(x, generator) if mode == "sample" else None  # (T - 1, B)
    decided = decide_in_kernel(model, x, state, mode, u, truth)  # the C++ loop, on the CPU where it is built
    if decided is not None:
        return decided[0]
    step = steps.get(model, x.shape[0]) if steps is not None else model.stepper(x.shape[0])
    fed = [x[:, 0]]  # (B,) each
    s = state
    for t in range(1, x.shape[1]):
        logits, s = step(fed[-1], s)  # (B, V): the prediction for position t
        own = _model_token(logits, mode, u[t - 1] if u is not None else None)  # (B,)
        fed.append(own if truth is None else torch.where(truth[:, t - 1], x[:, t], own))
    return torch.stack(fed, dim=1)  # (B, T)


def _carry(model: RNNLanguageModel, x: Tensor, state: StackState, fed_state: StackState, carry: str) -> StackState:
    """The state handed to the next batch: the fed run's, or a teacher-forced pass's (no gradient)."""
    if carry == "fed":
        return fed_state
    with torch.no_grad():
        _, tf_state = model(x, state)
    return tf_state


# teacher forcing --------------------------------------------------------------------------------

class TeacherForcing(Feeding):
    r"""Feed the true previous token: :math:`\text{input}_t = x_t` for every t.

    One call of ``model(x, state)`` (the fused fast path where the config asks for it),
    so the loss is exactly the one :class:`~rnnlab.train.LanguageModelJob` takes:
    :math:`L = -\frac{1}{BT}\sum_{b,t} \log p(y_{b,t} \mid x_{b,\le t})`.
    """

    name = "teacher"

    def loss(self, model: RNNLanguageModel, x: Tensor, y: Tensor, state: StackState, step: int,
             generator: torch.Generator | None = None) -> FeedResult:
        _check_batch(x, y, generator)
        logits, new_state = model(x, state)  # (B, T, V)
        loss = sequence_loss(logits, y)
        return FeedResult(loss, new_state, loss.item(), {})


# free running -----------------------------------------------------------------------------------

class FreeRunning(Feeding):
    r"""Feed the model's own previous output (after the true first token).

    With :math:`p_t = \operatorname{softmax}(z_t)` the prediction made at step t
    (logits :math:`z_t`, (B, V)), the input at step t + 1 is

    * ``raw``: :math:`p_t` itself, a soft one-hot through the input layer
      (:math:`e = p_t E`, or :math:`p_t` for a one-hot input layer);
    * ``sample``: :math:`\mathrm{onehot}(k)`, :math:`k \sim p_t` drawn with ``generator``
      (the :func:`uniforms` of the batch, one per step and row, by the inverse distribution function);
    * ``argmax``: :math:`\mathrm{onehot}(\arg\max_k p_{t,k})`.

    ``grad`` says whether the gradient flows back through the fed value into step t:

    * ``raw``: through the softmax (default ``True``); ``False`` feeds :math:`p_t` detached.
    * ``sample``/``argmax``: ``False`` (default) feeds the index, no gradient;
      ``True`` is the straight-through estimator: the forward value is the exact
      one-hot, the backward pass treats it as :math:`p_t`
      (:math:`\mathrm{onehot} + (p_t - \mathrm{sg}(p_t))`, sg = stop-gradient).

    A token without gradient is a constant of the loss: that run is two passes
    (:func:`own_inputs` decides the tokens, one fused call of the model scores them); the
    others step the model with its graph.

    ``carry`` picks the state handed to the next batch: ``fed`` (the free run's own
    final state, free) or ``teacher`` (one extra teacher-forced pass without gradient, so
    the next batch starts from the true context). Logs ``fed_true``: the mean fraction of
    inputs t > 0 that were the true token (``raw``: the mean probability fed to it).
    """

    def __init__(self, mode: Literal["raw", "sample", "argmax"] = "sample", grad: bool | None = None,
                 carry: Literal["fed", "teacher"] = "fed"):
        _choice(mode, "mode", ("raw", "sample", "argmax"))
        grad = (mode == "raw") if grad is None else grad
        _flag(grad, "grad")
        _choice(carry, "carry", ("fed", "teacher"))
        self.mode, self.grad, self.carry = mode, grad, carry
        self._steps = DecisionSteps()
        self.name = f"free-{mode}"

    def feed(self, logits: Tensor, u: Tensor | None) -> Tensor:
        """The next input from the logits (B, V) of this step (and its uniforms (B,) for a draw): ids (B,)
        or vectors (B, V)."""
        if self.mode == "raw":
            p = F.softmax(logits, dim=-1)  # (B, V)
            return p if self.grad else p.detach()
        k = _model_token(logits, self.mode, u)  # (B,)
        if not self.grad:
            return k
        p = F.softmax(logits, dim=-1)  # (B, V)
        return F.one_hot(k, p.shape[-1]).to(p.dtype) + (p - p.detach())  # straight-through, (B, V)

    def loss(self, model: RNNLanguageModel, x: Tensor, y: Tensor, state: StackState, step: int,
             generator: torch.Generator | None = None) -> FeedResult:
        _check_batch(x, y, generator)
        B, T = x.shape
        if self.mode != "raw" and not self.grad:  # tokens as constants: decide, then one teacher-forced call
            fed = own_inputs(model, x, state, self.mode, generator, steps=self._steps)  # (B, T)
            logits, s = model(fed, state)  # (B, T, V)
            loss = sequence_loss(logits, y)
            hit = (fed[:, 1:] == x[:, 1:]).double().mean().item() if T > 1 else 1.0
            return FeedResult(loss, _carry(model, x, state, s, self.carry), loss.item(), {"fed_true": hit})
        u = uniforms(x, generator) if self.mode == "sample" else None  # (T - 1, B): the uniforms own_inputs draws
        true_fed = x.new_zeros((), dtype=torch.float64)
        inp: Tensor = x[:, 0]  # (B,) the true first input
        s = state
        outs = []
        for t in range(T):
            logits, s = model.step(inp, s)  # (B, V)
            outs.append(logits)
            if t + 1 < T:
                inp = self.feed(logits, u[t] if u is not None else None)
                with torch.no_grad():
                    hit = inp.gather(1, x[:, t + 1, None]).sum() if inp.dim() == 2 else (inp == x[:, t + 1]).sum()
                    true_fed += hit
        logits = torch.stack(outs, dim=1)  # (B, T, V)
        loss = sequence_loss(logits, y)
        logs = {"fed_true": true_fed.item() / (B * (T - 1)) if T > 1 else 1.0}
        return FeedResult(loss, _carry(model, x, state, s, self.carry), loss.item(), logs)


# scheduled sampling -----------------------------------------------------------------------------

class ScheduledSampling(Feeding):
    r"""Scheduled sampling (Bengio et al. 2015): the true token with probability :math:`\epsilon_i`.

    At training step i, for t > 0, a coin :math:`c_{b,t} \sim \mathrm{Bernoulli}(\epsilon_i)`
    chooses the input: the true :math:`x_{b,t}` when it falls 1, else the model's own
    token from its previous prediction (``model_token``: a draw from the softmax, as in
    the paper, or the argmax). ``per="token"`` flips a coin for every (b, t) (the paper);
    ``per="sequence"`` one per row b for the whole window. :math:`\epsilon_i` =
    ``schedule(i)`` clipped to [0, 1]; a schedule is a pure function of the step
    (:func:`linear`, :func:`exponential`, :func:`inverse_sigmoid`).

    As in the paper, no gradient flows through the model's own token (it is fed as an
    index), so a batch is two passes: :func:`own_inputs` decides the inputs without a
    graph, and one teacher-forced call of the model on them gives the loss. Coins are
    drawn once per batch, before the steps, from ``generator``; when
    :math:`\epsilon_i` is 0 or 1 the outcome is certain and no coin is drawn, so
    :math:`\epsilon = 1` is exactly teacher forcing (the same call) and :math:`\epsilon = 0`
    draws exactly what :class:`FreeRunning` with the same ``model_token`` draws.
    ``carry`` as in :class:`FreeRunning`. Logs ``eps`` and ``teacher_frac``, the
    fraction of inputs t > 0 that the coins gave the true token.
    """

    name = "scheduled"

    def __init__(self, schedule: Callable[[int], float], model_token: Literal["sample", "argmax"] = "sample",
                 per: Literal["token", "sequence"] = "token", carry: Literal["fed", "teacher"] = "fed"):
        if not callable(schedule):
            raise ConfigError(f"schedule must be a function step -> eps, got {schedule!r}")
        _choice(model_token, "model_token", ("sample", "argmax"))
        _choice(per, "per", ("token", "sequence"))
        _choice(carry, "carry", ("fed", "teacher"))
        self.schedule, self.model_token, self.per, self.carry = schedule, model_token, per, carry
        self._steps = DecisionSteps()

    def eps(self, step: int) -> float:
        return min(1.0, max(0.0, float(self.schedule(step))))

    def loss(self, model: RNNLanguageModel, x: Tensor, y: Tensor, state: StackState, step: int,
             generator: torch.Generator | None = None) -> FeedResult:
        _check_batch(x, y, generator)
        B, T = x.shape
        eps = self.eps(step)
        coins: Tensor | None = None  # (B, T - 1) bool, True: feed the truth
        if T > 1 and 0.0 < eps < 1.0:
            shape = (B, 1) if self.per == "sequence" else (B, T - 1)
            coins = (torch.rand(shape, generator=generator, device=x.device, dtype=torch.float64) < eps)
            coins = coins.expand(B, T - 1)
        fed = x if eps >= 1.0 or T == 1 else own_inputs(model, x, state, self.model_token, generator, coins,
                                                        steps=self._steps)
        logits, s = model(fed, state)  # (B, T, V): teacher forcing on what was fed
        loss = sequence_loss(logits, y)
        frac = coins.double().mean().item() if coins is not None else (1.0 if eps >= 1.0 else 0.0)
        return FeedResult(loss, _carry(model, x, state, s, self.carry), loss.item(),
                          {"eps": eps, "teacher_frac": frac})


# professor forcing ------------------------------------------------------------------------------

class Discriminator(nn.Module):
    r"""Professor forcing's discriminator: P(teacher-forced | behaviour sequence).

    A bidirectional GRU reads the behaviour :math:`b` (B, T, F) -- two independent
    one-layer stacks of :class:`~rnnlab.nn.cells.GRUCell` through the one unroller's
    fused path, one forwards and one over the reversed sequence -- and an MLP reads
    their final states:

    .. math::
        d = W_2\, \mathrm{ReLU}(W_1 [h^{\rightarrow}_T; h^{\leftarrow}_1] + b_1) + b_2,
        \qquad D(b) = \sigma(d)

    ``forward`` returns the logit d (B,). Initialisation: PyTorch's defaults.
    """

    def __init__(self, feature_size: int, hidden_size: int = 64, mlp_size: int = 64):
        super().__init__()
        for name, v in (("feature_size", feature_size), ("hidden_size", hidden_size), ("mlp_size", mlp_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"discriminator {name} must be an integer >= 1, got {v!r}")
        self.feature_size, self.hidden_size, self.mlp_size = feature_size, hidden_size, mlp_size
        self.forward_rnn = RecurrentStack("gru", feature_size, hidden_size, 1)
        self.backward_rnn = RecurrentStack("gru", feature_size, hidden_size, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden_size, mlp_size), nn.ReLU(), nn.Linear(mlp_size, 1))

    def forward(self, b: Tensor) -> Tensor:
        """b (B, T, F) -> logits (B,) of P(teacher-forced)."""
        if b.dim() != 3 or b.shape[-1] != self.feature_size:
            raise ConfigError(f"the discriminator reads (B, T, {self.feature_size}) behaviours, "
                              f"got {tuple(b.shape)} (was it built for this model and use_outputs?)")
        _, (fwd,) = self.forward_rnn(b)  # final state ((B, D),)
        _, (bwd,) = self.backward_rnn(b.flip(1))
        return self.mlp(torch.cat([fwd[0], bwd[0]], dim=-1)).squeeze(-1)  # (B,)


class _NoParamGrad:
    """Build a graph through ``module`` that gives its inputs gradients but not its parameters."""

    def __init__(self, module: nn.Module):
        self.params = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p in self.params:
            p.requires_grad_(True)


def _optimizer_state(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"{prefix}{idx}.{key}"] = val.detach().cpu().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_load(tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith(prefix):
            idx, key = name[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[key] = t.clone()
    for idx, st in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(st)
    # JSON turns tuples (Adam's betas) into lists; give them back as torch wrote them
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


class ProfessorForcing(Feeding):
    r"""Professor forcing (Lamb et al. 2016): teacher forcing, plus making free running look like it.

    Each batch runs the model twice from the same start state:

    * teacher-forced (the fused path): hidden states :math:`h^{tf}` (B, T, H) of the top
      layer and predictions :math:`p^{tf}`; its NLL is the model's fit;
    * free-running: after the true ``x[:, 0]`` each input is the model's own token
      (``model_token``: a draw from its softmax, as in the paper, or the argmax; no
      gradient through the choice, so the tokens are decided first by :func:`own_inputs`
      and the run over them is one fused call), giving :math:`h^{fr}`, :math:`p^{fr}`.

    The *behaviour* of a run is :math:`b = h` or, with ``use_outputs``,
    :math:`b = [h; p]` (B, T, H + V). The :class:`Discriminator` D is trained with its
    own Adam optimiser (learning rate ``lr``), inside :meth:`loss`, on detached
    behaviours, to tell them apart (teacher-forced labelled 1):

    .. math::
        L_D = -\tfrac{1}{2}\big[\log D(b^{tf}) + \log(1 - D(b^{fr}))\big]

    Then, with the updated D, the generator (the language model) minimises

    .. math::
        L = \mathrm{NLL}^{tf} + w\, g\, \big(-\log D(b^{fr})\big)

    (``adv_weight`` w): the free run is pushed to look teacher-forced; D's parameters get
    no gradient from L. The gate g is 1 only while D's running accuracy, an exponential
    average :math:`a \leftarrow \beta a + (1 - \beta)\,\mathrm{acc}` over batches
    (``acc_decay`` :math:`\beta`, starting at chance, 0.5), lies in ``band``
    (the paper's numbers, 75% and 99%): below it D's verdict is noise, above it D is so
    sure that its gradient says little. The gate reads the accuracy before this batch's
    update of D, and with g = 0 the free run is done without a graph (cheaper). Here the
    gate switches the adversarial term at both edges of the band and D trains on every
    batch. Left out: the paper's optional term that pulls the teacher-forced behaviour
    towards the free-running one; the behaviour is the top layer's hidden state only.

    The carried state is the teacher-forced run's. Logs: ``d_acc`` (running accuracy
    after the update), ``d_batch_acc``, ``d_loss``, ``adv`` (:math:`-\log D(b^{fr})`,
    whether applied or not), ``adv_on`` (g), ``free_nll`` (the free run's NLL of y:
    how far the model drifts on its own). :meth:`state_dict` holds D's weights, its
    optimiser's state and the running accuracy.
    """

    name = "professor"

    def __init__(self, discriminator: Discriminator, band: tuple[float, float] = (0.75, 0.99),
                 adv_weight: float = 1.0, lr: float = 1e-3, use_outputs: bool = True, acc_decay: float = 0.9,
                 model_token: Literal["sample", "argmax"] = "sample"):
        problems = []
        if not isinstance(discriminator, Discriminator):
            problems.append(f"discriminator must be a Discriminator, got {type(discriminator).__name__}")
        try:
            lo, hi = (_number(v, "band") for v in band)
            if not 0.0 <= lo <= hi <= 1.0:
                problems.append(f"band must be (low, high) with 0 <= low <= high <= 1, got {tuple(band)}")
        except (ConfigError, TypeError, ValueError):
            problems.append(f"band must be two numbers (low, high), got {band!r}")
            lo, hi = 0.0, 1.0
        for name, v, ok, want in (("adv_weight", adv_weight, lambda v: v >= 0, ">= 0"),
                                  ("lr", lr, lambda v: v > 0, "> 0"),
                                  ("acc_decay", acc_decay, lambda v: 0 <= v < 1, "in [0, 1)")):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                problems.append(f"{name} must be a number {want}, got {v!r}")
        if not isinstance(use_outputs, bool):
            problems.append(f"use_outputs must be true or false, got {use_outputs!r}")
        if model_token not in ("sample", "argmax"):
            problems.append(f"model_token must be one of sample, argmax, got {model_token!r}")
        if problems:
            raise ConfigError(problems)
        self.discriminator = discriminator
        self.band = (lo, hi)
        self.adv_weight, self.lr, self.acc_decay = float(adv_weight), float(lr), float(acc_decay)
        self.use_outputs, self.model_token = use_outputs, model_token
        self._initial = copy.deepcopy(discriminator.state_dict())
        self._steps = DecisionSteps()
        self._average: Callable[[list[Tensor]], None] | None = None
        self.reset()

    def synchronise(self, average: Callable[[list[Tensor]], None], broadcast: Callable[[list[Tensor]], None]) -> None:
        """Train D together with other processes (``torchrun``), each with its own rows of the batch: D's
        weights are overwritten now with rank 0's (``broadcast``, in place), and from now on D's gradients,
        its loss and its batch accuracy are averaged over ranks (``average``, in place) before they are used.
        Every rank then takes the step one process takes on the whole batch (D's loss is a mean over the
        examples), and all agree on the gate."""
        broadcast([t for t in self.discriminator.state_dict().values()])
        self._average = average

    @classmethod
    def for_model(cls, model: RNNLanguageModel, hidden_size: int = 64, mlp_size: int = 64,
                  use_outputs: bool = True, **kw: Any) -> ProfessorForcing:
        """A discriminator sized for ``model``'s behaviours, on its device and in its dtype."""
        w = model.decoder.weight
        feature = model.cfg.hidden_size + (model.vocab_size if use_outputs is True else 0)
        d = Discriminator(feature, hidden_size, mlp_size).to(device=w.device, dtype=w.dtype)
        return cls(d, use_outputs=use_outputs, **kw)

    # state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.discriminator.load_state_dict(self._initial)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr)
        self.accuracy = 0.5  # running accuracy of D, at chance before it has seen anything
        self.updates = 0  # D's optimiser steps taken

    def state_dict(self) -> FeedingState:
        tensors = {f"discriminator.{k}": v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()}
        opt_tensors, opt_meta = _optimizer_state(self.optimizer, "optimizer.")
        tensors.update(opt_tensors)
        meta = {"feeding": self.name, "accuracy": self.accuracy, "updates": self.updates, "optimizer": opt_meta}
        return {"tensors": tensors, "meta": meta}

    def load_state_dict(self, state: FeedingState) -> None:
        meta = _check_kind(state, self.name)
        tensors = state.get("tensors", {})
        weights = {k[len("discriminator."):]: v for k, v in tensors.items() if k.startswith("discriminator.")}
        try:
            accuracy, updates = float(meta["accuracy"]), int(meta["updates"])
            self.discriminator.load_state_dict(weights, strict=True)
            self.optimizer.load_state_dict(_optimizer_load(tensors, meta["optimizer"], "optimizer."))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the professor-forcing state does not fit this discriminator ({e})") from None
        self.accuracy, self.updates = accuracy, updates

    # the two players ---------------------------------------------------------------------------
    def behaviour(self, h: Tensor, logits: Tensor) -> Tensor:
        """h (B, T, H), logits (B, T, V) -> b (B, T, H) or (B, T, H + V)."""
        return torch.cat([h, F.softmax(logits, dim=-1)], dim=-1) if self.use_outputs else h

    def discriminator_step(self, teacher: Tensor, free: Tensor) -> tuple[float, float]:
        """One update of D on behaviours teacher (B, T, F) (label 1) and free (B', T, F) (label 0),
        both detached. Returns (D's loss, its accuracy on them before the update) and moves the
        running accuracy."""
        b = torch.cat([teacher, free]).detach()  # (B + B', T, F)
        labels = torch.cat([teacher.new_ones(teacher.shape[0]), free.new_zeros(free.shape[0])])  # (B + B',)
        with torch.enable_grad():
            d = self.discriminator(b)  # (B + B',)
            d_loss = F.binary_cross_entropy_with_logits(d, labels)
            self.optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
        stats = torch.stack([d_loss.detach().double(), ((d.detach() > 0) == (labels > 0.5)).double().mean()])
        if self._average is not None:  # many processes: the whole batch's gradient, loss and accuracy
            self._average([p.grad for p in self.discriminator.parameters() if p.grad is not None] + [stats])
        self.optimizer.step()
        loss_v, acc = stats.tolist()
        self.accuracy = self.acc_decay * self.accuracy + (1.0 - self.acc_decay) * acc
        self.updates += 1
        return loss_v, acc

    def gate(self) -> bool:
        """Whether the adversarial term is applied now: D's running accuracy lies in the band."""
        return self.band[0] <= self.accuracy <= self.band[1]

    def _free_run(self, model: RNNLanguageModel, x: Tensor, state: StackState,
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The model on its own after x[:, 0]: top-layer h (B, T, H) and logits (B, T, V).

        Its tokens are decided without gradient (:func:`own_inputs`); the run over them is
        one call of the stack (the fused path), with a graph where the caller enables one."""
        fed = own_inputs(model, x, state, self.model_token, generator, steps=self._steps)  # (B, T)
        h, _ = model.rnn(model.embed(fed), state, fused=model.cfg.fused)  # (B, T, H)
        return h, model.readout(h)  # (B, T, V)

    def loss(self, model: RNNLanguageModel, x: Tensor, y: Tensor, state: StackState, step: int,
             generator: torch.Generator | None = None) -> FeedResult:
        _check_batch(x, y, generator)
        on = self.gate()
        # teacher-forced: model.forward's computation, keeping the top layer's h
        e = model.embed(x)  # (B, T, I)
        h_tf, tf_state = model.rnn(e, state, fused=model.cfg.fused)  # (B, T, H)
        logits_tf = model.readout(h_tf)  # (B, T, V)
        nll = sequence_loss(logits_tf, y)
        with torch.set_grad_enabled(on and torch.is_grad_enabled()):
            h_fr, logits_fr = self._free_run(model, x, state, generator)  # (B, T, H), (B, T, V)
        b_tf = self.behaviour(h_tf, logits_tf)  # (B, T, F)
        b_fr = self.behaviour(h_fr, logits_fr)  # (B, T, F)
        d_loss, batch_acc = self.discriminator_step(b_tf, b_fr)
        if on:
            with _NoParamGrad(self.discriminator):
                adv = F.softplus(-self.discriminator(b_fr)).mean()  # -log D(b_fr), mean over B
            loss = nll + self.adv_weight * adv
        else:
            with torch.no_grad():
                adv = F.softplus(-self.discriminator(b_fr.detach())).mean()
            loss = nll
        with torch.no_grad():
            free_nll = sequence_loss(logits_fr.detach(), y).item()
        logs = {"d_acc": self.accuracy, "d_batch_acc": batch_acc, "d_loss": d_loss, "adv": adv.item(),
                "adv_on": float(on), "free_nll": free_nll}
        return FeedResult(loss, tf_state, nll.item(), logs)


# by name ----------------------------------------------------------------------------------------

_OPTIONS: dict[str, tuple[str, ...]] = {
    "teacher": (),
    "free-raw": ("grad", "carry"),
    "free-sample": ("grad", "carry"),
    "free-argmax": ("grad", "carry"),
    "scheduled": ("schedule", "k", "c", "eps_min", "model_token", "per", "carry"),
    "professor": ("band", "adv_weight", "lr", "use_outputs", "acc_decay", "model_token", "hidden_size", "mlp_size"),
}


def make_feeding(name: str, model: RNNLanguageModel | None = None, **options: Any) -> Feeding:
    """The strategy ``name`` (one of :data:`FEEDINGS`) with ``options``; unknown or bad ones raise
    :class:`ConfigError`. ``model`` is needed by ``professor`` only (to size its discriminator and
    put it on the model's device and dtype); the others ignore it.

    Options: ``free-*``: ``grad``, ``carry``. ``scheduled``: ``schedule`` (linear, exponential,
    inverse-sigmoid; default inverse-sigmoid), its parameters ``k``, ``c``, ``eps_min`` (linear
    only for the last two; defaults those of the schedule functions), ``model_token``, ``per``,
    ``carry``. ``professor``: ``band``, ``adv_weight``, ``lr`` (the discriminator's),
    ``use_outputs``, ``acc_decay``, ``model_token``, ``hidden_size`` and ``mlp_size`` (the
    discriminator's).
    """
    if name not in _OPTIONS:
        raise ConfigError(f"feeding must be one of {', '.join(FEEDINGS)}, got {name!r}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "no options"
        raise ConfigError(f"feeding {name} takes {allowed}; got unknown {', '.join(unknown)}")
    if name == "teacher":
        return TeacherForcing()
    if name.startswith("free-"):
        return FreeRunning(name[len("free-"):], **options)  # type: ignore[arg-type]
    if name == "scheduled":
        sched = options.pop("schedule", "inverse-sigmoid")
        params = {k: options.pop(k) for k in ("k", "c", "eps_min") if k in options}
        return ScheduledSampling(make_schedule(sched, **params), **options)
    if model is None:
        raise ConfigError("feeding professor needs the model (to size its discriminator)")
    return ProfessorForcing.for_model(model, **options)


def teacher_probability(name: str, steps: Sequence[int], **options: Any) -> list[float] | None:
    r"""The probability :math:`\epsilon_i` that the strategy feeds the true previous token at training step i.

    ``name`` and ``options`` as :func:`make_feeding` takes them (a run's
    ``FeedingConfig.feeding`` and ``.options()``); one value per step of ``steps``:
    1 for teacher forcing, 0 for free running, the clipped schedule
    :meth:`ScheduledSampling.eps` (the same call its training made) for scheduled
    sampling. None for professor forcing, whose loss reads the true tokens (1) and which
    adds a free-running pass beside it rather than mixing the two.
    """
    strategy = make_feeding(name, None, **options) if name != "professor" else None
    for i in steps:
        _check_step(i)
    if isinstance(strategy, ScheduledSampling):
        return [strategy.eps(int(i)) for i in steps]
    if isinstance(strategy, TeacherForcing):
        return [1.0] * len(steps)
    if isinstance(strategy, FreeRunning):
        return [0.0] * len(steps)
    return None
