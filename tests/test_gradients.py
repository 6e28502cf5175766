"""Gradient flow per time step: a linear RNN against the closed form, every cell against an
independent probe, vanishing and exploding Elman curves, spectra, the report and its PNG."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from rnnlab.config import ModelConfig
from rnnlab.errors import ConfigError
from rnnlab.gradients import (
    connectivity,
    plot_connectivity,
    strongest_inputs,
    gradient_norms_per_step,
    gradient_report,
    plot_gradient_norms,
    recurrent_spectra,
    spectral_norm,
    spectral_radius,
)
from rnnlab.jsonio import dumps
from rnnlab.nn import RecurrentStack, RNNLanguageModel
from rnnlab.nn.cells import Cell, State


class LinearCell(Cell):
    r"""A linear RNN behind the repo's cell interface: h_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh."""

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = torch.addmm(xp_t + self.bias_hh, h, self.weight_hh.t())  # (B, H)
        return h, (h,)


def _linear(h: int, w: Tensor) -> LinearCell:
    cell = LinearCell(3, h).double()
    with torch.no_grad():
        cell.weight_hh.copy_(w)
    return cell


def _orthogonal(h: int, seed: int) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(h, h, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q  # (H, H)


@pytest.mark.parametrize("a", [0.8, 1.0, 1.25])
def test_linear_rnn_matches_the_closed_form_for_the_loss_at_the_last_step(a):
    h, t_len = 6, 25
    cell = _linear(h, a * _orthogonal(h, 1))
    x = torch.randn(4, t_len, 3, dtype=torch.float64)
    norms = gradient_norms_per_step(cell, x, loss="last")
    # dL/dh_T is the unit readout (norm 1) and dL/dh_t = (W^T)^(T-t) dL/dh_T, so the norm is a^(T-t)
    expected = a ** (t_len - np.arange(1, t_len + 1))
    assert norms.shape == (t_len,)
    np.testing.assert_allclose(norms, expected, rtol=1e-10)
    # the same cell inside the repo's unroller
    stack = RecurrentStack("elman", 3, h).double()
    stack.layers[0] = cell
    np.testing.assert_allclose(gradient_norms_per_step(stack, x, loss="last"), expected, rtol=1e-10)


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_linear_rnn_matches_the_closed_form_for_the_loss_over_the_sequence(a):
    h, t_len = 5, 15
    cell = _linear(h, a * torch.eye(h, dtype=torch.float64))
    norms = gradient_norms_per_step(cell, torch.randn(2, t_len, 3, dtype=torch.float64), loss="all")
    # W = aI: dL/dh_t = sum_{k=0}^{T-t} a^k r with |r| = 1, a geometric series
    k = t_len - np.arange(1, t_len + 1)
    np.testing.assert_allclose(norms, (1 - a ** (k + 1)) / (1 - a), rtol=1e-10)


def _probe_norms(model: RNNLanguageModel, tokens: Tensor, targets: Tensor, loss: str) -> np.ndarray:
    """An independent measurement: add a zero tensor d_t to every h_t and differentiate with respect to d_t."""
    cell = model.rnn.cells[0]
    x = model.embed(tokens)  # (B, T, V)
    b, t_len = tokens.shape
    state = cell.initial_state(b)
    probes, outs = [], []
    for t in range(t_len):
        h, state = cell.step(x[:, t], state)
        d = torch.zeros_like(h, requires_grad=True)
        h = h + d
        state = (h, *state[1:])
        probes.append(d)
        outs.append(h)
    logits = model.decoder(torch.stack(outs, 1))  # (B, T, V)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    total = (ce[:, -1] if loss == "last" else ce.sum(1)).sum()
    grads = torch.autograd.grad(total, probes)
    return torch.stack([g.norm(dim=1) for g in grads], 1).mean(0).detach().numpy()


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("loss", ["last", "all"])
def test_every_cell_matches_an_independent_probe_and_has_the_right_length(cell, loss):
    torch.manual_seed(5)
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=8, num_layers=1, dropout=0.0, input="onehot"), 7)
    model = model.double().train()
    tokens, targets = torch.randint(0, 7, (3, 12)), torch.randint(0, 7, (3, 12))
    norms = gradient_norms_per_step(model, tokens, loss=loss, targets=targets)
    assert norms.shape == (12,) and np.isfinite(norms).all() and (norms > 0).all()
    np.testing.assert_allclose(norms, _probe_norms(model, tokens, targets, loss), rtol=1e-10)
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated into the weights


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_multi_layer_stacks_with_dropout_give_finite_deterministic_curves(cell):
    torch.manual_seed(6)
    stack = RecurrentStack(cell, 4, 6, num_layers=2, dropout=0.5).train()
    x = torch.randn(2, 9, 4)
    a, b = gradient_norms_per_step(stack, x), gradient_norms_per_step(stack, x)
    assert a.shape == (9,) and np.isfinite(a).all() and a[-1] == pytest.approx(1.0)
    np.testing.assert_array_equal(a, b)  # evaluation mode: no dropout noise


