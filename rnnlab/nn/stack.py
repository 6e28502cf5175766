"""One multi-layer unroller for every cell, and the fused fast path beside it.

``RecurrentStack`` holds ``num_layers`` cells of one kind. It runs a sequence two ways
that compute the same function on the same parameters:

* :meth:`unroll` -- the generic loop: for each layer, the input projection of all T
  steps as one matrix product, then ``cell.step_projected`` once per step. Works for
  any :class:`~rnnlab.nn.cells.Cell` and never asks which kind it is.
* :meth:`fused` -- the fastest path for the cell and device, as :func:`rnnlab.nn.paths.training`
  chooses it: on the CPU, Elman and GRU layers (and LSTM layers of at most 128 units, where the C++
  kernels are built, on one thread or without :mod:`rnnlab.allocator`'s setting) run
  :mod:`rnnlab.nn.sequence`'s hand-written recurrences (one product per step forwards
  and backwards, the weight gradient as one product over all steps); otherwise
  ``torch.nn.RNN/LSTM/GRU`` (oneDNN's LSTM on the CPU, cuDNN on a GPU) called
  through :func:`torch.func.functional_call` with this stack's own parameters. Either
  way the fast path trains exactly the weights the unroller and the samplers use.

Dropout with probability p acts on the output of every layer but the last (as
``torch.nn.LSTM(dropout=p)``); the language model adds one more before its softmax.

Shapes: x (B, T, I) -> out (B, T, H); a state is a tuple over layers of each
cell's state tuple, every tensor (B, H).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from rnnlab.nn import paths
from rnnlab.nn.cells import CELL_TYPES, Cell, State

StackState = tuple[State, ...]  # one State per layer

# cuDNN takes an RNN's weights as one buffer; the cells own theirs, so each fused call on a GPU packs
# them (one copy of the weights on the device) and PyTorch would warn about it in every run. Installed
# once here: a catch_warnings() around every call would reset Python's once-per-place warning records.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


def detach_state(state: StackState) -> StackState:
    """The same state cut from the graph (truncated BPTT carries values, not gradients)."""
    return tuple(tuple(t.detach() for t in layer) for layer in state)


class RecurrentStack(nn.Module):
    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        cls = CELL_TYPES[cell]
        self.cell, self.hidden_size, self.num_layers, self.dropout = cell, hidden_size, num_layers, dropout
        self.cell_type = cls  # every layer's Cell subclass (what rnnlab.nn.paths reads)
        self.layers = nn.ModuleList(
            [cls(input_size if k == 0 else hidden_size, hidden_size) for k in range(num_layers)])
        # The fused module is a template only: built on the meta device (no memory, never
        # trained), kept out of this module's parameters and state_dict (a plain list hides
        # it); functional_call gives it this stack's parameters on every call.
        self._template = [] if cls.fused_cls is None else [
            cls.fused_cls(input_size, hidden_size, num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0,
                          batch_first=True, device="meta", **cls.fused_kwargs)]

    @property
    def cells(self) -> list[Cell]:
        return list(self.layers)  # type: ignore[arg-type]

    def initial_state(self, batch: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> StackState:
        return tuple(c.initial_state(batch, device, dtype) for c in self.cells)

    def forward(self, x: Tensor, state: StackState | None = None, fused: bool = True) -> tuple[Tensor, StackState]:
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        return self.fused(x, state) if fused else self.unroll(x, state)

    # the generic unroller ------------------------------------------------------------
    def unroll(self, x: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """Layer by layer, step by step: x (B, T, I) -> (B, T, H)."""
        new_state = []
        for k, cell in enumerate(self.cells):
            xp = cell.project_input(x)  # (B, T, G*H): all T input products at once
            s = state[k]
            outs = []
            for xp_t in xp.unbind(1):  # unbind, not xp[:, t]: one backward node instead of T slices
                h, s = cell.step_projected(xp_t, s)  # h: (B, H)
                outs.append(h)
            x = torch.stack(outs, dim=1)  # (B, T, H)
            if k < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            new_state.append(s)
        return x, tuple(new_state)

    def step(self, x_t: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """One time step through every layer: x_t (B, I) -> h_t (B, H) of the top layer."""
        new_state = []
        for k, cell in enumerate(self.cells):
            x_t, s = cell.step(x_t, state[k])
            if k < self.num_layers - 1 and self.dropout > 0:
                x_t = F.dropout(x_t, self.dropout, self.training)
            new_state.append(s)
        return x_t, tuple(new_state)

    def steps(self, x: Tensor, state: StackState) -> tuple[list[Tensor], StackState]:
        """:meth:`step` over every t: x (B, T, I) -> the top layer's h_1..h_T, each (B, H), as the
        recurrence ran through them (what a penalty on dh_{t+1}/dh_t needs), and the final state."""
        hs = []
        for x_t in x.unbind(1):  # (B, I) each
            h, state = self.step(x_t, state)  # (B, H)
            hs.append(h)
        return hs, state

    # the fused fast path --------------------------------------------------------------
    def _fused_params(self) -> dict[str, Tensor]:
        params = {}
        for k, cell in enumerate(self.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                params[f"{name}_l{k}"] = getattr(cell, name)
        return params

    def fused(self, x: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """The same function as :meth:`unroll`, by the path :func:`rnnlab.nn.paths.training` chooses: on the CPU
        :meth:`sequences` for the Elman RNN, the GRU and small LSTMs (see :mod:`rnnlab.nn.paths`); else (other
        LSTMs, whose ``torch.nn.LSTM`` runs on oneDNN, and every cell on a GPU) :meth:`torch_fused`; a cell with no
        fused torch module (``fused_cls`` None) and no hand-written recurrence runs :meth:`unroll`."""
        choice = paths.training(paths.Machine.of_tensor(x), paths.Network.of(self, x.shape[0]), x.shape[1])
        if choice.path == "sequences":
            return self.sequences(x, state)
        return self.unroll(x, state) if choice.path == "unroll" else self.torch_fused(x, state)

    def sequences(self, x: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """Layer by layer, each by its cell's :meth:`~rnnlab.nn.cells.Cell.sequence` (time-major inside)."""
        x = x.transpose(0, 1)  # (T, B, I)
        new_state = []
        for k, cell in enumerate(self.cells):
            x, s = cell.sequence(x, state[k])  # (T, B, H)
            if k < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            new_state.append(s)
        return x.transpose(0, 1), tuple(new_state)  # (B, T, H)

    def torch_fused(self, x: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """The same function as :meth:`unroll`, computed by torch's fused module."""
        if not self._template:
            raise TypeError(f"{self.cell_type.__name__} has no fused torch module (fused_cls); use unroll")
        template = self._template[0]
        template.train(self.training)
        n = len(state[0])
        hx = tuple(torch.stack([layer[i] for layer in state]) for i in range(n))  # each (L, B, H)
        out, h_n = functional_call(template, self._fused_params(), (x, hx if n == 2 else hx[0]))
        h_n = h_n if isinstance(h_n, tuple) else (h_n,)
        new_state = tuple(tuple(t[k] for t in h_n) for k in range(self.num_layers))
        return out, new_state
