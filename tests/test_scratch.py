"""BPTT by hand: against central finite differences, against autograd on the repo's PyTorch
Elman language model (same weights, float64), then the contract (training, sampling, errors)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.errors import ConfigError, DataError
from rnnlab.nn import RNNLanguageModel, sequence_loss
from rnnlab.scratch import (
    PARAM_NAMES,
    TORCH_KEYS,
    ScratchRNN,
    adagrad_step,
    backward,
    clip_gradients,
    forward,
    from_torch_state_dict,
    global_norm,
    sgd_step,
    to_torch_state_dict,
    train_scratch,
)

V, H, B, T = 5, 4, 3, 6


def _batch(seed: int, b: int = B, t: int = T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (b, t)), rng.integers(0, V, (b, t)), rng.normal(0, 0.5, (b, H))


def _model(seed: int = 0) -> ScratchRNN:
    m = ScratchRNN(V, H, seed=seed)
    for n in m.params:  # larger than PyTorch's init, so that tanh is far from linear
        m.params[n] *= 3.0
    return m


@pytest.mark.parametrize("single", [False, True])
def test_hand_gradients_equal_central_finite_differences(single):
    m = _model(1)
    x, y, h0 = _batch(2)
    if single:
        x, y, h0 = x[0], y[0], h0[0]
    loss, cache = m.forward(x, y, h0)
    grads = m.backward(cache)
    eps = 1e-6
    for name in PARAM_NAMES:
        p = m.params[name]
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = m.forward(x, y, h0)[0]
            p[i] = old - eps
            down = m.forward(x, y, h0)[0]
            p[i] = old
            num[i] = (up - down) / (2 * eps)
        assert grads[name].shape == p.shape
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-9, err_msg=name)
    num_h0 = np.zeros_like(h0)
    for i in np.ndindex(h0.shape):
        hp, hm = h0.copy(), h0.copy()
        hp[i] += eps
        hm[i] -= eps
        num_h0[i] = (m.forward(x, y, hp)[0] - m.forward(x, y, hm)[0]) / (2 * eps)
    assert grads["h0"].shape == h0.shape
    np.testing.assert_allclose(grads["h0"], num_h0, rtol=1e-6, atol=1e-9)
    # a wrong backward (say, forgetting the tanh derivative) would be far off: the check is not vacuous
    assert np.abs(grads["weight_hh"]).max() > 1e-3


def _torch_model(m: ScratchRNN, fused: bool) -> RNNLanguageModel:
    cfg = ModelConfig(cell="elman", hidden_size=H, num_layers=1, dropout=0.0, input="onehot", fused=fused)
    tm = RNNLanguageModel(cfg, V).double()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(m.params).items()})
    return tm


def test_torch_keys_are_the_models_state_dict():
    cfg = ModelConfig(cell="elman", hidden_size=H, num_layers=1, dropout=0.0, input="onehot")
    sd = RNNLanguageModel(cfg, V).state_dict()
    assert set(sd) == set(TORCH_KEYS.values())
    m = ScratchRNN(V, H)
    for name, key in TORCH_KEYS.items():
        assert tuple(sd[key].shape) == m.params[name].shape


@pytest.mark.parametrize("fused", [False, True])
def test_loss_and_every_gradient_equal_pytorch(fused):
    m = _model(3)
    x, y, h0 = _batch(4)
    loss, cache = m.forward(x, y, h0)
    grads = m.backward(cache)

    tm = _torch_model(m, fused)
    th0 = torch.from_numpy(h0).requires_grad_(True)
    logits, state = tm(torch.from_numpy(x), ((th0,),))
    tloss = sequence_loss(logits, torch.from_numpy(y))
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-12
    np.testing.assert_allclose(cache.last_state, state[0][0].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache.p, torch.softmax(logits, -1).detach().numpy(), rtol=0, atol=1e-12)
    tparams = dict(tm.named_parameters())
    for name, key in TORCH_KEYS.items():
        np.testing.assert_allclose(grads[name], tparams[key].grad.numpy(), rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(grads["h0"], th0.grad.numpy(), rtol=0, atol=1e-10)


def test_weights_round_trip_through_a_torch_state_dict():
    m = ScratchRNN(V, H, seed=5)
    tm = _torch_model(m, fused=True)
    back = from_torch_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert set(back) == set(PARAM_NAMES)
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(back[n], m.params[n])
    m2 = ScratchRNN(V, H, params=back)
    x, y, _ = _batch(6)
    assert m2.forward(x, y)[0] == m.forward(x, y)[0]


def test_a_foreign_state_dict_is_refused_naming_the_keys():
    sd = RNNLanguageModel(ModelConfig(cell="elman", hidden_size=H, num_layers=2, input="onehot"), V).state_dict()
    with pytest.raises(ConfigError, match="rnn.layers.1"):
        from_torch_state_dict({k: v.numpy() for k, v in sd.items()})
    sd = RNNLanguageModel(ModelConfig(cell="elman", hidden_size=H, num_layers=1, input="embedding"), V).state_dict()
    with pytest.raises(ConfigError, match="embedding.weight"):
        from_torch_state_dict({k: v.numpy() for k, v in sd.items()})
    good = to_torch_state_dict(ScratchRNN(V, H).params)
    good["decoder.bias"] = np.zeros(V + 1)
    with pytest.raises(ConfigError, match="bias_ho"):
        from_torch_state_dict(good)


def test_initialisation_is_pytorchs_and_seeded():
    a, b, c = ScratchRNN(V, 16, seed=1), ScratchRNN(V, 16, seed=1), ScratchRNN(V, 16, seed=2)
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(a.params[n], b.params[n])
        assert np.abs(a.params[n]).max() <= 1 / math.sqrt(16)
        assert a.params[n].dtype == np.float64
    assert not np.array_equal(a.params["weight_hh"], c.params["weight_hh"])


def test_one_sequence_is_a_batch_of_one_and_h0_defaults_to_zeros():
    m = _model(12)
    x, y, _ = _batch(13, b=1)
    loss_b, cache_b = m.forward(x, y)
    loss_s, cache_s = m.forward(x[0], y[0])
    assert loss_s == loss_b == m.forward(x[0], y[0], np.zeros(H))[0]
    assert cache_s.last_state.shape == (H,) and cache_b.last_state.shape == (1, H)
    gb, gs = m.backward(cache_b), m.backward(cache_s)
    assert gs["h0"].shape == (H,)
    for n in [*PARAM_NAMES, "h0"]:
        np.testing.assert_array_equal(gs[n].reshape(gb[n].shape), gb[n])


def test_a_model_that_knows_nothing_scores_ln_v():
    m = ScratchRNN(V, H)
    for n in PARAM_NAMES:
        m.params[n][...] = 0.0
    x, y, _ = _batch(7)
    loss, cache = m.forward(x, y)
    assert loss == pytest.approx(math.log(V), abs=1e-12)
    np.testing.assert_allclose(cache.p, 1.0 / V)


def test_clipping_by_value_and_by_norm():
    m = _model(8)
    x, y, h0 = _batch(9)
    grads = m.backward(m.forward(x, y, h0)[1])
    before = global_norm(grads)
    g = {k: v.copy() for k, v in grads.items()}
    assert clip_gradients(g, max_norm=before / 10) == pytest.approx(before)
    assert global_norm(g) == pytest.approx(before / 10)
    np.testing.assert_allclose(g["weight_hh"], grads["weight_hh"] / 10, rtol=1e-9)  # same direction
    g = {k: v.copy() for k, v in grads.items()}
    limit = np.abs(grads["weight_ho"]).max() / 2
    clip_gradients(g, max_value=limit)
    assert all(np.abs(g[n]).max() <= limit for n in PARAM_NAMES)
    assert np.abs(g["weight_ho"]).max() == limit
    g = {k: v.copy() for k, v in grads.items()}
    clip_gradients(g)  # both off: unchanged
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(g[n], grads[n])


def test_optimiser_steps_go_downhill():
    for step in ("sgd", "adagrad"):
        m = _model(10)
        x, y, h0 = _batch(11)
        loss0, cache = forward(m.params, x, y, h0)  # the module's functions are the methods' engine
        grads = backward(cache)
        if step == "sgd":
            sgd_step(m.params, grads, lr=0.05)
        else:
            memory: dict[str, np.ndarray] = {}
            adagrad_step(m.params, grads, memory, lr=0.01)
            assert set(memory) == set(PARAM_NAMES)
        assert m.forward(x, y, h0)[0] < loss0, step


def test_training_on_a_repetitive_text_reduces_the_loss_a_lot():
    text = "hello world. the cat sat on the mat. " * 10
    rows = []
    out = train_scratch(text, hidden_size=32, seq_len=16, lr=0.1, steps=300, seed=0, log_interval=100,
                        sample_len=20, on_log=rows.append)
    assert out["initial_loss"] == pytest.approx(math.log(len(set(text))))
    assert len(out["losses"]) == 300 and [r["step"] for r in rows] == [100, 200, 300] and rows == out["log"]
    assert np.mean(out["losses"][:10]) > 2.0  # it starts near ln V = 2.7 nats
    assert np.mean(out["losses"][-20:]) < 0.2  # and learns the repetition
    assert out["final_smooth_loss"] < 0.5
    assert all(len(r["sample"]) == 20 and set(r["sample"]) <= set(text) for r in rows)
    again = train_scratch(text, hidden_size=32, seq_len=16, lr=0.1, steps=20, seed=0)
    assert again["losses"] == out["losses"][:20]  # seeded


def test_sampling_is_seeded_and_follows_a_confident_model():
    m = ScratchRNN(V, H, seed=0)
    h = np.zeros(H)
    a = m.sample(h, 0, 30, np.random.default_rng(1))
    assert a == m.sample(h, 0, 30, np.random.default_rng(1))
    assert len(a) == 30 and all(0 <= i < V for i in a)
    m.params["bias_ho"][:] = [0, 0, 50, 0, 0]  # the output layer always says 2
    assert m.sample(h, 0, 10, np.random.default_rng(2)) == [2] * 10


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.forward([0, 1], [1]), "same shape"),
        (lambda m: m.forward([0, V], [1, 2]), r"inputs must lie in \[0, 5\)"),
        (lambda m: m.forward([0.5, 1.0], [1, 2]), "integer token ids"),
        (lambda m: m.forward(np.zeros((2, 0), dtype=int), np.zeros((2, 0), dtype=int)), "B, T >= 1"),
        (lambda m: m.forward(np.zeros((0, 3), dtype=int), np.zeros((0, 3), dtype=int)), "B, T >= 1"),
        (lambda m: m.forward([0, 1], [1, 2], np.zeros(H + 1)), r"h0 must have shape \(4,\)"),
        (lambda m: m.sample(np.zeros(H), V, 3, np.random.default_rng(0)), "seed_id"),
        (lambda m: ScratchRNN(V, 0), "hidden_size must be an integer >= 1"),
        (lambda m: ScratchRNN(V, H, params={"weight_ih": np.zeros((H, V))}), "missing parameter 'weight_hh'"),
        (lambda m: clip_gradients({}, max_norm=-1), "max_norm"),
        (lambda m: train_scratch("abcabc" * 10, seq_len=0, lr=-1, optimizer="adam"), "seq_len.*lr.*optimizer"),
    ],
)
def test_bad_arguments_raise_config_error_saying_what_is_wrong(call, match):
    with pytest.raises(ConfigError, match=match):
        call(ScratchRNN(V, H))


def test_a_text_too_short_is_a_data_error():
    with pytest.raises(DataError, match="at least seq_len"):
        train_scratch("abc", seq_len=25)


def test_the_module_imports_no_torch():
    code = "import sys, rnnlab.scratch; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
