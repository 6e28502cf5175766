r"""Looking inside a language model: what it predicted at every step, and what its units did.

Two questions, both about one text read from a zero state:

* :func:`score_tokens` -- for every token after the first, the probability the model
  gave it, :math:`p(x_t \mid x_{<t})`, and the model's ``top`` most probable tokens at
  that step (one fused pass; the same numbers as ``softmax(model(x))``);
* :func:`step_through` -- the text read one token at a time, as the recurrence is
  written: the input :math:`x_t`, every layer's :math:`h_t` and the softmax output
  :math:`y_t` after each step (the lab's Elman section shows it step by step);
* :func:`layer_activations` -- for one layer, every unit's output :math:`h_t` at every
  step and the rest of the cell's state and gates (an LSTM's :math:`c_t, i_t, f_t, g_t,
  o_t`; a GRU's :math:`r_t, z_t, n_t`), by stepping the layers one step at a time
  through the cell interface; :func:`rank_units` orders the units by how much they
  vary over the text, the way char-rnn's visualisations found the quote and bracket
  units.

The gates are not part of the cell interface (``step`` returns only ``h`` and the
state), so each cell describes what can be seen inside it, beside its equations in
:mod:`rnnlab.nn.cells`: the names of its state tensors (``state_names``), the gates
:meth:`~rnnlab.nn.cells.Cell.gate_values` recomputes from the same projected input and
previous state the cell's own ``step_projected`` uses (``shown_gates``), and each
quantity's range (``bounds``). :func:`anatomy` reads them; no loop branches on the kind
of cell, and a cell that shows no gates still shows its state. The tests check every
registered cell's gates against the cell itself (an LSTM's ``o * tanh(c)`` is its ``h``,
a GRU's ``(1 - z) * n + z * h_prev`` is its ``h``).

Shapes: ids (N,) int64; probabilities (N - 1, ...); activations (T, H) per quantity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rnnlab.decoding import log_softmax
from rnnlab.errors import ConfigError, DataError
from rnnlab.nn.cells import Bounds, Cell, State
from rnnlab.nn.models import RNNLanguageModel

GateFn = Callable[[Cell, Tensor, State], tuple[Tensor, ...]]  # cell, projected input (B, G*H), state -> gates


@dataclass(frozen=True)
class Anatomy:
    """What can be seen inside one kind of cell (read from the cell's class by :func:`anatomy`)."""

    state: tuple[str, ...]  # names of the state tensors, in the cell's order; the first is the output h
    gates: tuple[str, ...] = ()  # names of the gates ``gate_fn`` returns, in its order
    gate_fn: GateFn | None = None  # recomputes the gates from the cell's projected input and previous state
    bounds: dict[str, Bounds] = field(default_factory=dict)  # range of each quantity (missing: unbounded)

    @property
    def quantities(self) -> tuple[str, ...]:
        return self.state + self.gates


def anatomy(cell: Cell | type[Cell]) -> Anatomy:
    """What a cell (or cell class) shows: its state tensors (:meth:`~rnnlab.nn.cells.Cell.state_labels`), the
    gates it recomputes (``shown_gates``, by :meth:`~rnnlab.nn.cells.Cell.gate_values`) and their ``bounds``."""
    cls = cell if isinstance(cell, type) else type(cell)
    gates = tuple(cls.shown_gates)
    return Anatomy(cls.state_labels(), gates, cls.gate_values if gates else None, dict(cls.bounds))


def _check_ids(ids: np.ndarray, model: RNNLanguageModel, least: int) -> Tensor:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) < least:
        raise DataError(f"expected at least {least} token(s) as a 1-D array, got shape {ids.shape}")
    if len(ids) and (ids.min() < 0 or ids.max() >= model.vocab_size):
        raise DataError(f"token ids must lie in [0, {model.vocab_size}), got {ids.min()}..{ids.max()}")
    return torch.as_tensor(ids, device=model.decoder.weight.device).unsqueeze(0)  # (1, N)


