"""The norm-preserving regulariser of Pascanu et al. (2013): closed forms for linear RNNs, explicit
Jacobians for every cell, and its gradient against finite differences of a hand-written version."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from rnnlab.errors import ConfigError
from rnnlab.gradients import norm_preserving_penalty
from rnnlab.nn import RecurrentStack
from rnnlab.nn.cells import CELL_TYPES, Cell, State
from rnnlab.nn.init import init_recurrent

D = torch.float64


class LinearCell(Cell):
    r"""A linear RNN behind the cell interface: h_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh."""

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = torch.addmm(xp_t + self.bias_hh, h, self.weight_hh.t())  # (B, H)
        return h, (h,)


def _linear(h: int, w: Tensor) -> LinearCell:
    cell = LinearCell(3, h).to(D)
    with torch.no_grad():
        cell.weight_hh.copy_(w)
    return cell


def _run(cell: Cell, x: Tensor) -> list[Tensor]:
    """h_1..h_T through the cell's own step, each (B, H)."""
    state = cell.initial_state(x.shape[0], dtype=x.dtype)
    hs = []
    for t in range(x.shape[1]):
        h, state = cell.step(x[:, t], state)
        hs.append(h)
    return hs


def _orthogonal(h: int, seed: int) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(h, h, dtype=D, generator=torch.Generator().manual_seed(seed)))
    return q


@pytest.mark.parametrize("a", [0.5, 0.9, 1.0, 1.3])
def test_a_linear_rnn_with_w_a_times_orthogonal_gives_t_minus_1_times_a_minus_1_squared(a):
    h, t_len = 5, 12
    cell = _linear(h, a * _orthogonal(h, 2))
    x = torch.randn(3, t_len, 3, dtype=D)
    hs = _run(cell, x)
    r = torch.randn(t_len, h, dtype=D)
    loss = sum(((hs[t] @ r[t]) ** 2).mean() for t in range(t_len))  # any loss: every ratio is a
    omega = norm_preserving_penalty(hs, loss)
    # ||g (aQ)|| = a ||g|| for every g: each of the T - 1 terms is (a - 1)^2, for every example
    assert omega.item() == pytest.approx((t_len - 1) * (a - 1) ** 2, abs=1e-12)
    # a ratio of norms: the loss's scale (a sum over the batch instead of a mean) does not matter
    assert norm_preserving_penalty(hs, 7.0 * loss).item() == pytest.approx(omega.item(), abs=1e-12)


def test_an_orthogonal_w_with_identity_activation_preserves_every_norm():
    cell = LinearCell(3, 6).to(D)
    init_recurrent(cell, "orthogonal")  # the library's orthogonal initialisation: exactly norm-preserving
    hs = _run(cell, torch.randn(4, 9, 3, dtype=D))
    loss = torch.stack(hs, 1).pow(3).sum()
    assert norm_preserving_penalty(hs, loss).item() == pytest.approx(0.0, abs=1e-12)


def test_the_terms_are_per_example_and_averaged_over_the_batch():
    """W = diag(d) and example b's loss reads unit i_b of h_T: every gradient of example b lies along
    e_{i_b}, so each of its T - 1 ratios is |d_{i_b}| and Omega = mean_b (T - 1)(|d_{i_b}| - 1)^2.
    (Norms over the whole batch at once would give another number.)"""
    d = torch.tensor([0.5, -2.0, 1.0, 0.8], dtype=D)
    t_len, units = 6, [0, 1, 3, 0, 2]
    cell = _linear(4, torch.diag(d))
    hs = _run(cell, torch.randn(len(units), t_len, 3, dtype=D))
    loss = hs[-1][torch.arange(len(units)), units].sum()
    expected = np.mean([(t_len - 1) * (abs(d[i].item()) - 1) ** 2 for i in units])
    assert norm_preserving_penalty(hs, loss).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cell_name", ["elman", "lstm", "gru"])
def test_every_cell_matches_explicit_jacobians(cell_name):
    """Each term from the Jacobian of one step, formed explicitly (the other state parts held fixed)."""
    torch.manual_seed(3)
    cell = CELL_TYPES[cell_name](2, 4).to(D)
    x = torch.randn(3, 5, 2, dtype=D)
    state = cell.initial_state(3, dtype=D)
    hs, states, xps = [], [], []
    for t in range(5):
        xp = cell.project_input(x[:, t])
        states.append(state)
        xps.append(xp)
        h, state = cell.step_projected(xp, state)
        hs.append(h)
    loss = torch.stack(hs, 1).sin().sum()
    g = torch.autograd.grad(loss, hs, retain_graph=True)
    expected = 0.0
    for k in range(4):
        rest = states[k + 1][1:]  # (c_k,) for the LSTM: held fixed
        for b in range(3):
            def one_step(h, k=k, b=b, rest=rest):
                return cell.step_projected(xps[k + 1][b:b + 1].detach(), (h, *(r[b:b + 1].detach() for r in rest)))[0]
            jac = torch.autograd.functional.jacobian(one_step, hs[k][b:b + 1].detach())[0, :, 0, :]  # (H, H)
            gb = g[k + 1][b]
            expected += ((gb @ jac).norm() / gb.norm() - 1).item() ** 2 / 3
    assert norm_preserving_penalty(hs, loss).item() == pytest.approx(expected, rel=1e-10)


