"""Whole-split evaluation against a direct computation (the oracle: one forward pass per stream)."""

import math

import numpy as np
import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.evaluate import evaluate_tokens, token_metrics
from rnnlab.nn import RNNLanguageModel


def _direct(model, tokens):
    """Mean next-token cross entropy, computed from one forward pass over the sequence."""
    x = torch.as_tensor(tokens[:-1]).unsqueeze(0)
    y = torch.as_tensor(tokens[1:])
    logits, _ = model(x)
    return torch.nn.functional.cross_entropy(logits[0], y, reduction="sum").item(), len(y)


@pytest.mark.parametrize("cell", ["elman", "elman-relu", "lstm", "gru"])
@pytest.mark.parametrize("seq_len", [1, 7, 1000])
def test_one_stream_in_chunks_equals_one_pass(cell, seq_len):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=12, num_layers=2), 9).double().eval()
    tokens = np.random.default_rng(1).integers(0, 9, size=200)
    r = evaluate_tokens(model, tokens, batch_size=1, seq_len=seq_len)
    total, n = _direct(model, tokens)
    assert r["tokens"] == n == 199
    assert r["loss"] == pytest.approx(total / n, rel=1e-12)
    assert r["bits"] == pytest.approx(total / n / math.log(2), rel=1e-12)


def test_many_streams_equal_the_sum_over_their_segments():
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=10, num_layers=1), 7).double().eval()
    tokens = np.random.default_rng(2).integers(0, 7, size=103)  # 102 targets over 4 streams of 26 (2 padded)
    r = evaluate_tokens(model, tokens, batch_size=4, seq_len=5)
    total = 0.0
    for b in range(4):  # stream b predicts targets b*26+1 .. from a zero state
        seg = tokens[b * 26: min((b + 1) * 26 + 1, 103)]
        total += _direct(model, seg)[0]
    assert r["loss"] == pytest.approx(total / 102, rel=1e-12)


def test_evaluation_leaves_the_training_mode_alone():
    model = RNNLanguageModel(ModelConfig(hidden_size=4, num_layers=1, dropout=0.5), 5)
    model.train()
    evaluate_tokens(model, np.arange(20) % 5)
    assert model.training


def test_token_metrics_units():
    m = token_metrics(math.log(2) * 1.5, "char")
    assert m["bpc"] == pytest.approx(1.5) and m["ppl"] == pytest.approx(2 ** 1.5)
    assert "bpw" in token_metrics(1.0, "word")
    # an infinite loss (an MLE n-gram meeting an unseen n-gram) or one past exp's range: infinite perplexity
    assert token_metrics(math.inf, "char")["ppl"] == math.inf and token_metrics(800.0, "char")["ppl"] == math.inf
    assert token_metrics(700.0, "char")["ppl"] == pytest.approx(math.exp(700.0))
