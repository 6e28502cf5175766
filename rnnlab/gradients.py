r"""Gradient flow through time: how much of the loss's gradient reaches each step's state.

For a recurrent network with top-layer outputs :math:`h_1..h_T` and a loss L, the
gradient that reaches :math:`h_t` is, by the chain rule through the recurrence,

.. math::
    \frac{\partial L}{\partial h_t} = \frac{\partial L}{\partial h_t}\Big|_{\text{direct}}
      + \Big(\frac{\partial h_{t+1}}{\partial h_t}\Big)^{\!\top} \frac{\partial L}{\partial h_{t+1}},
    \qquad
    \frac{\partial h_{t+1}}{\partial h_t} = \operatorname{diag}(1 - h_{t+1}^2)\, W_{hh}
    \ \text{(Elman)},

so with the loss at the last step only, :math:`\partial L/\partial h_t = \prod_{s=t+1}^{T}
(\partial h_s/\partial h_{s-1})^\top \, \partial L/\partial h_T`: a product of T - t
Jacobians that shrinks or grows geometrically (Bengio et al. 1994; Pascanu, Mikolov &
Bengio 2013). For a linear RNN with :math:`W_{hh} = a Q` (Q orthogonal) it is exactly
:math:`\|\partial L/\partial h_t\| = a^{T-t} \|\partial L/\partial h_T\|`.
:func:`gradient_norms_per_step` measures the curve :math:`t \mapsto \|\partial L/\partial h_t\|`
for any cell; :func:`recurrent_spectra` gives the spectral radius and norm of the
recurrent weights (Pascanu et al.: the largest singular value below :math:`1/\gamma`,
with :math:`\gamma = 1` for tanh, is sufficient for vanishing; a spectral radius above 1
is necessary for exploding); :func:`gradient_report` and :func:`plot_gradient_norms` put
elman, lstm and gru side by side; :func:`norm_preserving_penalty` is the regulariser of
Pascanu et al. (their eq. 9) that asks every step to keep the gradient's norm.

Shapes: tokens (B, T) or inputs (B, T, I); per-step outputs (B, H); curves (T,).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from rnnlab.config import ModelConfig
from rnnlab.errors import ConfigError
from rnnlab.nn.cells import CELL_TYPES, Cell, cell_name
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.nn.stack import RecurrentStack

Model = RNNLanguageModel | RecurrentStack | Cell
LossFn = Callable[[Tensor], Tensor]  # top-layer outputs (B, T, H) -> per-example losses (B,)

def _cells(model: Model) -> list[Cell]:
    if isinstance(model, RNNLanguageModel):
        return model.rnn.cells
    if isinstance(model, RecurrentStack):
        return model.cells
    if isinstance(model, Cell):
        return [model]
    raise ConfigError(f"expected an RNNLanguageModel, a RecurrentStack or a Cell, got {type(model).__name__}")


def _readout_loss(out: Tensor, loss: str) -> Tensor:
    r"""The default loss of a stack or a cell: a fixed unit readout :math:`\ell_t = \mathbf{1}^\top h_t / \sqrt{H}`.

    Its gradient at the last step is the unit vector :math:`\mathbf{1}/\sqrt{H}`, so with
    ``loss="last"`` the curve starts at 1 and shows the gain of the Jacobian product itself.
    """
    per_step = out.sum(-1) / math.sqrt(out.shape[-1])  # (B, T)
    return per_step[:, -1] if loss == "last" else per_step.sum(1)  # (B,)


def gradient_norms_per_step(model: Model, inputs: Tensor, loss: Literal["last", "all"] = "last",
                            targets: Tensor | None = None, state: Any = None,
                            loss_fn: LossFn | None = None) -> np.ndarray:
    r"""The curve :math:`\|\partial L / \partial h_t\|` for t = 1..T: an array (T,).

    ``h_t`` is the top layer's output at step t (the state that the next step reads,
    so the gradient includes everything that flows back through later steps). For an
    LSTM it is the gradient that reaches :math:`h_t`; the cell state :math:`c_t` carries
    its own, not counted here.

    The loss, per example b (``loss="last"``: the last step's loss only; ``"all"``: the
    sum of every step's loss):

    * ``RNNLanguageModel`` -- ``inputs``: tokens (B, T) (or soft inputs (B, T, V)),
      ``targets`` (B, T) required; the step loss is the cross entropy of that step's
      prediction, in nats.
    * ``RecurrentStack`` or a single ``Cell`` -- ``inputs`` (B, T, I) floats; the step
      loss is a fixed unit readout :math:`\ell_t = \sum_i h_{t,i} / \sqrt{H}`, so with
      ``loss="last"`` the curve is 1 at t = T and shows the Jacobian product alone.
    * ``loss_fn`` (any model) replaces both: it maps the top-layer outputs (B, T, H) to
      per-example losses (B,) (``loss`` and ``targets`` are then not used).

    Batch: every example's loss is differentiated with respect to its own states (the
    examples do not interact), and the returned value is the **mean over the batch of
    the per-example norms** :math:`\frac{1}{B}\sum_b \|\partial \ell^{(b)} / \partial h^{(b)}_t\|_2`
    -- not the norm over the batch, which would grow with B.

    The model runs step by step through ``step`` of its stack (never the fused path, whose
    per-step states are not tensors of the graph), in evaluation mode (no dropout; the
    mode is restored), in the model's dtype; ``state`` is the initial state (zeros if None).
    """
    if loss not in ("last", "all"):
        raise ConfigError(f"loss must be 'last' or 'all', got {loss!r}")
    cells = _cells(model)
    if inputs.ndim < 2 or inputs.shape[1] < 1:
        raise ConfigError(f"inputs must be (B, T) tokens or (B, T, I) values with T >= 1, got {tuple(inputs.shape)}")
    b, t_len = inputs.shape[:2]
    if loss_fn is None and isinstance(model, RNNLanguageModel):
        if targets is None:
            raise ConfigError("a language model needs targets (B, T): the loss is the cross entropy of its predictions")
        if tuple(targets.shape) != (b, t_len):
            raise ConfigError(f"targets must have shape (B, T) = {(b, t_len)}, got {tuple(targets.shape)}")
    elif targets is not None:
        raise ConfigError("targets are used only for a language model without loss_fn")
    if not isinstance(model, RNNLanguageModel) and (inputs.ndim != 3 or not inputs.is_floating_point()):
        raise ConfigError(f"a stack or a cell reads float inputs (B, T, I), got {tuple(inputs.shape)} {inputs.dtype}")

    p = cells[0].weight_hh
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            if isinstance(model, RNNLanguageModel):
                x = model.embed(inputs)  # (B, T, I)
                step = model.rnn.step
                state = model.initial_state(b) if state is None else state
            elif isinstance(model, RecurrentStack):
                x, step = inputs, model.step
                state = model.initial_state(b, p.device, p.dtype) if state is None else state
            else:
                x, step = inputs, model.step
                state = model.initial_state(b, p.device, p.dtype) if state is None else state
            # a leaf that needs a gradient, so every h_t is in the graph even with frozen weights
            x = x.to(p.dtype).detach().requires_grad_(True)  # (B, T, I)
            hs: list[Tensor] = []
            for t in range(t_len):
                h, state = step(x[:, t], state)  # h: (B, H)
                top = state[-1][0] if isinstance(model, (RNNLanguageModel, RecurrentStack)) else state[0]
                assert h is top, "a cell's output h_t must be the state tensor that the next step reads"
                hs.append(h)
            out = torch.stack(hs, dim=1)  # (B, T, H)
            if loss_fn is not None:
                per_example = loss_fn(out)
                if tuple(per_example.shape) != (b,):
                    raise ConfigError(f"loss_fn must return per-example losses (B,) = ({b},), got {tuple(per_example.shape)}")
            elif isinstance(model, RNNLanguageModel):
                logits = model.decoder(out)  # (B, T, V)
                ce = F.cross_entropy(logits.reshape(b * t_len, -1), targets.reshape(-1),  # type: ignore[union-attr]
                                     reduction="none").view(b, t_len)  # (B, T)
                per_example = ce[:, -1] if loss == "last" else ce.sum(1)  # (B,)
            else:
                per_example = _readout_loss(out, loss)  # (B,)
            grads = torch.autograd.grad(per_example.sum(), hs, allow_unused=True)
        norms = torch.stack([torch.zeros(b, dtype=p.dtype, device=p.device) if g is None else g.norm(dim=1)
                             for g in grads], dim=1)  # (B, T)
        return norms.mean(0).detach().cpu().double().numpy()  # (T,)
    finally:
        model.train(was_training)


def norm_preserving_penalty(hs: Sequence[Tensor], loss: Tensor) -> Tensor:
    r"""The norm-preserving regulariser of Pascanu, Mikolov & Bengio (2013, eq. 9), differentiable.

    .. math::
        \Omega = \frac{1}{B} \sum_{b=1}^{B} \sum_{k=1}^{T-1}
          \left( \frac{\| g^{(b)}_{k+1}\, \partial h^{(b)}_{k+1} / \partial h^{(b)}_k \|}
                      {\| g^{(b)}_{k+1} \|} - 1 \right)^2,
        \qquad g_{k+1} = \frac{\partial E}{\partial h_{k+1}}

    ``hs`` are the top layer's outputs :math:`h_1..h_T`, each (B, H), exactly the tensors the
    recurrence ran through (the unrolled path: ``RecurrentStack.step`` or ``unroll``, whose
    step k + 1 reads the tensor ``hs[k]``; slices of the fused path's output are not in the
    recurrence's graph and are refused); ``loss`` is the scalar E computed from them.
    :math:`g_{k+1}` is the whole gradient that reaches :math:`h_{k+1}` (through every later
    step), and :math:`g_{k+1}\,\partial h_{k+1}/\partial h_k` is the part of it that one step
    of the recurrence carries back to :math:`h_k`: a vector-Jacobian product, so the
    Jacobian is never formed. Each term asks one step to keep the gradient's norm: 0 when
    it does, 1 when the step kills it.

    As in the paper, :math:`g_{k+1}` is treated as a constant (it is detached). The
    vector-Jacobian products are built with ``create_graph=True``, so the gradient of
    :math:`\Omega` reaches every parameter that the Jacobians depend on: ``weight_hh``
    directly, and through the states at which the nonlinearity's derivative is taken
    (for Elman :math:`\partial h_{k+1}/\partial h_k = \operatorname{diag}(1 - h_{k+1}^2)
    W_{hh}`) the input weights, the biases and the earlier states too. The paper's eq. 10
    keeps only the immediate dependence on :math:`W_{rec}` (states held constant as
    well); this is the full derivative of :math:`\Omega` with :math:`g` fixed.

    For a multi-layer stack or an LSTM, :math:`\partial h_{k+1}/\partial h_k` is the top
    layer's output at k + 1 with respect to its output at k, the lower layers' states and
    an LSTM's cell state :math:`c_k` held fixed (the paths through :math:`c_{k+1}` are
    included).

    Batch: the norms are per example (the examples do not interact), the ratio is
    invariant to the loss's scale (a mean or a sum over the batch gives the same
    :math:`\Omega`), the terms are summed over the T - 1 transitions as in the paper, and
    averaged over the batch. A term whose :math:`\|g^{(b)}_{k+1}\|` is zero (no gradient
    reaches that step) is left out (counted as 0).

    Closed form: a linear RNN :math:`h_{k+1} = W h_k + \dots` with :math:`W = aQ`, Q
    orthogonal, has :math:`\|g\,W\| = a\|g\|` for every g, so :math:`\Omega = (T - 1)(a - 1)^2`
    exactly, for any loss and batch; it is 0 for an orthogonal W.

    Cost: T - 1 small backward passes (each through one step), plus their double
    backward when :math:`\Omega` is differentiated.
    """
    hs = list(hs)
    if not hs:
        raise ConfigError("hs must hold the per-step outputs h_1..h_T (at least one)")
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ConfigError(f"loss must be a scalar tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
    if any(h.ndim != 2 or h.shape != hs[0].shape for h in hs):
        raise ConfigError(f"every h_t must be (B, H) of one shape, got {sorted({tuple(h.shape) for h in hs})}")
    if not loss.requires_grad or not all(h.requires_grad for h in hs):
        raise ConfigError("the loss and every h_t must be part of an autograd graph (computed with gradients on)")
    if any(a._base is not None and a._base is b._base for a, b in zip(hs, hs[1:])):
        raise ConfigError("hs are slices of one tensor (the fused path's output?): they must be the states the "
                          "recurrence ran through (the unrolled path)")
    zero = loss.new_zeros(())
    if len(hs) < 2:
        return zero  # no transition to regularise
    with torch.enable_grad():
        grads = torch.autograd.grad(loss, hs, retain_graph=True, allow_unused=True)  # dE/dh_t, each (B, H)
        terms = []
        for k in range(len(hs) - 1):
            g = grads[k + 1]
            if g is None:  # the loss does not reach h_{k+1}: nothing to preserve
                continue
            g = g.detach()  # (B, H), a constant as in the paper
            (v,) = torch.autograd.grad(hs[k + 1], hs[k], grad_outputs=g, create_graph=True,
                                       allow_unused=True)  # g dh_{k+1}/dh_k: (B, H)
            if v is None:
                raise ConfigError(f"h_{k + 2} does not depend on h_{k + 1}: hs must be the states the recurrence ran "
                                  "through (the unrolled path), not slices of a fused output")
            g_norm, v_norm = g.norm(dim=1), v.norm(dim=1)  # (B,), (B,)
            ok = g_norm > 0
            ratio = v_norm / torch.where(ok, g_norm, torch.ones_like(g_norm))  # (B,)
            terms.append(torch.where(ok, (ratio - 1.0) ** 2, torch.zeros_like(ratio)))
    if not terms:
        return zero
    return torch.stack(terms, dim=1).sum(1).mean(0)  # sum over transitions, mean over the batch


def _matrix(w: Tensor | np.ndarray) -> np.ndarray:
    return w.detach().cpu().double().numpy() if isinstance(w, Tensor) else np.asarray(w, dtype=np.float64)


def spectral_radius(weight: Tensor | np.ndarray) -> float:
    r"""The largest absolute eigenvalue :math:`\rho(W) = \max_i |\lambda_i(W)|` of a square matrix (H, H)."""
    w = _matrix(weight)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.size == 0:
        raise ConfigError(f"the spectral radius needs a square matrix (H, H), got shape {w.shape}")
    return float(np.abs(np.linalg.eigvals(w)).max())


def spectral_norm(weight: Tensor | np.ndarray) -> float:
    r"""The largest singular value :math:`\sigma_{\max}(W) = \|W\|_2` of any matrix."""
    w = _matrix(weight)
    if w.ndim != 2 or w.size == 0:
        raise ConfigError(f"the spectral norm needs a matrix, got shape {w.shape}")
    return float(np.linalg.norm(w, 2))


def recurrent_spectra(model: Model) -> list[dict[str, Any]]:
    r"""For every layer, the spectra of its recurrent weight ``weight_hh`` (G*H, H).

    One dict per layer (bottom first), JSON-able::

        {"layer": 0, "cell": "lstm", "gates": ["i", "f", "g", "o"],
         "radius": {"i": ..., "f": ..., "g": ..., "o": ...},
         "norm": {"i": ..., "f": ..., "g": ..., "o": ..., "whole": ...}}

    ``radius`` is the spectral radius of each gate's square block :math:`W_{h\cdot}` (H, H)
    (for Elman the one block ``"h"`` is the whole matrix); ``norm`` is the largest
    singular value of each block and of the whole stacked matrix, which for LSTM and GRU
    is (G*H, H), not square, so it has a norm but no spectral radius.
    """
    out = []
    for k, cell in enumerate(_cells(model)):
        name = cell_name(cell)
        gates = cell.gate_names
        blocks = _matrix(cell.weight_hh).reshape(cell.gates, cell.hidden_size, cell.hidden_size)  # (G, H, H)
        out.append({
            "layer": k, "cell": name, "gates": list(gates),
            "radius": {g: spectral_radius(w) for g, w in zip(gates, blocks)},
            "norm": {**{g: spectral_norm(w) for g, w in zip(gates, blocks)}, "whole": spectral_norm(cell.weight_hh)},
        })
    return out


def gradient_report(cells: Sequence[str] = ("elman", "lstm", "gru"), hidden_size: int = 64, length: int = 100,
                    seed: int = 0, batch_size: int = 8, vocab_size: int = 32, num_layers: int = 1,
                    loss: Literal["last", "all"] = "last", recurrent_gain: float = 1.0,
                    dtype: torch.dtype = torch.float64, clip_norm: float = 0.0) -> dict[str, Any]:
    r"""Per-step gradient curves of freshly initialised language models, one per cell, JSON-able.

    Each model is an :class:`RNNLanguageModel` (one-hot input, ``num_layers`` layers of
    ``hidden_size``, no dropout) initialised from ``seed`` as ``rnnlab train`` would
    (PyTorch's uniform initialisation), with every ``weight_hh`` multiplied by
    ``recurrent_gain`` (> 1 to provoke exploding gradients). All cells read the same
    ``batch_size`` random sequences of ``length`` tokens of a vocabulary of
    ``vocab_size`` with random targets, and :func:`gradient_norms_per_step` measures the
    curve (``dtype`` float64 by default, so that a curve that vanishes to 1e-30 is still
    measured rather than flushed to zero). The global torch RNG is left as it was.

    Clipping (``clip_norm`` > 0, as ``--clip-norm`` in training): the gradient of the
    batch's loss :math:`\bar L = \frac1B \sum_b \ell^{(b)}` with respect to every parameter,
    :math:`g = \nabla_\theta \bar L`, is rescaled when its norm is above the threshold c,

    .. math:: g \leftarrow g \cdot f, \qquad f = \min\!\big(1,\ c / \|g\|_2\big),

    and since the backward pass is linear in the loss's gradient, every
    :math:`\partial L/\partial h_t` of that update is scaled by the same f: the clipped curve
    is ``clip_factor * norms``. On a log axis it moves down as a whole; its slope, the
    vanishing or exploding with the distance T - t, stays. ``grad_norm`` is
    :math:`\|g\|_2` before clipping and ``clip_factor`` is 1 with clipping off.

    Returns ``{"config": {...the arguments...}, "steps": [1..T], "cells": {name:
    {"norms": [T floats], "spectra": recurrent_spectra(model), "first_over_last":
    norms[0] / norms[-1], "grad_norm": ||g||, "clip_factor": f, "clipped_norms":
    [T floats]}}}``; a curve may hold ``inf`` or ``nan`` if it overflowed
    (write it with :func:`rnnlab.jsonio.dumps`, which turns them into ``null``).
    """
    problems = [f"unknown cell {c!r} (expected one of {', '.join(CELL_TYPES)})" for c in cells if c not in CELL_TYPES]
    if not cells:
        problems.append("cells must name at least one cell")
    for name, v in (("hidden_size", hidden_size), ("length", length), ("batch_size", batch_size),
                    ("vocab_size", vocab_size), ("num_layers", num_layers)):
        if not isinstance(v, int) or v < 1:
            problems.append(f"{name} must be an integer >= 1, got {v!r}")
    if loss not in ("last", "all"):
        problems.append(f"loss must be 'last' or 'all', got {loss!r}")
    if not (isinstance(recurrent_gain, (int, float)) and math.isfinite(recurrent_gain) and recurrent_gain > 0):
        problems.append(f"recurrent_gain must be a positive number, got {recurrent_gain!r}")
    if not (isinstance(clip_norm, (int, float)) and math.isfinite(clip_norm) and clip_norm >= 0):
        problems.append(f"clip_norm must be a number >= 0 (0: off), got {clip_norm!r}")
    if problems:
        raise ConfigError(problems)

    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, vocab_size, (batch_size, length)))  # (B, T)
    targets = torch.from_numpy(rng.integers(0, vocab_size, (batch_size, length)))  # (B, T)
    report: dict[str, Any] = {
        "config": {"cells": list(cells), "hidden_size": hidden_size, "length": length, "seed": seed,
                   "batch_size": batch_size, "vocab_size": vocab_size, "num_layers": num_layers, "loss": loss,
                   "recurrent_gain": recurrent_gain, "dtype": str(dtype).removeprefix("torch."),
                   "clip_norm": clip_norm},
        "steps": list(range(1, length + 1)),
        "cells": {},
    }
    for cell in cells:
        cfg = ModelConfig(cell=cell, hidden_size=hidden_size, num_layers=num_layers, dropout=0.0,  # type: ignore[arg-type]
                          input="onehot", fused=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = RNNLanguageModel(cfg, vocab_size).to(dtype)
        with torch.no_grad():
            for c in model.rnn.cells:
                c.weight_hh.mul_(recurrent_gain)
        norms = gradient_norms_per_step(model, tokens, loss=loss, targets=targets)
        ratio = float(norms[0] / norms[-1]) if norms[-1] > 0 else float("nan")
        g_norm = parameter_gradient_norm(model, tokens, targets, loss=loss)
        factor = min(1.0, clip_norm / g_norm) if clip_norm > 0 and g_norm > 0 else 1.0
        report["cells"][cell] = {"norms": [float(v) for v in norms], "spectra": recurrent_spectra(model),
                                 "first_over_last": ratio, "grad_norm": g_norm, "clip_factor": factor,
                                 "clipped_norms": [float(v) * factor for v in norms]}
    return report


def parameter_gradient_norm(model: RNNLanguageModel, tokens: Tensor, targets: Tensor,
                            loss: Literal["last", "all"] = "last") -> float:
    r"""The global norm :math:`\|\nabla_\theta \bar L\|_2` over every parameter, before any clipping.

    :math:`\bar L = \frac1B \sum_b \ell^{(b)}` with the per-example loss of
    :func:`gradient_norms_per_step` (the last step's cross entropy, or the sum over the
    steps): the norm that ``torch.nn.utils.clip_grad_norm_`` compares with the threshold.
    tokens, targets (B, T). The model runs in evaluation mode through the unrolled path
    (the mode is restored); its ``.grad`` fields are not touched.
    """
    if tokens.ndim != 2 or tuple(targets.shape) != tuple(tokens.shape):
        raise ConfigError(f"tokens and targets must both be (B, T), got {tuple(tokens.shape)} and "
                          f"{tuple(targets.shape)}")
    b, t_len = tokens.shape
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits, _ = model(tokens, fused=False)  # (B, T, V)
            ce = F.cross_entropy(logits.reshape(b * t_len, -1), targets.reshape(-1),
                                 reduction="none").view(b, t_len)  # (B, T)
            per_example = ce[:, -1] if loss == "last" else ce.sum(1)  # (B,)
            grads = torch.autograd.grad(per_example.mean(), params, allow_unused=True)
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
    finally:
        model.train(was_training)


def connectivity(model: RNNLanguageModel, tokens: Tensor | np.ndarray, blocks: int = 4) -> np.ndarray:
    r"""How strongly each prediction depends on each earlier input: a matrix C (N - 1, N - 1).

    For a text of N tokens :math:`x_0..x_{N-1}` the model reads :math:`x_0..x_{N-2}`
    and predicts after each; with :math:`e_s` the input vector of position s (the
    embedding :math:`E[x_s]`, or the one-hot of :math:`x_s`),

    .. math::
        C_{t,s} = \left\| \frac{\partial \log p(x_{t+1} \mid x_{\le t})}{\partial e_s} \right\|_2,
        \qquad 0 \le s, t \le N - 2,

    the gradient magnitude of the log probability the model gives the true next token
    at position t with respect to each input (the connectivity of Madsen, "Visualizing
    memorization in RNNs", Distill 2019). A prediction cannot depend on later inputs:
    :math:`C_{t,s} = 0` for s > t, exactly.

    The N - 1 gradients come from a few forward and backward passes: the text is
    repeated as a batch, row t's loss being its own log probability at t, in
    ``blocks`` groups of consecutive rows, each group reading the text only as far as
    its last row needs (about 5/8 of the work of one pass over every row with
    ``blocks=4``).
    The model runs in evaluation mode (no dropout; the mode is restored), on the path
    its config chooses, in its own dtype, from the zero state.

    ``tokens``: ids (N,) with N >= 2. Returns C as float64 (N - 1, N - 1).
    """
    ids = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, Tensor) else tokens)
    if ids.ndim != 1 or ids.shape[0] < 2 or ids.is_floating_point():
        raise ConfigError(f"connectivity needs token ids (N,) with N >= 2, got {tuple(ids.shape)} {ids.dtype}")
    if int(ids.min()) < 0 or int(ids.max()) >= model.vocab_size:
        raise ConfigError(f"token ids must lie in [0, {model.vocab_size}), got {int(ids.min())}..{int(ids.max())}")
    device = model.decoder.weight.device
    ids = ids.to(device=device, dtype=torch.long)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ConfigError(f"blocks must be an integer >= 1, got {blocks!r}")
    m = ids.shape[0] - 1  # predictions (and inputs read)
    c = np.zeros((m, m), dtype=np.float64)  # (M, M)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            e = model.embed(ids[None, :-1]).detach()  # (1, M, I)
            size = -(-m // blocks)
            for lo in range(0, m, size):
                hi = min(m, lo + size)  # rows lo..hi-1 read inputs 0..hi-1
                x = e[:, :hi].expand(hi - lo, hi, e.shape[-1]).clone().requires_grad_(True)  # (R, hi, I)
                out, _ = model.rnn(x, model.initial_state(hi - lo), fused=model.cfg.fused)  # (R, hi, H)
                logp = torch.log_softmax(model.readout(out), dim=-1)  # (R, hi, V)
                t = torch.arange(lo, hi, device=device)  # (R,)
                picked = logp[t - lo, t, ids[t + 1]]  # (R,): row t's log p(x_{t+1} | x_<=t)
                (grad,) = torch.autograd.grad(picked.sum(), x)  # (R, hi, I)
                c[lo:hi, :hi] = grad.norm(dim=-1).detach().cpu().double().numpy()
        return c
    finally:
        model.train(was_training)


def strongest_inputs(c: np.ndarray, top: int = 3) -> list[list[tuple[int, float]]]:
    r"""For each prediction t of a connectivity matrix C (N - 1, N - 1) (:func:`connectivity`), the ``top``
    earlier positions s <= t it depends on most, with :math:`C_{t,s} / \max_s C_{t,s}` (1 for the strongest),
    strongest first: ``[[(s, share), ...], ...]``."""
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ConfigError(f"a connectivity matrix is square (N - 1, N - 1), got shape {c.shape}")
    out = []
    for t in range(c.shape[0]):
        row = c[t, :t + 1]  # (t + 1,)
        peak = row.max()
        order = np.argsort(-row, kind="stable")[:top]
        out.append([(int(s), float(row[s] / peak) if peak > 0 else 0.0) for s in order])
    return out


def plot_connectivity(c: np.ndarray, tokens: Sequence[str], path: str | os.PathLike[str] | None,
                      title: str | None = None) -> Figure:
    r"""A heat map of a connectivity matrix C (N - 1, N - 1) (:func:`connectivity`): row t (the prediction
    after position t) against column s (the input), each row divided by its largest value, the cells after
    t left blank. ``tokens``: the N symbols of the text (the axes are labelled with them; every k-th of a
    long text). The file is written atomically (``path`` None: no file); returns the matplotlib figure.
    """
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or len(tokens) != c.shape[0] + 1:
        raise ConfigError(f"expected C (N - 1, N - 1) and N tokens, got C {c.shape} and {len(tokens)} tokens")
    m = c.shape[0]
    peak = c.max(axis=1, keepdims=True)  # (M, 1)
    shown = np.where(np.tril(np.ones((m, m), dtype=bool)), c / np.where(peak > 0, peak, 1.0), np.nan)  # (M, M)
    size = min(12.0, 3.0 + 0.12 * m)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="|∂ log p(x_{t+1}) / ∂e_s| ÷ its largest at t")
    every = max(1, -(-m // 60))
    ticks = list(range(0, m, every))
    label = [repr(tok)[1:-1] or " " for tok in tokens]
    ax.set_xticks(ticks, [label[s] for s in ticks], fontsize=7, family="monospace")
    ax.set_yticks(ticks, [f"{label[t]} → {label[t + 1]}" for t in ticks], fontsize=7, family="monospace")
    ax.set_xlabel("input s (the character read)")
    ax.set_ylabel("prediction t (read → next)")
    ax.set_title(title or "connectivity: how much each prediction depends on each earlier input", fontsize=10)
    fig.tight_layout()
    from rnnlab.plots import save_figure

    return save_figure(fig, path)


def plot_gradient_norms(report: dict[str, Any], path: str | os.PathLike[str] | None,
                        title: str | None = None) -> Figure:
    r"""A PNG of every curve of ``report`` (from :func:`gradient_report`) against t, log scale.

    Zero or non-finite values are left out of the line (a log axis cannot show them).
    The file is written atomically (``path`` None: no file); returns the matplotlib figure.
    """
    cells = report.get("cells")
    if not isinstance(cells, dict) or not cells:
        raise ConfigError("the report has no curves: expected report['cells'] = {name: {'norms': [...]}}")
    cfg = report.get("config", {})
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, entry in cells.items():
        y = np.array([np.nan if v is None else v for v in entry["norms"]], dtype=np.float64)  # (T,)
        y[~np.isfinite(y) | (y <= 0)] = np.nan
        x = np.arange(1, len(y) + 1)
        label = name
        spectra = entry.get("spectra") or []
        if spectra and len(spectra[0]["gates"]) == 1:  # one block: its spectral radius says it all
            label += f"  (ρ(W_hh) = {spectra[0]['radius'][spectra[0]['gates'][0]]:.2f})"
        ax.plot(x, y, label=label, linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂L/∂h_t‖ (mean over the batch)")
    where = {"last": "loss at the last step", "all": "loss summed over the sequence"}.get(cfg.get("loss"), "")
    default = "gradient reaching each step" + (f" ({where}, H = {cfg['hidden_size']})" if where and "hidden_size" in cfg else "")
    ax.set_title(title or default, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from rnnlab.plots import save_figure

    return save_figure(fig, path)