def _elman_stack(h: int, gain: float, seed: int) -> RecurrentStack:
    torch.manual_seed(seed)
    stack = RecurrentStack("elman", 3, h).double()
    with torch.no_grad():
        stack.layers[0].weight_hh.copy_(gain * _orthogonal(h, seed))
        stack.layers[0].bias_ih.zero_()
        stack.layers[0].bias_hh.zero_()
    return stack


def test_elman_with_small_weights_vanishes_and_with_a_large_spectral_radius_explodes():
    x = 1e-3 * torch.randn(4, 20, 3, dtype=torch.float64)  # small inputs keep tanh near its linear regime
    small = _elman_stack(16, 0.5, 0)
    assert spectral_radius(small.layers[0].weight_hh) == pytest.approx(0.5)
    n = gradient_norms_per_step(small, x)
    assert n[0] < 1e-5 * n[-1] and (np.diff(n) > 0).all()  # shrinks going back in time
    large = _elman_stack(16, 3.0, 0)
    assert spectral_radius(large.layers[0].weight_hh) == pytest.approx(3.0)
    n = gradient_norms_per_step(large, x)
    assert n[0] > 1e3 * n[-1]  # grows going back in time,
    assert (np.diff(n[:10]) < 0).all()  # steadily while h_t is small (later, saturated tanh damps it)
    # PyTorch's default initialisation (rho about 0.58) vanishes
    torch.manual_seed(1)
    default = RecurrentStack("elman", 3, 32).double()
    assert spectral_radius(default.layers[0].weight_hh) < 1
    n = gradient_norms_per_step(default, torch.randn(2, 30, 3, dtype=torch.float64))
    assert n[0] < 1e-4 * n[-1]


def test_spectral_radius_and_norm_on_known_matrices():
    rot = np.array([[0.0, -2.0], [2.0, 0.0]])  # eigenvalues +-2i
    assert spectral_radius(rot) == pytest.approx(2.0)
    assert spectral_radius(torch.tensor([[1.0, 100.0], [0.0, 0.5]])) == pytest.approx(1.0)  # not the norm
    assert spectral_norm(np.array([[1.0, 100.0], [0.0, 0.5]])) > 100
    assert spectral_norm(np.ones((6, 3))) == pytest.approx(math.sqrt(18))
    with pytest.raises(ConfigError, match=r"square matrix \(H, H\), got shape \(8, 2\)"):
        spectral_radius(np.zeros((8, 2)))


def test_recurrent_spectra_per_gate_block_and_whole_matrix():
    stack = RecurrentStack("lstm", 3, 4, num_layers=2).double()
    with torch.no_grad():
        w = stack.layers[1].weight_hh  # (4H, H)
        for k, gain in enumerate((0.1, 0.2, 0.3, 0.4)):
            w[4 * k:4 * (k + 1)] = gain * torch.eye(4, dtype=torch.float64)
    spectra = recurrent_spectra(stack)
    assert [s["layer"] for s in spectra] == [0, 1] and spectra[0]["gates"] == ["i", "f", "g", "o"]
    assert spectra[1]["radius"] == pytest.approx({"i": 0.1, "f": 0.2, "g": 0.3, "o": 0.4})
    assert spectra[1]["norm"]["whole"] == pytest.approx(math.sqrt(0.01 + 0.04 + 0.09 + 0.16))
    gru = recurrent_spectra(RecurrentStack("gru", 3, 4))
    assert gru[0]["gates"] == ["r", "z", "n"] and set(gru[0]["norm"]) == {"r", "z", "n", "whole"}
    elman = recurrent_spectra(_elman_stack(5, 0.7, 2))[0]
    assert elman["radius"]["h"] == pytest.approx(0.7) and elman["norm"]["whole"] == pytest.approx(0.7)
    json.dumps(spectra)


