"""Recurrent initialisation: orthogonal and identity gate blocks, chrono gate biases, the default left alone,
on any module."""

from __future__ import annotations

import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.errors import ConfigError
from rnnlab.nn import RecurrentStack, RNNLanguageModel
from rnnlab.nn.classifier import RNNClassifier
from rnnlab.nn.init import GATE_SCHEMES, SCHEMES, init_gate_bias, init_recurrent, recurrent_cells

CELLS = ["elman", "elman-relu", "lstm", "gru"]


def _blocks(cell) -> torch.Tensor:
    h = cell.hidden_size
    return cell.weight_hh.detach().view(cell.gates, h, h)  # (G, H, H)


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("cell", CELLS)
def test_orthogonal_makes_every_gate_block_orthogonal_and_touches_nothing_else(cell):
    stack = RecurrentStack(cell, 3, 6, num_layers=2)
    before = _snapshot(stack)
    assert init_recurrent(stack, "orthogonal") is stack
    eye = torch.eye(6)
    for k, c in enumerate(stack.cells):
        for g, w in enumerate(_blocks(c)):
            assert torch.allclose(w.T @ w, eye, atol=1e-5), (k, g)  # W^T W = I
            assert torch.allclose(w @ w.T, eye, atol=1e-5), (k, g)  # square, so W W^T = I as well
        assert not torch.equal(c.weight_hh, before[f"layers.{k}.weight_hh"])
        for name in ("weight_ih", "bias_ih", "bias_hh"):
            assert torch.equal(getattr(c, name), before[f"layers.{k}.{name}"]), name
    # the gate blocks are drawn independently, not one block repeated
    if stack.cells[0].gates > 1:
        b = _blocks(stack.cells[0])
        assert not torch.allclose(b[0], b[1])


@pytest.mark.parametrize("cell", CELLS)
def test_identity_is_the_irnn_start_per_gate_block(cell):
    stack = RecurrentStack(cell, 4, 5, num_layers=2)
    before = _snapshot(stack)
    init_recurrent(stack, "identity")
    for k, c in enumerate(stack.cells):
        assert torch.equal(_blocks(c), torch.eye(5).expand(c.gates, 5, 5))
        assert torch.count_nonzero(c.bias_hh) == 0 and torch.count_nonzero(c.bias_ih) == 0
        assert torch.equal(c.weight_ih, before[f"layers.{k}.weight_ih"])


def test_identity_elman_copies_its_state_forward_with_zero_input():
    """With W_hh = I, zero biases and no input, h_t = tanh(h_{t-1}): the state is kept (to first order)."""
    stack = RecurrentStack("elman", 2, 4).double()
    init_recurrent(stack, "identity")
    h0 = torch.full((1, 4), 1e-4, dtype=torch.float64)
    out, _ = stack(torch.zeros(1, 5, 2, dtype=torch.float64), ((h0,),), fused=False)
    assert torch.allclose(out[0, -1], h0[0], rtol=1e-6)


def test_default_changes_nothing():
    model = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=8, num_layers=2, dropout=0.0), 11)
    before = _snapshot(model)
    init_recurrent(model, "default")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_every_cell_of_any_module_is_found():
    cfg = ModelConfig(cell="gru", hidden_size=4, num_layers=2, dropout=0.0, embedding_size=3)
    clf = RNNClassifier(cfg, num_classes=3, vocab_size=7, bidirectional=True)  # two stacks of two layers
    assert len(recurrent_cells(clf)) == 4
    init_recurrent(clf, "identity")
    for c in recurrent_cells(clf):
        assert torch.equal(_blocks(c), torch.eye(4).expand(3, 4, 4))
    single = RecurrentStack("lstm", 2, 3).cells[0]  # a bare cell is a module holding itself
    init_recurrent(single, "identity")
    assert torch.equal(_blocks(single), torch.eye(3).expand(4, 3, 3))


def test_a_generator_makes_the_orthogonal_draw_reproducible():
    a, b = RecurrentStack("lstm", 2, 5), RecurrentStack("lstm", 2, 5)
    init_recurrent(a, "orthogonal", generator=torch.Generator().manual_seed(3))
    init_recurrent(b, "orthogonal", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.cells[0].weight_hh, b.cells[0].weight_hh)


@pytest.mark.parametrize("cell", CELLS)
def test_the_fused_path_sees_the_new_weights(cell):
    stack = RecurrentStack(cell, 3, 4, num_layers=2).double()
    init_recurrent(stack, "orthogonal")
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    assert torch.allclose(stack(x, fused=True)[0], stack(x, fused=False)[0], atol=1e-12)


