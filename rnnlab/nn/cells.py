"""Recurrent cells behind one interface.

Every cell owns four parameters laid out exactly as PyTorch's fused modules lay them
out, all gates stacked in one matrix (G gates of H units each):

* ``weight_ih``: (G*H, I), ``bias_ih``: (G*H,)  -- input to gates
* ``weight_hh``: (G*H, H), ``bias_hh``: (G*H,)  -- previous state to gates

and exposes the same small interface:

* ``initial_state(batch)`` -> a tuple of (B, H) zero tensors;
* ``project_input(x)`` -> ``x @ weight_ih.T + bias_ih``, for one step (B, I) or for
  all T steps at once (B, T, I): the unroller does this as one large matrix product;
* ``step_projected(xp_t, state)`` -> ``(h_t, state)``, the recurrence given the
  projected input (B, G*H);
* ``sequence(x, state)`` (cells with ``has_sequence``: Elman, GRU; the LSTM's in C++ only,
  ``kernel_sequence_max_hidden``) -> the whole time-major sequence (T, B, H) and the final
  state by one hand-written recurrence with its own backward (:mod:`rnnlab.nn.sequence`),
  the CPU fast path, where :mod:`rnnlab.nn.paths` chooses it;
* ``step(x_t, state)`` = ``step_projected(project_input(x_t), state)``, computed in
  one call of torch's own cell function (``torch.rnn_tanh_cell``, ``torch.lstm_cell``,
  ``torch.gru_cell``: :attr:`Cell.fused_step`), which saves the Python overhead of
  some ten operations on every step of sampling and of the stepped training paths.

Because the layout matches, the same tensors also drive ``torch.nn.RNN/LSTM/GRU``
(:attr:`Cell.fused_cls`), and the tests check each cell against
``torch.nn.RNNCell/LSTMCell/GRUCell`` with copied weights.

Initialisation (all cells, as PyTorch): every parameter uniform in
(-1/sqrt(H), 1/sqrt(H)).

A cell is described once, in its class: its equations (the docstring), its gates and state
(``gates``, ``gate_names``, ``state_tensors``, ``state_names``), what introspection shows of it
(:meth:`Cell.gate_values`, ``shown_gates``, ``bounds``), its fused template (``fused_cls``,
``fused_step``) and what the fast paths may do with it (``packs``, ``has_sequence``,
``kernel_sequence_max_hidden``, ``kernel_code``). :func:`register_cell` enters it in
:data:`CELL_TYPES` under its name; every other part of rnnlab (the configs' allowed cells and the
command line's ``--cell``, checkpoints, the chooser :mod:`rnnlab.nn.paths`, sampling, serving,
:mod:`rnnlab.introspect`, :mod:`rnnlab.gradients`) asks that registry and the class. A cell that
says nothing of the fast paths runs on the reference paths: the unroller for training, its own
``step`` for sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.nn.sequence import elman_sequence, gru_sequence, lstm_sequence

State = tuple[Tensor, ...]  # one layer's state: (h,) or (h, c), each (B, H)
Bounds = tuple[float, float] | None  # the range a quantity lives in (None: unbounded)

_TANH, _SIGMOID = (-1.0, 1.0), (0.0, 1.0)
C = TypeVar("C", bound="Cell")


class Cell(nn.Module):
    """Base class: parameters, initial state, input projection. Subclasses define the step."""

    summary: str = ""  # one line for the command line's --cell help
    gates: int = 1  # G, gate blocks stacked in the weight matrices
    gate_names: tuple[str, ...] = ("h",)  # the G blocks' names, top to bottom (PyTorch's order)
    state_tensors: int = 1  # tensors in the state tuple
    # the state tensors' names, h first (None: h, s1, s2, ...; see :meth:`state_labels`)
    state_names: tuple[str, ...] | None = None
    # the gates :meth:`gate_values` recomputes for introspection, in its order (none: only the state is shown)
    shown_gates: tuple[str, ...] = ()
    # the range of each shown quantity, state and gates (missing: unbounded)
    bounds: dict[str, Bounds] = {}
    # the torch module that computes the same function on the same weights (None: there is none, and training
    # runs the reference unroller)
    fused_cls: type[nn.RNNBase] | None = None
    fused_kwargs: dict = {}
    # torch's function for one step of this cell: (x, h or (h, c), w_ih, w_hh, b_ih, b_hh) -> h or (h, c)
    fused_step: staticmethod | None = None
    # whether the step is a function of the summed pre-activation alone (:meth:`activate`), so that inference
    # may multiply [x, h] by one packed matrix (the GRU's reset gate needs W_hn h apart: it may not)
    packs: bool = False
    # whether :meth:`sequence` runs a whole sequence by a hand-written recurrence (:mod:`rnnlab.nn.sequence`), in
    # C++ where the kernels are built and in Python elsewhere
    has_sequence: bool = False
    # a :meth:`sequence` in the C++ kernels alone, faster than torch's fused module up to this many units (None:
    # none); :mod:`rnnlab.nn.paths` chooses it
    kernel_sequence_max_hidden: int | None = None
    # the cell's code in the C++ decision loop (recurrences.cpp's enum Cell); None: the loop does not know it,
    # and sampling and free running take the packed Python step
    kernel_code: int | None = None
    # chrono initialisation (:func:`rnnlab.nn.init.init_gate_bias`): the gate block that keeps the previous state
    # (its bias set to log u, u ~ U[1, T_max - 1]) and the one that writes new input (set to minus that, or None);
    # None for a cell without gates
    keep_gate: int | None = None
    write_gate: int | None = None

    @classmethod
    def state_labels(cls) -> tuple[str, ...]:
        """The names of the state tensors, in the state tuple's order: :attr:`state_names`, or ``h, s1, s2, ...``."""
        names = cls.state_names
        if names is not None and len(names) == cls.state_tensors:
            return names
        return ("h", *(f"s{i}" for i in range(1, cls.state_tensors)))

    def gate_values(self, xp_t: Tensor, state: State) -> tuple[Tensor, ...]:
        """The gates :attr:`shown_gates` names, each (B, H), recomputed from the projected input xp_t (B, G*H) and
        the previous state as :meth:`step_projected` computes them (introspection; not on the training path)."""
        return ()

    def activate(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        """The step given ``z = W_ih x + b_ih + W_hh h + b_hh`` (B, G*H) (cells that ``pack``)."""
        raise NotImplementedError

    def activate_(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        """:meth:`activate` that may overwrite z, for inference (no gradient): the packed inference step."""
        return self.activate(z, state)

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        g = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def initial_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """Zeros: ``state_tensors`` tensors of shape (B, H)."""
        dtype = dtype or self.weight_hh.dtype
        device = device or self.weight_hh.device
        return tuple(torch.zeros(batch, self.hidden_size, device=device, dtype=dtype) for _ in range(self.state_tensors))

    def project_input(self, x: Tensor) -> Tensor:
        """(..., I) -> (..., G*H): the input's contribution to every gate."""
        return torch.nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Time-major x (T, B, I) -> h_1..h_T (T, B, H), final state, by one hand-written recurrence
        (cells with :attr:`has_sequence`): the same function as ``step_projected`` over every t."""
        raise NotImplementedError

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step: x_t (B, I), state -> h_t (B, H), new state (one call of :attr:`fused_step`)."""
        fn = type(self).fused_step
        if fn is None:
            return self.step_projected(self.project_input(x_t), state)
        out = fn(x_t, state if self.state_tensors > 1 else state[0],
                 self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        new = tuple(out) if self.state_tensors > 1 else (out,)
        return new[0], new

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


CELL_TYPES: dict[str, type[Cell]] = {}
"""The registered cells by name, in registration order (:func:`register_cell`): what ``--cell`` accepts."""


def register_cell(name: str) -> Callable[[type[C]], type[C]]:
    """A class decorator that enters a :class:`Cell` subclass in :data:`CELL_TYPES` under ``name``; the one step
    that makes a new cell usable everywhere (configs, the command line, checkpoints, serving, introspection).
    A name already taken raises a ValueError (a programming error, not a user's)."""
    if not name or not isinstance(name, str) or name != name.strip():
        raise ValueError(f"a cell's name must be a non-empty string without surrounding space, got {name!r}")

    def register(cls: type[C]) -> type[C]:
        if not (isinstance(cls, type) and issubclass(cls, Cell)):
            raise ValueError(f"register_cell takes a Cell subclass, got {cls!r}")
        if name in CELL_TYPES and CELL_TYPES[name] is not cls:
            raise ValueError(f"a cell named {name!r} is registered already ({CELL_TYPES[name].__name__})")
        CELL_TYPES[name] = cls
        return cls

    return register


def cell_name(cell: Cell | type[Cell]) -> str:
    """The name a cell (or cell class) is registered under; its class name where it is not registered."""
    cls = cell if isinstance(cell, type) else type(cell)
    for name, registered in CELL_TYPES.items():
        if registered is cls:
            return name
    return cls.__name__


def cell_summaries() -> dict[str, str]:
    """Every registered cell's name and its one-line :attr:`Cell.summary` (the command line's ``--cell`` help)."""
    return {name: cls.summary for name, cls in CELL_TYPES.items()}


@register_cell("elman")
class ElmanCell(Cell):
    r"""Elman RNN cell with a tanh nonlinearity.

    .. math::
        h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    with ``h_0 = 0``. Matches ``torch.nn.RNNCell(nonlinearity="tanh")``.
    """

    summary = "tanh units"
    gates, state_tensors = 1, 1
    bounds = {"h": _TANH}
    fused_cls = nn.RNN
    fused_kwargs = {"nonlinearity": "tanh"}
    fused_step = staticmethod(torch.rnn_tanh_cell)

    packs = True

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        return self.activate(torch.addmm(xp_t + self.bias_hh, state[0], self.weight_hh.t()), state)  # z: (B, H)

    has_sequence = True
    kernel_code = 0

    def sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        xp = F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)  # (T, B, H)
        out = elman_sequence(xp, state[0], self.weight_hh)  # (T, B, H)
        return out, (out[-1],)

    def activate(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        h = torch.tanh(z)  # (B, H)
        return h, (h,)


@register_cell("elman-relu")
class ElmanReLUCell(ElmanCell):
    r"""Elman RNN cell with rectified linear units, the cell of the IRNN (Le, Jaitly & Hinton 2015).

    .. math::
        h_t = \max(0, W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    with ``h_0 = 0``. Matches ``torch.nn.RNNCell(nonlinearity="relu")``. The state is not
    bounded: with ``W_hh = I`` and zero biases (``recurrent_init="identity"``) it starts by
    copying itself forward, so the gradient neither vanishes nor explodes at first, but a
    large learning rate lets it blow up (Le et al. use a small one, and clip).
    """

    summary = "rectified linear units, the IRNN's cell"
    bounds = {"h": None}  # 0 .. unbounded
    fused_kwargs = {"nonlinearity": "relu"}
    fused_step = staticmethod(torch.rnn_relu_cell)
    has_sequence = False  # the hand-written recurrence is tanh's; torch.nn.RNN(nonlinearity="relu") runs it
    kernel_code = None

    def activate(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        h = torch.relu(z)  # (B, H)
        return h, (h,)


@register_cell("lstm")
class LSTMCell(Cell):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997, with a forget gate).

    Gate blocks in the order i, f, g, o (as PyTorch):

    .. math::
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t)

    with ``h_0 = c_0 = 0``; the state is ``(h, c)``. Matches ``torch.nn.LSTMCell``.
    """

    summary = "long short-term memory"
    gates, state_tensors = 4, 2
    gate_names = ("i", "f", "g", "o")
    state_names = ("h", "c")
    shown_gates = gate_names
    bounds = {"h": _TANH, "c": None, "i": _SIGMOID, "f": _SIGMOID, "g": _TANH, "o": _SIGMOID}
    fused_cls = nn.LSTM
    fused_step = staticmethod(torch.lstm_cell)
    kernel_code = 2
    keep_gate, write_gate = 1, 0  # f keeps c_{t-1}, i writes g_t

    packs = True

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        return self.activate(torch.addmm(xp_t + self.bias_hh, state[0], self.weight_hh.t()), state)  # z: (B, 4H)

    def gate_values(self, xp_t: Tensor, state: State) -> tuple[Tensor, ...]:
        z = torch.addmm(xp_t + self.bias_hh, state[0], self.weight_hh.t())  # (B, 4H), as step_projected
        i, f, g, o = z.chunk(4, dim=1)  # each (B, H)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)

    def activate(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        c = state[1]
        i, f, g, o = z.chunk(4, dim=1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    kernel_sequence_max_hidden = 128  # above it oneDNN's LSTM measured faster (rnnlab.nn.paths chooses between them)

    def sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """By the C++ loop only (:func:`~rnnlab.nn.sequence.lstm_sequence`), where :mod:`rnnlab.nn.paths` says."""
        xp = F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)  # (T, B, 4H)
        out, cs = lstm_sequence(xp, state[0], state[1], self.weight_hh)  # (T, B, H) each
        return out, (out[-1], cs[-1])

    def activate_(self, z: Tensor, state: State) -> tuple[Tensor, State]:
        r"""In place, with one sigmoid over all four blocks, contiguous: :math:`\tanh g = 2\sigma(2g) - 1`,
        so :math:`c_t = f c_{t-1} + 2 i \sigma(2g) - i` (five transcendental calls on strided blocks cost
        1.7x this at 64 streams of 512 units; for a few rows the plain :meth:`activate` is 5% faster)."""
        if z.shape[0] < 8:
            return self.activate(z, state)
        n = self.hidden_size
        z[:, 2 * n:3 * n].mul_(2)
        i, f, g2, o = z.sigmoid_().chunk(4, dim=1)  # sigma(i), sigma(f), sigma(2g), sigma(o), each (B, H)
        c = torch.mul(f, state[1]).addcmul_(i, g2, value=2).sub_(i)  # (B, H)
        h = torch.tanh(c).mul_(o)
        return h, (h, c)


@register_cell("gru")
class GRUCell(Cell):
    r"""Gated recurrent unit (Cho et al. 2014), in PyTorch's formulation.

    Gate blocks in the order r, z, n:

    .. math::
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    with ``h_0 = 0``. The reset gate multiplies ``W_hn h + b_hn`` (as PyTorch and
    cuDNN), not ``h`` before the product as in Cho et al. Matches ``torch.nn.GRUCell``.
    """

    summary = "gated recurrent unit"
    gates, state_tensors = 3, 1
    gate_names = ("r", "z", "n")
    shown_gates = gate_names
    bounds = {"h": _TANH, "r": _SIGMOID, "z": _SIGMOID, "n": _TANH}
    fused_cls = nn.GRU
    fused_step = staticmethod(torch.gru_cell)
    kernel_code = 1
    keep_gate, write_gate = 1, None  # z keeps h_{t-1}; 1 - z writes n_t, so chrono sets z's bias alone

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        r, z, n = self.gate_values(xp_t, state)  # each (B, H)
        h = (1.0 - z) * n + z * h  # (B, H)
        return h, (h,)

    def gate_values(self, xp_t: Tensor, state: State) -> tuple[Tensor, ...]:
        hp = torch.addmm(self.bias_hh, state[0], self.weight_hh.t())  # (B, 3H)
        xr, xz, xn = xp_t.chunk(3, dim=1)
        hr, hz, hn = hp.chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        return r, torch.sigmoid(xz + hz), torch.tanh(xn + r * hn)

    has_sequence = True

    def sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        xp = F.linear(x, self.weight_ih, self.bias_ih)  # (T, B, 3H)
        out = gru_sequence(xp, state[0], self.weight_hh, self.bias_hh)  # (T, B, H)
        return out, (out[-1],)