def test_gradient_report_is_json_able_and_shows_vanishing_and_exploding(tmp_path):
    report = gradient_report(hidden_size=8, length=15, batch_size=2, vocab_size=5, seed=3)
    assert list(report["cells"]) == ["elman", "lstm", "gru"] and report["steps"] == list(range(1, 16))
    again = json.loads(json.dumps(report))
    assert again == report
    for entry in report["cells"].values():
        assert len(entry["norms"]) == 15 and all(math.isfinite(v) and v > 0 for v in entry["norms"])
    assert report["cells"]["elman"]["first_over_last"] < 1e-2  # at initialisation it vanishes
    hot = gradient_report(cells=("elman",), hidden_size=8, length=15, batch_size=2, vocab_size=5, seed=3,
                          recurrent_gain=8.0, loss="all")
    assert hot["cells"]["elman"]["spectra"][0]["radius"]["h"] == pytest.approx(
        8 * report["cells"]["elman"]["spectra"][0]["radius"]["h"])
    assert hot["cells"]["elman"]["first_over_last"] > report["cells"]["elman"]["first_over_last"]
    rng_state = torch.get_rng_state()
    gradient_report(cells=("gru",), hidden_size=4, length=3, batch_size=1)
    assert torch.equal(rng_state, torch.get_rng_state())  # the global RNG is left alone

    fig = plot_gradient_norms(report, tmp_path / "grads.png")
    data = (tmp_path / "grads.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grads.png"]  # no temporary file left
    assert [line.get_label().split()[0] for line in fig.axes[0].get_lines()] == list(report["cells"])  # the figure too
    assert plot_gradient_norms(report, None).axes[0].get_yscale() == "log"  # no file: the figure alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grads.png"]
    broken = json.loads(dumps({**report, "cells": {"elman": {"norms": [1.0, float("inf"), 0.0, None]}}}))
    plot_gradient_norms(broken, tmp_path / "broken.png")  # non-finite and zero values are skipped
    assert (tmp_path / "broken.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_raise_config_error():
    model = RNNLanguageModel(ModelConfig(cell="gru", hidden_size=4, num_layers=1, input="onehot"), 5)
    tokens = torch.randint(0, 5, (2, 6))
    with pytest.raises(ConfigError, match="needs targets"):
        gradient_norms_per_step(model, tokens)
    with pytest.raises(ConfigError, match=r"targets must have shape \(B, T\) = \(2, 6\)"):
        gradient_norms_per_step(model, tokens, targets=tokens[:, :3])
    with pytest.raises(ConfigError, match="loss must be 'last' or 'all', got 'first'"):
        gradient_norms_per_step(model, tokens, loss="first", targets=tokens)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="float inputs"):
        gradient_norms_per_step(RecurrentStack("elman", 3, 4), tokens)
    with pytest.raises(ConfigError, match="per-example losses"):
        gradient_norms_per_step(model, tokens, loss_fn=lambda out: out.sum())
    with pytest.raises(ConfigError, match="expected an RNNLanguageModel"):
        gradient_norms_per_step(torch.nn.Linear(2, 2), torch.zeros(1, 2, 2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown cell 'rnn'.*length must be an integer >= 1.*recurrent_gain"):
        gradient_report(cells=("rnn",), length=0, recurrent_gain=-1.0)
    with pytest.raises(ConfigError, match="no curves"):
        plot_gradient_norms({}, "unused.png")


def test_a_custom_loss_fn_sees_the_top_layer_outputs():
    cell = _linear(4, 0.5 * torch.eye(4, dtype=torch.float64))
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    # the loss 0.5 |h_3|^2 at step 3 (index 2): dL/dh_3 = h_3, nothing after it, 0.5^(3-t) before it
    norms = gradient_norms_per_step(cell, x, loss_fn=lambda out: 0.5 * (out[:, 2] ** 2).sum(1))
    h = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(3):
        h, _ = cell.step(x[:, t], (h,))
    n3 = h.norm(dim=1).mean().item()
    np.testing.assert_allclose(norms, [0.25 * n3, 0.5 * n3, n3, 0, 0, 0], rtol=1e-10, atol=1e-15)


# clipping in the report --------------------------------------------------------------------------

def test_clipping_scales_each_curve_by_the_factor_that_clip_grad_norm_applies():
    kw = dict(hidden_size=8, length=12, batch_size=3, vocab_size=5, seed=1, recurrent_gain=3.0)
    off = gradient_report(**kw)
    on = gradient_report(**kw, clip_norm=0.05)
    assert off["config"]["clip_norm"] == 0.0 and on["config"]["clip_norm"] == 0.05
    for name, entry in on["cells"].items():
        assert entry["norms"] == off["cells"][name]["norms"]  # the raw curve does not depend on clipping
        assert off["cells"][name]["clip_factor"] == 1.0
        assert off["cells"][name]["clipped_norms"] == off["cells"][name]["norms"]
        # oracle: the same model and batch, the gradient of the mean loss through torch's own clipping
        rng = np.random.default_rng(kw["seed"])
        tokens = torch.from_numpy(rng.integers(0, 5, (3, 12)))
        targets = torch.from_numpy(rng.integers(0, 5, (3, 12)))
        torch.manual_seed(kw["seed"])
        cfg = ModelConfig(cell=name, hidden_size=8, num_layers=1, dropout=0.0, input="onehot", fused=False)
        model = RNNLanguageModel(cfg, 5).double()
        with torch.no_grad():
            for c in model.rnn.cells:
                c.weight_hh.mul_(3.0)
        model.eval()
        logits, _ = model(tokens)
        torch.nn.functional.cross_entropy(logits[:, -1], targets[:, -1]).backward()
        before = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05))
        assert entry["grad_norm"] == pytest.approx(before, rel=1e-9)
        assert entry["clip_factor"] == pytest.approx(min(1.0, 0.05 / before), rel=1e-9) and entry["clip_factor"] < 1
        assert np.allclose(entry["clipped_norms"], np.array(entry["norms"]) * entry["clip_factor"], rtol=1e-12)
    with pytest.raises(ConfigError, match="clip_norm must be a number >= 0"):
        gradient_report(clip_norm=-1.0)


