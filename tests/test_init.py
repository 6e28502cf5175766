"""Recurrent initialisation: orthogonal and identity gate blocks, the default left alone, on any module."""

from __future__ import annotations

import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.errors import ConfigError
from rnnlab.nn import RecurrentStack, RNNLanguageModel
from rnnlab.nn.classifier import RNNClassifier
from rnnlab.nn.init import SCHEMES, init_recurrent, recurrent_cells

CELLS = ["elman", "lstm", "gru"]


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
