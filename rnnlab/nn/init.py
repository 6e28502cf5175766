r"""Initialisation of the recurrent weights: one of the lecture's cures for vanishing gradients.

:func:`init_recurrent` re-initialises the recurrent matrix ``weight_hh`` (G*H, H) of every
cell (:mod:`rnnlab.nn.cells`) inside a module -- a cell, a
:class:`~rnnlab.nn.stack.RecurrentStack`, a language model, a classifier, anything that
holds cells. Each of the G gate blocks :math:`W_{h\cdot}` (H, H) is treated on its own
(PyTorch's layout stacks the gate blocks top to bottom: i, f, g, o for the LSTM; r, z, n
for the GRU; one block for Elman).

Schemes:

* ``"default"`` -- leave PyTorch's initialisation (every parameter uniform in
  :math:`(-1/\sqrt{H}, 1/\sqrt{H})`); nothing is changed.
* ``"orthogonal"`` -- every gate block an orthogonal matrix,
  :math:`W_{h\cdot}^\top W_{h\cdot} = I` (``torch.nn.init.orthogonal_`` per block; Saxe,
  McClelland & Ganguli 2014). All singular values are 1, so a *linear* recurrence
  neither shrinks nor grows the gradient's norm (Arjovsky et al. 2016 keep it so during
  training; here only the start is orthogonal). The biases keep their default.
* ``"identity"`` -- the IRNN of Le, Jaitly & Hinton (2015): every gate block the identity
  :math:`W_{h\cdot} = I` and the cell's biases zero. In the paper the cell has one
  bias *b*; our cells carry two whose sum is *b* (``bias_ih + bias_hh``, PyTorch's
  layout), so both are set to zero. Departures from the paper: the paper's IRNN uses
  ReLU units, our Elman cell is tanh (near zero tanh is the identity, so the start
  still copies the state forward; it saturates for large states); and for the LSTM and
  GRU "identity per gate block" is a plain generalisation, not from the paper (with
  zero biases every gate starts half open).

Input weights ``weight_ih`` are never touched. Modules that are not rnnlab cells
(``torch.nn.LSTM`` and the like) are ignored; a stack's fused path uses the cells'
own parameters, so it sees the new values too.

:func:`init_gate_bias` sets the gate biases of the gated cells, the cure that belongs to
them: ``"chrono"`` (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?").
A gated cell whose keep gate sits at :math:`\sigma(b)` forgets with a characteristic time
of about :math:`1 / (1 - \sigma(b))` steps. Chrono spreads those times over the range of
dependencies the task has: for each unit, independently,

.. math::
    b_{keep} = \log u, \quad u \sim \mathcal{U}[1, T_{max} - 1], \qquad b_{write} = -b_{keep}

(the LSTM's forget gate keeps and its input gate writes; the GRU's update gate z keeps
and ``1 - z`` writes, so only z's bias is set). In PyTorch's layout the bias is the sum
``bias_ih + bias_hh``: ``bias_ih`` takes the value and ``bias_hh`` is zeroed, for those
gate blocks only. With T_max = 100, a unit's forget gate starts between
:math:`\sigma(0) = 0.5` and :math:`\sigma(\log 99) = 0.99`.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import ConfigError
from rnnlab.nn.cells import Cell

SCHEMES = ("default", "orthogonal", "identity")
"""The recurrent initialisations :func:`init_recurrent` knows."""

GATE_SCHEMES = ("default", "chrono")
"""The gate-bias initialisations :func:`init_gate_bias` knows."""

__all__ = ["GATE_SCHEMES", "SCHEMES", "init_gate_bias", "init_recurrent", "recurrent_cells"]


def recurrent_cells(module: nn.Module) -> list[Cell]:
    """Every :class:`~rnnlab.nn.cells.Cell` inside ``module`` (``module`` itself included), in module order."""
    return [m for m in module.modules() if isinstance(m, Cell)]


@torch.no_grad()
def init_recurrent(module: nn.Module, scheme: str, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise ``weight_hh`` of every cell in ``module`` by ``scheme`` (one of :data:`SCHEMES`), in place.

    ``generator`` draws the orthogonal matrices (default: torch's global RNG). Returns
    ``module``. A :class:`~rnnlab.errors.ConfigError` for an unknown scheme, or for
    ``"orthogonal"``/``"identity"`` on a module that holds no rnnlab cell (probably a
    mistake: nothing would change).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"recurrent_init must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if scheme == "default":
        return module
    cells = recurrent_cells(module)
    if not cells:
        raise ConfigError(f"recurrent_init {scheme!r}: {type(module).__name__} holds no recurrent cell")
    for cell in cells:
        h = cell.hidden_size
        blocks = cell.weight_hh.view(cell.gates, h, h)  # (G, H, H): a view, so writing a block writes weight_hh
        for block in blocks:
            if scheme == "orthogonal":
                nn.init.orthogonal_(block, generator=generator)
            else:
                block.copy_(torch.eye(h, dtype=block.dtype, device=block.device))
        if scheme == "identity":
            cell.bias_hh.zero_()
            cell.bias_ih.zero_()
    return module


@torch.no_grad()
def init_gate_bias(module: nn.Module, scheme: str, t_max: int = 0, generator: torch.Generator | None = None
                   ) -> nn.Module:
    """Set the gate biases of every gated cell in ``module`` by ``scheme`` (one of :data:`GATE_SCHEMES`), in place.

    ``"chrono"``: each unit's keep-gate bias ``log u``, ``u ~ U[1, t_max - 1]`` (drawn with ``generator``,
    default torch's global RNG), the write gate's ``-log u`` (see the module's docstring). Returns
    ``module``. A :class:`~rnnlab.errors.ConfigError` for an unknown scheme, for ``t_max < 3``, or for
    ``"chrono"`` on a module without a gated cell (an Elman RNN has no gate to set).
    """
    if scheme not in GATE_SCHEMES:
        raise ConfigError(f"gate_init must be one of {', '.join(GATE_SCHEMES)}, got {scheme!r}")
    if scheme == "default":
        return module
    if not isinstance(t_max, int) or isinstance(t_max, bool) or t_max < 3:
        raise ConfigError(f"chrono initialisation needs T_max >= 3 (the longest dependency, in steps), got {t_max!r}")
    cells = [c for c in recurrent_cells(module) if c.keep_gate is not None]
    if not cells:
        raise ConfigError(f"gate_init {scheme!r} sets the gates of LSTM and GRU cells; {type(module).__name__} has "
                          f"none (an Elman RNN has no gate)")
    for cell in cells:
        h = cell.hidden_size
        u = torch.empty(h, dtype=torch.float64).uniform_(1.0, t_max - 1.0, generator=generator)  # (H,)
        b = torch.log(u).to(cell.bias_ih.dtype)  # (H,): 0 .. log(T_max - 1)
        for gate, sign in ((cell.keep_gate, 1.0), (cell.write_gate, -1.0)):
            if gate is None:
                continue
            cell.bias_ih[gate * h:(gate + 1) * h] = sign * b
            cell.bias_hh[gate * h:(gate + 1) * h] = 0.0
    return module
