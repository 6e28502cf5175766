"""A cell defined here alone, registered, and used everywhere: trained, sampled, checkpointed, served,
looked inside and differentiated, with no other file naming it. Each use is checked against an oracle: the
cell's equations written out in NumPy, a greedy decode by teacher-forced passes, the weights saved, the
library's own sampler for the server's text, the equations again for the gates the server shows, and
autograd's Jacobian for the gradient curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from torch import Tensor

from rnnlab.checkpoint import load_checkpoint, load_model, save_checkpoint
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, SampleConfig, TrainConfig, from_dict
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError
from rnnlab.gradients import gradient_norms_per_step, gradient_report, recurrent_spectra
from rnnlab.introspect import anatomy, layer_activations
from rnnlab.nn import paths
from rnnlab.nn.cells import CELL_TYPES, Cell, State, cell_name, register_cell
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.sampling import generate
from rnnlab.serve import build_app
from rnnlab.train import train

H = 12


class MinimalGatedUnit(Cell):
    r"""The minimal gated unit (Zhou, Wu, Zhang & Zhou 2016): one gate that both forgets and writes.

    Gate blocks f, n:

    .. math::
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + W_{hn} (f_t \odot h_{t-1}) + b_{hn}) \\
        h_t &= (1 - f_t) \odot h_{t-1} + f_t \odot n_t

    No fused torch module, no hand-written recurrence, no C++ code: the reference paths run it.
    """

    summary = "minimal gated unit"
    gates, state_tensors = 2, 1
    gate_names = shown_gates = ("f", "n")
    bounds = {"h": (-1.0, 1.0), "f": (0.0, 1.0), "n": (-1.0, 1.0)}

    def gate_values(self, xp_t: Tensor, state: State) -> tuple[Tensor, ...]:
        (h,) = state
        k = self.hidden_size
        xf, xn = xp_t.chunk(2, dim=1)  # each (B, H)
        f = torch.sigmoid(xf + F.linear(h, self.weight_hh[:k], self.bias_hh[:k]))
        return f, torch.tanh(xn + F.linear(f * h, self.weight_hh[k:], self.bias_hh[k:]))

    def step_projected(self, xp_t: Tensor, state: State) -> tuple[Tensor, State]:
        f, n = self.gate_values(xp_t, state)
        h = (1.0 - f) * state[0] + f * n  # (B, H)
        return h, (h,)


def numpy_step(cell: MinimalGatedUnit, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The docstring's equations in NumPy, float64: x (B, I), h (B, H) -> h_t (B, H)."""
    w_ih, w_hh, b_ih, b_hh = (getattr(cell, n).detach().double().numpy() for n in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    k = cell.hidden_size

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    f = sigmoid(x @ w_ih[:k].T + b_ih[:k] + h @ w_hh[:k].T + b_hh[:k])
    n = np.tanh(x @ w_ih[k:].T + b_ih[k:] + (f * h) @ w_hh[k:].T + b_hh[k:])
    return (1 - f) * h + f * n


@pytest.fixture(scope="module")
def mgu():
    """The cell registered as "mgu" for this module's tests (other modules' tests never see it)."""
    register_cell("mgu")(MinimalGatedUnit)
    try:
        yield MinimalGatedUnit
    finally:
        del CELL_TYPES["mgu"]


@pytest.fixture(scope="module")
def run(mgu, tmp_path_factory) -> Path:
    from conftest import TEXT

    tmp_path = tmp_path_factory.mktemp("mgu")
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = RunConfig(data=DataConfig(data=str(tmp_path / "corpus.txt")),
                    model=ModelConfig(cell="mgu", hidden_size=H, num_layers=2, dropout=0.0, embedding_size=8),
                    optim=OptimConfig(lr=2e-2),
                    train=TrainConfig(batch_size=8, seq_len=16, max_steps=20, eval_interval=20, log_interval=5,
                                      seed=1, out=str(tmp_path / "run")))
    train(cfg, progress=False)
    return tmp_path / "run"


def test_the_cell_computes_its_equations(mgu):
    torch.manual_seed(1)
    cell = mgu(3, H).double()
    x, h = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, H, dtype=torch.float64).tanh()
    out, state = cell.step(x, (h,))
    np.testing.assert_allclose(out.detach().numpy(), numpy_step(cell, x.numpy(), h.numpy()), rtol=0, atol=1e-12)
    assert state[0] is out


def test_registration_is_all_the_config_and_the_cli_need(mgu):
    from rnnlab.cli import build_parser

    assert cell_name(mgu) == "mgu" and ModelConfig(cell="mgu").problems() == []
    assert from_dict(ModelConfig, {"cell": "mgu"}).cell == "mgu"
    with pytest.raises(ConfigError, match="'elman', 'elman-relu', 'lstm', 'gru', 'mgu', got 'mug'"):
        from_dict(ModelConfig, {"cell": "mug"})
    assert ModelConfig(cell="mug").problems() == ["cell must be one of elman, elman-relu, lstm, gru, mgu, got 'mug'"]
    ns = build_parser().parse_args(["train", "--data", "x", "--cell", "mgu"])
    assert ns.cell == "mgu"
    with pytest.raises(ValueError, match="registered already"):
        register_cell("lstm")(MinimalGatedUnit)


