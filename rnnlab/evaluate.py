"""Scoring text with a language model: nats, bits per character (or word), perplexity.

Every number rnnlab reports about a neural model's fit goes through this module (and
its units through :mod:`rnnlab.metrics`, shared with the n-gram models), so a run's
validation curve, ``rnnlab eval`` and the benchmarks agree by construction.
"""

from __future__ import annotations

import numpy as np
import torch

from rnnlab.data.batches import EvalStreams
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError
from rnnlab.metrics import LN2, token_metrics, unit_for
from rnnlab.nn.models import RNNLanguageModel

__all__ = ["LN2", "evaluate_text", "evaluate_tokens", "token_metrics", "unit_for"]


@torch.no_grad()
def evaluate_tokens(model: RNNLanguageModel, tokens: np.ndarray, batch_size: int = 32, seq_len: int = 256,
                    name: str = "text") -> dict[str, float]:
    r"""Mean next-token cross entropy over ``tokens``, the state carried through each stream.

    .. math:: L = -\frac{1}{N-1} \sum_{t=1}^{N-1} \ln p(x_t \mid x_{<t})

    The N - 1 targets are cut into ``batch_size`` contiguous streams
    (:class:`~rnnlab.data.batches.EvalStreams`), each read from a zero state in chunks
    of ``seq_len`` with the state carried, so every target is counted exactly once.
    Returns ``{"loss": nats per token, "bits": bits per token, "tokens": N - 1}``.
    """
    if len(tokens) < 2:
        raise DataError(f"the {name} needs at least 2 tokens to evaluate, got {len(tokens)}")
    was_training = model.training
    model.eval()
    streams = EvalStreams.from_tokens(tokens, batch_size, name)
    device = model.decoder.weight.device
    state = model.initial_state(streams.streams)
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for s in range(0, streams.length, seq_len):
            x, y, m = (torch.as_tensor(a, device=device) for a in streams.window(s, s + seq_len))  # (B, T)
            logits, state = model(x, state)  # (B, T, V)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
            total += nll.masked_select(m).double().sum()
    finally:
        model.train(was_training)
    loss = total.item() / streams.count
    return {"loss": loss, "bits": loss / LN2, "tokens": streams.count}


def evaluate_text(model: RNNLanguageModel, vocab: Vocab, text: str, **kw) -> dict[str, float]:
    """:func:`evaluate_tokens` on a string; characters the model never saw are a clear error."""
    return evaluate_tokens(model, vocab.encode(text), **kw)