def test_bad_scheme_or_a_module_without_cells_is_a_config_error():
    with pytest.raises(ConfigError, match="recurrent_init must be one of default, orthogonal, identity"):
        init_recurrent(RecurrentStack("elman", 2, 3), "xavier")
    with pytest.raises(ConfigError, match="holds no recurrent cell"):
        init_recurrent(torch.nn.Linear(3, 3), "orthogonal")
    init_recurrent(torch.nn.Linear(3, 3), "default")  # nothing to do, nothing wrong
    assert SCHEMES == ("default", "orthogonal", "identity")


def test_the_schemes_are_the_configs():
    from rnnlab.config import RECURRENT_INITS
    from rnnlab.nn.init import SCHEMES

    assert SCHEMES == RECURRENT_INITS


# chrono gate biases -------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, keep, write", [("lstm", 1, 0), ("gru", 1, None)])
def test_chrono_draws_the_keep_gate_bias_from_log_uniform_and_touches_nothing_else(cell, keep, write):
    h, t_max = 4000, 100
    stack = RecurrentStack(cell, 3, h, num_layers=2)
    before = _snapshot(stack)
    init_gate_bias(stack, "chrono", t_max, generator=torch.Generator().manual_seed(0))
    after = _snapshot(stack)
    for k, c in enumerate(stack.cells):
        b_ih, b_hh = c.bias_ih.detach().view(c.gates, h), c.bias_hh.detach().view(c.gates, h)
        u = torch.exp(b_ih[keep].double())  # u ~ U[1, T_max - 1]
        assert u.min() >= 1 - 1e-5 and u.max() <= t_max - 1 + 1e-4
        assert u.mean().item() == pytest.approx(t_max / 2, rel=0.03)  # U[1, 99] has mean 50, sd 28 / sqrt(4000)
        assert u.std().item() == pytest.approx((t_max - 2) / 12 ** 0.5, rel=0.05)
        assert (b_hh[keep] == 0).all()  # the sum b_ih + b_hh is the drawn bias
        if write is not None:
            assert torch.equal(b_ih[write], -b_ih[keep]) and (b_hh[write] == 0).all()
        others = [g for g in range(c.gates) if g not in (keep, write)]
        for g in others:  # every other gate block, and every weight, as it was
            assert torch.equal(b_ih[g], before[f"layers.{k}.bias_ih"].view(c.gates, h)[g])
            assert torch.equal(b_hh[g], before[f"layers.{k}.bias_hh"].view(c.gates, h)[g])
        for name in ("weight_ih", "weight_hh"):
            assert torch.equal(after[f"layers.{k}.{name}"], before[f"layers.{k}.{name}"])
    # the two layers draw apart
    assert not torch.equal(stack.cells[0].bias_ih, stack.cells[1].bias_ih)


def test_chrono_makes_an_lstm_remember_over_its_range():
    """The point of chrono: with zero input, an LSTM's cell state decays as prod f_t; chrono's forget gates
    keep a good part of it after T_max / 4 steps, where PyTorch's default has lost it all."""
    torch.manual_seed(0)
    decays = {}
    for scheme in ("default", "chrono"):
        cell = RecurrentStack("lstm", 1, 256).cells[0]
        with torch.no_grad():
            cell.weight_hh.zero_()  # f_t = sigmoid(b_f): the gate alone
        init_gate_bias(cell, scheme, 200)
        f = torch.sigmoid((cell.bias_ih + cell.bias_hh).detach().view(4, 256)[1])
        decays[scheme] = (f ** 50).mean().item()
    assert decays["default"] < 1e-10 and decays["chrono"] > 0.3


def test_chrono_on_a_cell_without_gates_or_a_bad_t_max_is_a_config_error():
    with pytest.raises(ConfigError, match="an Elman RNN has no gate"):
        init_gate_bias(RecurrentStack("elman", 2, 3), "chrono", 100)
    with pytest.raises(ConfigError, match="T_max >= 3"):
        init_gate_bias(RecurrentStack("lstm", 2, 3), "chrono", 2)
    with pytest.raises(ConfigError, match="gate_init must be one of default, chrono"):
        init_gate_bias(RecurrentStack("lstm", 2, 3), "unit-forget")
    stack = RecurrentStack("elman", 2, 3)
    before = _snapshot(stack)
    init_gate_bias(stack, "default", 0)  # nothing to do, nothing wrong
    assert all(torch.equal(v, before[k]) for k, v in _snapshot(stack).items())


def test_the_gate_schemes_are_the_configs():
    from rnnlab.config import GATE_INITS

    assert GATE_SCHEMES == GATE_INITS