def top_tokens(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable tokens of each row of ``probs`` (..., V), most probable first
    (ties: the lower id), and their probabilities: two arrays (..., min(k, V))."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(probs, order, axis=-1)


@dataclass
class TokenScores:
    """What the model gave each token of a text after the first (N - 1 rows)."""

    logprob: np.ndarray  # (N - 1,) ln p(x_t | x_<t), float64
    top_ids: np.ndarray  # (N - 1, k) the model's k most probable tokens at step t, most probable first
    top_probs: np.ndarray  # (N - 1, k) their probabilities

    @property
    def prob(self) -> np.ndarray:
        return np.exp(self.logprob)

    @property
    def bits(self) -> np.ndarray:
        """(N - 1,) -log2 p(x_t | x_<t): the bits each token cost."""
        return -self.logprob / np.log(2.0)

    @property
    def running_bits(self) -> np.ndarray:
        """(N - 1,) the mean bits per token over the text so far (the last is the whole text's)."""
        bits = self.bits
        return np.cumsum(bits) / np.arange(1, len(bits) + 1)


@torch.no_grad()
def score_tokens(model: RNNLanguageModel, ids: np.ndarray, top: int = 5) -> TokenScores:
    """Score every token of ``ids`` (N,) after the first, reading from a zero state.

    The model reads the text once (its teacher-forced pass); the probabilities are the
    float64 softmax of its logits, as the samplers compute them, so the mean of
    :attr:`TokenScores.bits` is :func:`rnnlab.evaluate.evaluate_tokens`' bits per token for
    one stream.
    """
    x = _check_ids(ids, model, 1)  # (1, N)
    if x.shape[1] < 2:  # one token: nothing to predict
        return TokenScores(np.zeros(0), np.zeros((0, top), np.int64), np.zeros((0, top)))
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(x[:, :-1], model.initial_state(1))  # (1, N-1, V): the prediction after each prefix
    finally:
        model.train(was_training)
    logp = log_softmax(logits[0].double().cpu().numpy())  # (N-1, V)
    target = x[0, 1:].cpu().numpy()  # (N-1,)
    top_ids, top_probs = top_tokens(np.exp(logp), max(top, 0))
    return TokenScores(logp[np.arange(len(target)), target], top_ids, top_probs)


@torch.no_grad()
def layer_activations(model: RNNLanguageModel, ids: np.ndarray, layer: int) -> dict[str, np.ndarray]:
    """Every quantity of :func:`anatomy` of layer ``layer`` (0: the bottom) at every step of
    ``ids`` (T,), read from a zero state: ``{name: (T, H) float32}``, ``h`` first.

    The layers below are stepped as :meth:`RecurrentStack.unroll` steps them (all inputs
    projected at once, then ``step_projected`` step by step); layers above are not run.
    Dropout is off (the model is read in eval mode).
    """
    layers = model.rnn.num_layers
    if not 0 <= layer < layers:
        raise ConfigError(f"layer must lie in [0, {layers - 1}] for this {layers}-layer model, got {layer}")
    x = _check_ids(ids, model, 1)
    was_training = model.training
    model.eval()
    try:
        inputs = model.embed(x)  # (1, T, I)
        state = model.initial_state(1)
        for k in range(layer + 1):
            cell = model.rnn.cells[k]
            body = anatomy(cell)
            watch = k == layer
            xp = cell.project_input(inputs)  # (1, T, G*H)
            s = state[k]
            outs: list[Tensor] = []
            seen: dict[str, list[Tensor]] = {name: [] for name in body.quantities}
            for t in range(xp.shape[1]):
                if watch and body.gate_fn is not None:
                    for name, g in zip(body.gates, body.gate_fn(cell, xp[:, t], s)):
                        seen[name].append(g[0])  # (H,)
                h, s = cell.step_projected(xp[:, t], s)  # h: (1, H)
                outs.append(h)
                if watch:
                    for name, tensor in zip(body.state, s):
                        seen[name].append(tensor[0])
            inputs = torch.stack(outs, dim=1)  # (1, T, H): the next layer's input
    finally:
        model.train(was_training)
    return {name: torch.stack(v).float().cpu().numpy() for name, v in seen.items()}  # each (T, H)


@dataclass
class Steps:
    """A text read one token at a time from a zero state: what every layer held and what the
    model predicted after each step (T rows, one per token read)."""

    inputs: np.ndarray  # (T, I) x_t, what the first layer read: the one-hot vector, or its embedding
    hidden: list[np.ndarray]  # per layer, bottom first, (T, H) h_t after reading token t, float64
    probs: np.ndarray  # (T, V) y_t = softmax of the output layer on the top h_t, float64


@torch.no_grad()
def step_through(model: RNNLanguageModel, ids: np.ndarray) -> Steps:
    r"""Read ``ids`` (T,) one token at a time from :math:`h_0 = 0`, as a recurrence does:
    for an Elman network

    .. math::
        h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \qquad
        y_t = \mathrm{softmax}(W_{ho} h_t + b_o)

    with the same weights at every t (a layer k > 0 reads the layer below's h_t as its x_t).
    Each step is the cell's own ``step`` (:meth:`RecurrentStack.step`), so every cell reads the
    same way. Dropout is off. Returns :class:`Steps`; ``probs[t]`` is the model's distribution
    of token t + 1, the same numbers as ``softmax(model(ids))`` in one pass.
    """
    x = _check_ids(ids, model, 1)  # (1, T)
    was_training = model.training
    model.eval()
    try:
        inputs = model.embed(x)  # (1, T, I)
        state = model.initial_state(1)
        hidden: list[list[Tensor]] = [[] for _ in range(model.rnn.num_layers)]
        tops: list[Tensor] = []
        for t in range(inputs.shape[1]):
            top, state = model.rnn.step(inputs[:, t], state)  # (1, H)
            for k, s in enumerate(state):
                hidden[k].append(s[0][0])  # (H,) the layer's h, its state's first tensor
            tops.append(top[0])
        logits = model.decoder(torch.stack(tops))  # (T, V)
    finally:
        model.train(was_training)
    logp = log_softmax(logits.double().cpu().numpy())  # (T, V)
    return Steps(inputs[0].double().cpu().numpy(), [torch.stack(h).double().cpu().numpy() for h in hidden],
                 np.exp(logp))


def rank_units(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Units ordered by how strongly they vary over the text: ``values`` (T, H) -> the unit
    indices (H,), largest standard deviation over time first (ties: the lower index), and
    those deviations (H,)."""
    std = values.astype(np.float64).std(axis=0)  # (H,)
    order = np.argsort(-std, kind="stable")
    return order, std[order]


__all__ = ["Anatomy", "Steps", "TokenScores", "anatomy", "layer_activations", "rank_units", "score_tokens",
           "step_through", "top_tokens"]
