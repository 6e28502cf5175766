"""Generating text from a recurrent language model, and scoring text with it.

The model reads the prime once (a fused teacher-forced pass), then writes one token
per step, feeding each chosen token back and carrying its state forward; nothing is
recomputed from the start. ``num_samples`` streams run as one batch. Token choice is
:mod:`rnnlab.decoding`, shared with the n-gram models.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from rnnlab.config import SampleConfig
from rnnlab.data.batches import EvalStreams
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import beam_search, log_softmax, make_sampler
from rnnlab.errors import DataError, VocabError
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.nn.stack import StackState

LN2 = math.log(2.0)


def start_token(vocab: Vocab) -> str:
    """What an empty prime starts from: a newline if the model knows one, else its first symbol."""
    return "\n" if "\n" in vocab.index else vocab.symbols[0]


def encode_prime(vocab: Vocab, prime: str) -> np.ndarray:
    """Ids of the prime; a :class:`VocabError` naming every symbol the model never saw."""
    missing = vocab.unknown(prime) if vocab.level == "char" else []
    if missing:
        shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise VocabError(f"the prime has {len(missing)} character(s) the model never saw: {shown}")
    ids = vocab.encode(prime) if prime else np.zeros(0, dtype=np.int64)
    if len(ids) == 0:
        ids = vocab.encode(start_token(vocab))
    return ids


def _read_prime(model: RNNLanguageModel, ids: np.ndarray, batch: int) -> tuple[torch.Tensor, StackState]:
    """Run the prime through the model; return the logits for the next token (B, V) and the state."""
    x = torch.as_tensor(ids, dtype=torch.int64).unsqueeze(0).expand(batch, -1)  # (B, P)
    logits, state = model(x, model.initial_state(batch))  # (B, P, V)
    return logits[:, -1], state


@torch.no_grad()
def generate(model: RNNLanguageModel, vocab: Vocab, cfg: SampleConfig,
             on_token: Callable[[list[str]], None] | None = None) -> list[str]:
    """Generate ``cfg.num_samples`` continuations of ``cfg.prime``; returns prime + continuation each.

    ``on_token`` is called after every step with the new symbol of every stream, for
    streaming output.
    """
    cfg.validate()
    model.eval()
    ids = encode_prime(vocab, cfg.prime)
    rng = np.random.default_rng(cfg.seed)
    if cfg.strategy == "beam":
        return [cfg.prime + vocab.decode(_beam(model, ids, cfg))] * cfg.num_samples
    sampler = make_sampler(cfg.strategy, cfg.temperature, cfg.top_k, cfg.top_p)
    b = cfg.num_samples
    logits, state = _read_prime(model, ids, b)  # (B, V)
    out: list[list[int]] = [[] for _ in range(b)]
    for _ in range(cfg.length):
        nxt = sampler.choose(logits.double().cpu().numpy(), rng)  # (B,)
        for i in range(b):
            out[i].append(int(nxt[i]))
        if on_token is not None:
            on_token([vocab.decode([int(t)]) for t in nxt])
        logits, state = model.step(torch.as_tensor(nxt, dtype=torch.int64, device=logits.device), state)
    return [cfg.prime + vocab.decode(o) for o in out]


def _beam(model: RNNLanguageModel, ids: np.ndarray, cfg: SampleConfig) -> list[int]:
    logits, state = _read_prime(model, ids, 1)

    def step(tokens: np.ndarray, st: StackState) -> tuple[np.ndarray, StackState]:
        lg, st = model.step(torch.as_tensor(tokens, dtype=torch.int64), st)
        return log_softmax(lg.double().numpy()), st

    def reorder(st: StackState, idx: np.ndarray) -> StackState:
        i = torch.as_tensor(idx, dtype=torch.int64)
        return tuple(tuple(t.index_select(0, i) for t in layer) for layer in st)

    first = log_softmax(logits[0].double().numpy())
    seq, _ = beam_search(step, reorder, state, first, cfg.beam_width, cfg.length)
    return seq


@torch.no_grad()
def evaluate_tokens(model: RNNLanguageModel, tokens: np.ndarray, batch_size: int = 32, seq_len: int = 256,
                    name: str = "text") -> dict[str, float]:
    """Mean cross entropy of every next-token prediction over ``tokens``, state carried throughout.

    Returns ``{"loss": nats per token, "bpc": bits per token, "tokens": count}``; every
    target is counted exactly once (:class:`~rnnlab.data.batches.EvalStreams`).
    """
    if len(tokens) < 2:
        raise DataError(f"the {name} needs at least 2 tokens to evaluate, got {len(tokens)}")
    was_training = model.training
    model.eval()
    streams = EvalStreams.from_tokens(tokens, batch_size, name)
    device = model.decoder.weight.device
    x_all = torch.as_tensor(streams.x, device=device)
    y_all = torch.as_tensor(streams.y, device=device)
    m_all = torch.as_tensor(streams.mask, device=device)
    state = model.initial_state(x_all.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=device)
    for s in range(0, x_all.shape[1], seq_len):
        x, y, m = x_all[:, s:s + seq_len], y_all[:, s:s + seq_len], m_all[:, s:s + seq_len]  # (B, T)
        logits, state = model(x, state)  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
        total += (nll * m).sum().double()
    model.train(was_training)
    loss = total.item() / streams.count
    return {"loss": loss, "bpc": loss / LN2, "tokens": streams.count}


def evaluate_text(model: RNNLanguageModel, vocab: Vocab, text: str, **kw) -> dict[str, float]:
    """:func:`evaluate_tokens` on a string; symbols the model never saw are a clear error."""
    return evaluate_tokens(model, vocab.encode(text), **kw)
