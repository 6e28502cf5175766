"""Tied input and output weights: one parameter, both roles' gradients, kept through a checkpoint."""

from __future__ import annotations

import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.nn.models import RNNLanguageModel, sequence_loss


def _tied(cell: str = "lstm", h: int = 16, v: int = 11) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(ModelConfig(cell=cell, hidden_size=h, embedding_size=h, num_layers=2, dropout=0.0,
                                        tie_weights=True), v)


def test_tied_model_holds_one_matrix_for_embedding_and_softmax() -> None:
    m = _tied()
    assert m.embedding.weight is m.decoder.weight
    untied = RNNLanguageModel(ModelConfig(hidden_size=16, embedding_size=16, num_layers=2, dropout=0.0), 11)
    assert m.num_parameters() == untied.num_parameters() - 11 * 16


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_tied_gradient_is_the_sum_of_the_untied_roles(cell: str) -> None:
    """Oracle: an untied copy with E = W_o; the tied gradient is dL/dE + dL/dW_o of the copy."""
    tied = _tied(cell)
    untied = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=16, embedding_size=16, num_layers=2, dropout=0.0), 11)
    sd = {k: v.clone() for k, v in tied.state_dict().items()}
    untied.load_state_dict(sd)
    tokens = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(1))
    for m in (tied, untied):
        logits, _ = m(tokens[:, :-1])
        sequence_loss(logits, tokens[:, 1:]).backward()
    want = untied.embedding.weight.grad + untied.decoder.weight.grad
    torch.testing.assert_close(tied.decoder.weight.grad, want)
    assert untied.embedding.weight.grad.abs().sum() > 0 and untied.decoder.weight.grad.abs().sum() > 0


def test_a_step_of_adam_keeps_the_weights_tied() -> None:
    m = _tied()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    tokens = torch.randint(0, 11, (2, 6))
    before = m.decoder.weight.detach().clone()
    logits, _ = m(tokens[:, :-1])
    sequence_loss(logits, tokens[:, 1:]).backward()
    opt.step()
    assert m.embedding.weight is m.decoder.weight
    assert not torch.equal(before, m.decoder.weight)


@pytest.mark.parametrize("kw, words", [({"input": "onehot"}, "input embedding"),
                                       ({"embedding_size": 8}, "embedding_size equal to hidden_size")])
def test_tying_what_cannot_be_tied_is_a_config_problem(kw: dict, words: str) -> None:
    cfg = ModelConfig(**{"hidden_size": 16, "embedding_size": 16, "tie_weights": True, **kw})
    assert any(words in p for p in cfg.problems())


def test_a_tied_checkpoint_loads_tied_with_the_same_logits(tmp_path) -> None:
    from rnnlab.checkpoint import load_model, save_checkpoint
    from rnnlab.config import DataConfig, RunConfig
    from rnnlab.data import Vocab
    vocab = Vocab.from_text("abcdefghijk")
    cfg = RunConfig(data=DataConfig(data="x"),
                    model=ModelConfig(hidden_size=16, embedding_size=16, num_layers=1, dropout=0.0, tie_weights=True))
    m = RNNLanguageModel(cfg.model, len(vocab))
    with torch.no_grad():
        m.decoder.weight.add_(torch.randn_like(m.decoder.weight))
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, m, cfg, vocab)
    back, _, _ = load_model(path)
    assert back.embedding.weight is back.decoder.weight
    tokens = torch.randint(0, 11, (2, 5))
    torch.testing.assert_close(back(tokens)[0], m(tokens)[0])
