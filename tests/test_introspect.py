"""Looking inside: gates recomputed as each cell describes them agree with the cells themselves; the
activations are the unroller's; the scores are the model's softmax (all in float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.evaluate import evaluate_tokens
from rnnlab.introspect import (
    anatomy,
    layer_activations,
    rank_units,
    score_tokens,
    step_through,
    top_tokens,
)
from rnnlab.nn.cells import CELL_TYPES, Cell
from rnnlab.nn.models import RNNLanguageModel

V, H = 11, 7


def _model(cell: str, layers: int = 2) -> RNNLanguageModel:
    torch.manual_seed(0)
    m = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=H, num_layers=layers, dropout=0.0, embedding_size=5), V)
    return m.double().eval()


def _ids(n: int = 40, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n)


def test_every_cell_describes_what_it_shows():
    for cls in CELL_TYPES.values():
        body = anatomy(cls)
        assert body.state[0] == "h" and len(body.state) == cls.state_tensors
        assert set(body.quantities) <= set(body.bounds)
    assert anatomy(CELL_TYPES["lstm"]).quantities == ("h", "c", "i", "f", "g", "o")
    assert anatomy(CELL_TYPES["gru"]).quantities == ("h", "r", "z", "n")


def test_a_cell_that_shows_no_gates_still_shows_its_state():
    class Twin(Cell):
        state_tensors = 3

    assert anatomy(Twin).quantities == ("h", "s1", "s2")


@pytest.mark.parametrize("cell", sorted(CELL_TYPES))
def test_recomputed_gates_reproduce_the_cells_own_step(cell):
    torch.manual_seed(3)
    c = CELL_TYPES[cell](4, H).double()
    state = tuple(torch.randn(2, H, dtype=torch.float64) for _ in range(c.state_tensors))
    xp = c.project_input(torch.randn(2, 4, dtype=torch.float64))  # (B, G*H)
    body = anatomy(c)
    h, new = c.step_projected(xp, state)
    gates = dict(zip(body.gates, body.gate_fn(c, xp, state))) if body.gate_fn else {}
    if cell == "lstm":
        i, f, g, o = (gates[k] for k in "ifgo")
        torch.testing.assert_close(f * state[1] + i * g, new[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(o * torch.tanh(new[1]), h, rtol=0, atol=1e-12)
    elif cell == "gru":
        r, z, n = (gates[k] for k in "rzn")
        torch.testing.assert_close((1 - z) * n + z * state[0], h, rtol=0, atol=1e-12)
        assert ((r > 0) & (r < 1)).all()
    else:
        assert gates == {}
    for name, g in gates.items():
        lo, hi = body.bounds[name]
        assert (g >= lo).all() and (g <= hi).all(), name


@pytest.mark.parametrize("cell", sorted(CELL_TYPES))
def test_activations_are_the_unrollers_outputs_and_states(cell):
    m = _model(cell)
    ids = _ids()
    x = m.embed(torch.as_tensor(ids).unsqueeze(0))  # (1, T, I)
    with torch.no_grad():
        top, final = m.rnn(x, m.initial_state(1), fused=False)  # (1, T, H)
    for layer in range(2):
        acts = layer_activations(m, ids, layer)
        body = anatomy(m.rnn.cells[layer])
        assert list(acts) == list(body.quantities) and all(a.shape == (len(ids), H) for a in acts.values())
        for k, name in enumerate(body.state):  # the last step is the stack's final state
            np.testing.assert_allclose(acts[name][-1], final[layer][k][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(layer_activations(m, ids, 1)["h"], top[0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="layer must lie in"):
        layer_activations(m, ids, 2)


def test_scores_are_the_models_softmax_and_evaluate_agrees():
    m = _model("lstm")
    ids = _ids(60)
    s = score_tokens(m, ids, top=4)
    with torch.no_grad():
        p = torch.softmax(m(torch.as_tensor(ids).unsqueeze(0))[0][0], dim=-1).numpy()  # (N, V)
    np.testing.assert_allclose(s.prob, p[np.arange(len(ids) - 1), ids[1:]], rtol=1e-12)
    order = np.argsort(-p[:-1], axis=-1, kind="stable")[:, :4]
    assert (s.top_ids == order).all()
    np.testing.assert_allclose(s.top_probs, np.take_along_axis(p[:-1], order, axis=-1), rtol=1e-12)
    assert s.running_bits[-1] == pytest.approx(evaluate_tokens(m, ids, batch_size=1)["bits"], rel=1e-9)
    assert s.running_bits[0] == pytest.approx(s.bits[0])
    assert len(score_tokens(m, ids[:1]).logprob) == 0  # one token: nothing to predict


def test_rank_units_and_top_tokens_order_ties_by_index():
    vals = np.array([[0.0, 1.0, 5.0, 1.0], [0.0, -1.0, 5.0, -1.0]])  # std 0, 1, 0, 1
    order, std = rank_units(vals)
    assert order.tolist() == [1, 3, 0, 2] and std.tolist() == [1.0, 1.0, 0.0, 0.0]
    ids, probs = top_tokens(np.array([0.2, 0.4, 0.2, 0.2]), 3)
    assert ids.tolist() == [1, 0, 2] and probs.tolist() == [0.4, 0.2, 0.2]


@pytest.mark.parametrize("input_layer", ["onehot", "embedding"])
def test_step_through_an_elman_network_is_its_equations(input_layer):
    """The oracle: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) layer by layer from zeros,
    y_t = softmax(W_ho h_t + b_o), written out with the model's own weights in NumPy."""
    torch.manual_seed(3)
    model = RNNLanguageModel(ModelConfig(cell="elman", hidden_size=H, num_layers=2, dropout=0.0, input=input_layer,
                                         embedding_size=5), V).double().eval()
    ids = _ids(25, seed=4)
    got = step_through(model, ids)
    w = {k: v.detach().numpy() for k, v in model.named_parameters()}
    x = np.eye(V)[ids] if input_layer == "onehot" else w["embedding.weight"][ids]  # (T, I)
    np.testing.assert_allclose(got.inputs, x, atol=1e-12)
    for k, cell in enumerate(model.rnn.cells):
        wih, whh = cell.weight_ih.detach().numpy(), cell.weight_hh.detach().numpy()
        bih, bhh = cell.bias_ih.detach().numpy(), cell.bias_hh.detach().numpy()
        h, hs = np.zeros(H), []
        for x_t in x:
            h = np.tanh(wih @ x_t + bih + whh @ h + bhh)
            hs.append(h)
        x = np.array(hs)  # (T, H): the next layer's input
        np.testing.assert_allclose(got.hidden[k], x, atol=1e-12)
    z = x @ w["decoder.weight"].T + w["decoder.bias"]  # (T, V)
    y = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got.probs, y / y.sum(axis=1, keepdims=True), atol=1e-12)
    # one fused pass gives the same predictions
    scores = score_tokens(model, ids)
    np.testing.assert_allclose(np.log(got.probs[np.arange(len(ids) - 1), ids[1:]]), scores.logprob, atol=1e-10)