# connectivity --------------------------------------------------------------------------------------

def _connectivity_one_position_at_a_time(model: RNNLanguageModel, ids: Tensor) -> np.ndarray:
    """The oracle: for each t its own graph, stepped through the unrolled cells, and torch.autograd.grad."""
    m = len(ids) - 1
    out = np.zeros((m, m))
    for t in range(m):
        e = model.embed(ids[None, :t + 1]).detach().requires_grad_(True)  # (1, t+1, I)
        state = model.initial_state(1)
        for s in range(t + 1):
            h, state = model.rnn.step(e[:, s], state)
        logp = torch.log_softmax(model.decoder(h), dim=-1)[0, ids[t + 1]]
        (g,) = torch.autograd.grad(logp, e)
        out[t, :t + 1] = g[0].norm(dim=-1).numpy()
    return out


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("input", ["onehot", "embedding"])
def test_connectivity_matches_autograd_one_position_at_a_time(cell, input):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=6, num_layers=2, dropout=0.3, input=input,
                                         embedding_size=4), 7).double()
    model.train()  # connectivity runs in evaluation mode (no dropout) and gives the mode back
    ids = torch.randint(0, 7, (11,))
    got = connectivity(model, ids)
    assert model.training
    model.eval()
    want = _connectivity_one_position_at_a_time(model, ids)
    assert got.shape == (10, 10)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert np.all(np.diag(got) > 0)  # the character just read always matters
    for blocks in (1, 3, 10, 50):  # how the rows are grouped changes nothing
        np.testing.assert_allclose(connectivity(model, ids.numpy(), blocks=blocks), want, rtol=1e-10, atol=1e-14)


def test_a_prediction_gets_exactly_zero_from_its_own_later_characters():
    torch.manual_seed(1)
    model = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=16, input="embedding", embedding_size=8), 12)
    c = connectivity(model, torch.randint(0, 12, (40,)), blocks=1)  # one pass: later inputs are in the graph
    assert c.shape == (39, 39)
    assert np.all(c[np.triu_indices(39, k=1)] == 0.0)
    assert np.all(c[np.tril_indices(39)] > 0.0)


@pytest.mark.parametrize("tokens, match", [
    (torch.tensor([3]), "N >= 2"), (torch.zeros(2, 3, dtype=torch.long), "N >= 2"),
    (torch.tensor([0.5, 1.0]), "token ids"), (torch.tensor([0, 9]), r"lie in \[0, 5\)"),
    (torch.tensor([-1, 2]), r"lie in \[0, 5\)"),
])
def test_connectivity_refuses_what_is_not_a_text(tokens, match):
    model = RNNLanguageModel(ModelConfig(cell="gru", hidden_size=4), 5)
    with pytest.raises(ConfigError, match=match):
        connectivity(model, tokens)
    with pytest.raises(ConfigError, match="blocks must be an integer >= 1"):
        connectivity(model, torch.tensor([0, 1, 2]), blocks=0)


def test_strongest_inputs_and_the_connectivity_plot(tmp_path):
    c = np.array([[2.0, 0.0, 0.0], [1.0, 4.0, 0.0], [3.0, 0.0, 6.0]])
    assert strongest_inputs(c, top=2) == [[(0, 1.0)], [(1, 1.0), (0, 0.25)], [(2, 1.0), (0, 0.5)]]
    assert strongest_inputs(np.zeros((1, 1))) == [[(0, 0.0)]]
    fig = plot_connectivity(c, list("ab\nc"), tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.ma.filled(shown, np.nan), [[1, np.nan, np.nan], [0.25, 1, np.nan], [0.5, 0, 1]])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a → b", "b → \\n", "\\n → c"]
    with pytest.raises(ConfigError, match="N tokens"):
        plot_connectivity(c, list("ab"), None)
    with pytest.raises(ConfigError, match="square"):
        strongest_inputs(np.zeros((2, 3)))
