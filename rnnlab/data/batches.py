"""Batches for truncated backpropagation through time.

Training text of N tokens is cut into B parallel *contiguous* streams of
n = (N - 1) // B tokens each; stream b holds inputs ``tokens[b*n : (b+1)*n]`` and
targets shifted by one. Batch i is the next T tokens of every stream, so the hidden
state left by batch i is exactly the state batch i + 1 needs: the trainer carries
it across batches (detached) and resets it only when an epoch wraps around.

Shapes: ``x, y: (B, T)`` int64 token ids, as NumPy arrays (this layer needs no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab.errors import DataError


class StreamBatcher:
    """B contiguous streams read T tokens at a time.

    >>> b = StreamBatcher(np.arange(21), batch_size=2, seq_len=5)
    >>> x, y = b.batch(0)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]], [[1, 2, 3, 4, 5], [11, 12, 13, 14, 15]])
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, name: str = "training split"):
        n = (len(tokens) - 1) // batch_size  # tokens per stream
        if n < seq_len:
            raise DataError(
                f"the {name} has {len(tokens)} tokens; one batch needs batch_size * seq_len + 1 = "
                f"{batch_size * seq_len + 1}: lower --batch-size or --seq-len, or give more text")
        self.batch_size, self.seq_len = batch_size, seq_len
        t = np.asarray(tokens, dtype=np.int64)
        self.x = t[: n * batch_size].reshape(batch_size, n)  # (B, n) inputs of each stream
        self.y = t[1 : n * batch_size + 1].reshape(batch_size, n)  # (B, n) next-token targets
        self.batches_per_epoch = n // seq_len

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``i`` of an epoch: ``x, y`` of shape (B, T)."""
        if not 0 <= i < self.batches_per_epoch:
            raise IndexError(f"batch {i} outside 0..{self.batches_per_epoch - 1}")
        s = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return np.ascontiguousarray(self.x[:, s]), np.ascontiguousarray(self.y[:, s])


@dataclass
class EvalStreams:
    """A whole split laid out so that every target is predicted exactly once.

    The M = N - 1 (input, target) pairs are cut into B contiguous streams of
    m = ceil(M / B); the tail is padded and masked out. Evaluating chunk by chunk
    with the state carried gives the exact mean loss over all M targets.
    """

    x: np.ndarray  # (B, m) inputs
    y: np.ndarray  # (B, m) targets
    mask: np.ndarray  # (B, m) True for a real target, False for padding
    count: int  # M, the number of real targets

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, batch_size: int, name: str = "validation split") -> EvalStreams:
        m_total = len(tokens) - 1
        if m_total < 1:
            raise DataError(f"the {name} needs at least 2 tokens, got {len(tokens)}")
        b = min(batch_size, m_total)
        m = math.ceil(m_total / b)
        t = np.asarray(tokens, dtype=np.int64)
        x = np.zeros(b * m, dtype=np.int64)
        y = np.zeros(b * m, dtype=np.int64)
        mask = np.zeros(b * m, dtype=bool)
        x[:m_total], y[:m_total], mask[:m_total] = t[:-1], t[1:], True
        return cls(x.reshape(b, m), y.reshape(b, m), mask.reshape(b, m), m_total)