def _elman_penalty_by_hand(w_hh: Tensor, cell: Cell, x: Tensor, g0: list[Tensor]) -> Tensor:
    """The formula written out for Elman with the gradients g0 held fixed:
    g dh_{k+1}/dh_k = (g * (1 - h_{k+1}^2)) W_hh (row vectors)."""
    h = torch.zeros(x.shape[0], w_hh.shape[0], dtype=D)
    hs = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ w_hh.T + cell.bias_hh)
        hs.append(h)
    total = torch.zeros((), dtype=D)
    for k in range(len(hs) - 1):
        g = g0[k + 1]
        v = (g * (1 - hs[k + 1] ** 2)) @ w_hh  # (B, H)
        total = total + ((v.norm(dim=1) / g.norm(dim=1) - 1) ** 2).mean()
    return total


def test_the_gradient_matches_finite_differences_of_the_formula_with_g_held_fixed():
    torch.manual_seed(0)
    cell = CELL_TYPES["elman"](2, 3).to(D)
    with torch.no_grad():
        cell.weight_hh.mul_(3.0)  # away from the identity: every term matters
    x = torch.randn(2, 5, 2, dtype=D)
    hs = _run(cell, x)
    loss = (torch.stack(hs, 1) ** 2).sum() + hs[-1][:, 0].sum()
    g0 = [g.detach() for g in torch.autograd.grad(loss, hs, retain_graph=True)]
    omega = norm_preserving_penalty(hs, loss)
    w0 = cell.weight_hh.detach().clone()
    with torch.no_grad():
        assert omega.item() == pytest.approx(_elman_penalty_by_hand(w0, cell, x, g0).item(), rel=1e-12)
    (grad,) = torch.autograd.grad(omega, cell.weight_hh, retain_graph=True)
    eps = 1e-6
    fd = torch.zeros_like(w0)
    with torch.no_grad():
        for i in range(3):
            for j in range(3):
                e = torch.zeros_like(w0)
                e[i, j] = eps
                fd[i, j] = (_elman_penalty_by_hand(w0 + e, cell, x, g0) - _elman_penalty_by_hand(w0 - e, cell, x, g0)) / (2 * eps)
    assert grad.abs().max() > 1e-3  # not trivially zero
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-9)
    # the input weights reach it too, through the states at which tanh' is taken
    assert torch.autograd.grad(omega, cell.weight_ih)[0].abs().max() > 0


def test_multi_layer_stacks_give_a_finite_penalty_with_a_gradient_for_every_recurrent_weight():
    for name in ("elman", "lstm", "gru"):
        torch.manual_seed(1)
        stack = RecurrentStack(name, 3, 5, num_layers=2, dropout=0.3).to(D).train()
        x = torch.randn(2, 7, 3, dtype=D)
        state = stack.initial_state(2, dtype=D)
        hs = []
        for t in range(7):
            h, state = stack.step(x[:, t], state)
            hs.append(h)
        omega = norm_preserving_penalty(hs, torch.stack(hs, 1).sum())
        assert torch.isfinite(omega) and omega.item() > 0
        grads = torch.autograd.grad(omega, [c.weight_hh for c in stack.cells])
        assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads), name


def test_bad_inputs_are_config_errors():
    stack = RecurrentStack("gru", 3, 4).to(D)
    x = torch.randn(2, 5, 3, dtype=D)
    out, _ = stack(x, fused=True)
    with pytest.raises(ConfigError, match="unrolled path"):  # slices of the fused output are not the recurrence
        norm_preserving_penalty(list(out.unbind(1)), out.sum())
    hs = _run(stack.cells[0], x)
    with pytest.raises(ConfigError, match="scalar"):
        norm_preserving_penalty(hs, torch.stack(hs).sum(-1))
    with pytest.raises(ConfigError, match="at least one"):
        norm_preserving_penalty([], out.sum())
    with pytest.raises(ConfigError, match="autograd graph"):
        norm_preserving_penalty([h.detach() for h in hs], out.sum())
    assert norm_preserving_penalty(hs[:1], hs[0].sum()).item() == 0.0  # one step: no transition