def test_the_chooser_takes_the_reference_paths(mgu):
    net = paths.Network(mgu, H, 2, streams=3)
    for machine in (paths.Machine("cpu", torch.float32, True, True, 2, True),
                    paths.Machine("cuda", torch.float32, False, False)):
        assert paths.training(machine, net).path == "unroll"
        assert paths.decision(machine, net).path == "stepper"
    assert "no code in the C++ decision loop" in paths.explain(paths.Machine.of("cpu", torch.float32), net)[
        "free running, self-fed inputs"].reason
    model = RNNLanguageModel(ModelConfig(cell="mgu", hidden_size=H, num_layers=1, dropout=0.0, embedding_size=5),
                             9).double()
    x = torch.randint(0, 9, (3, 7))
    with torch.no_grad():
        logits, _ = model(x)  # the "fused" path: the unroller, as chosen  (3, 7, V)
        emb = model.embed(x).numpy()  # (3, 7, 5)
    h, expected = np.zeros((3, H)), []
    for t in range(7):  # oracle: the NumPy equations, then the softmax layer
        h = numpy_step(model.rnn.cells[0], emb[:, t], h)
        expected.append(h @ model.decoder.weight.detach().numpy().T + model.decoder.bias.detach().numpy())
    np.testing.assert_allclose(logits.numpy(), np.stack(expected, axis=1), rtol=0, atol=1e-10)


def test_trains_checkpoints_and_resumes_its_carry(run, mgu):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("split") == "train"]
    assert losses[-1] < losses[0] - 0.3, losses  # it learns (from about ln V = 2.9)
    model, vocab, ckpt = load_model(run / "last.safetensors")
    assert ckpt.config.model.cell == "mgu" and all(type(c) is mgu for c in model.rnn.cells)
    carry = load_checkpoint(run / "last.safetensors", prefer="last").carry()
    assert carry is not None and len(carry) == 2 and all(len(layer) == 1 for layer in carry)


def test_save_and_load_give_the_same_model(mgu, tmp_path: Path):
    vocab = Vocab(list("abcde"))
    cfg = RunConfig(model=ModelConfig(cell="mgu", hidden_size=H, num_layers=1, dropout=0.0, embedding_size=4))
    model = RNNLanguageModel(cfg.model, len(vocab)).eval()
    save_checkpoint(tmp_path / "m.safetensors", model, cfg, vocab)
    loaded, _, _ = load_model(tmp_path / "m.safetensors")
    x = torch.randint(0, 5, (2, 9))
    torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)


def test_samples_are_greedy_decodes(run):
    model, vocab, _ = load_model(run)
    text = generate(model, vocab, SampleConfig(prime="the ", length=15, strategy="argmax"))[0]
    ids = list(vocab.encode("the "))
    with torch.no_grad():
        for _ in range(15):  # oracle: a teacher-forced pass over everything so far, its last argmax
            logits, _ = model(torch.as_tensor(ids).unsqueeze(0))
            ids.append(int(logits[0, -1].argmax()))
    assert text == "".join(vocab.symbols[i] for i in ids)


def test_served_generation_and_activations(run):
    client = TestClient(build_app([str(run)]))
    info = client.get("/api/models").json()
    entry = info[0] if isinstance(info, list) else info["models"][0]
    assert entry["cell"] == "mgu" and entry["quantities"] == ["h", "f", "n"]
    events = [json.loads(line) for line in client.post(
        "/api/generate", json={"prime": "the ", "length": 20, "strategy": "argmax"}).text.splitlines()]
    model, vocab, _ = load_model(run)
    assert events[-1]["text"] == generate(model, vocab, SampleConfig(prime="the ", length=20, strategy="argmax"))[0]
    text = "the cat sat on the mat."
    answer = client.post("/api/activations", json={"text": text, "layer": 1, "top_units": H}).json()
    assert answer["quantities"] == ["h", "f", "n"] and len(answer["units"]) == H
    for u in answer["units"]:
        v = {q: np.array(x) for q, x in u["values"].items()}
        h_prev = np.concatenate([[0.0], v["h"][:-1]])
        np.testing.assert_allclose((1 - v["f"]) * h_prev + v["f"] * v["n"], v["h"], atol=3e-5)  # the cell's h
    acts = layer_activations(model, vocab.encode(text), 1)
    assert list(acts) == list(anatomy(model.rnn.cells[1]).quantities) == ["h", "f", "n"]
    assert client.post("/api/activations", json={"text": text, "rank_by": "c"}).status_code == 422


def test_gradients_through_the_new_cell(mgu):
    torch.manual_seed(2)
    cell = mgu(3, H).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    curve = gradient_norms_per_step(cell, x)  # readout loss at the last step: 1 at t = T
    assert curve.shape == (6,) and curve[-1] == pytest.approx(1.0)
    h = (torch.zeros(2, H, dtype=torch.float64),)
    states = []
    for t in range(6):
        _, h = cell.step(x[:, t], h)
        states.append(h[0])
    u = torch.full((H,), 1 / math.sqrt(H), dtype=torch.float64)  # the readout's gradient at t = T

    def last_step(b: int):
        return lambda s: cell.step(x[b:b + 1, 5], (s,))[0][0]  # h_5 (1, H) -> h_6 (H,)

    # oracle: dL/dh_5 = J^T u with J = dh_6/dh_5 by autograd's Jacobian, the mean of the per-example norms
    expected = np.mean([float(torch.linalg.vector_norm(
        torch.autograd.functional.jacobian(last_step(b), states[4][b:b + 1])[:, 0].T @ u)) for b in range(2)])
    assert curve[-2] == pytest.approx(expected, rel=1e-9) and expected > 0
    spectra = recurrent_spectra(cell)
    assert spectra[0]["cell"] == "mgu" and spectra[0]["gates"] == ["f", "n"]
    report = gradient_report(cells=("mgu", "gru"), hidden_size=8, length=10)
    assert list(report["cells"]) == ["mgu", "gru"] and len(report["cells"]["mgu"]["norms"]) == 10
