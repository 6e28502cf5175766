"""Batches for truncated backpropagation through time.

Training text of N tokens is cut into B parallel *contiguous* streams of
n = (N - 1) // B tokens each; stream b holds inputs ``tokens[b*n : (b+1)*n]`` and
targets shifted by one. Batch i is the next T tokens of every stream, so the hidden
state left by batch i is exactly the state batch i + 1 needs: the trainer carries
it across batches (detached) and resets it only when an epoch wraps around.

Shapes: ``x, y: (B, T)`` int64 token ids, as NumPy arrays (this layer needs no torch).

Neither class copies the token array: given a ``numpy.memmap`` (a corpus larger than
memory, :mod:`rnnlab.data.tokens`) they read only the windows asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnnlab.errors import ConfigError, DataError


def _positive(**sizes: int) -> None:
    bad = [f"{k} must be >= 1, got {v}" for k, v in sizes.items() if not (isinstance(v, int) and v >= 1)]
    if bad:
        raise ConfigError(bad)


class StreamBatcher:
    """B contiguous streams read T tokens at a time.

    >>> b = StreamBatcher(np.arange(21), batch_size=2, seq_len=5)
    >>> x, y = b.batch(0)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]], [[1, 2, 3, 4, 5], [11, 12, 13, 14, 15]])
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, name: str = "training split"):
        _positive(batch_size=batch_size, seq_len=seq_len)
        n = (len(tokens) - 1) // batch_size  # tokens per stream
        if n < seq_len:
            raise DataError(
                f"the {name} has {len(tokens)} tokens; one batch needs batch_size * seq_len + 1 = "
                f"{batch_size * seq_len + 1}: lower --batch-size or --seq-len, or give more text")
        self.batch_size, self.seq_len = batch_size, seq_len
        t = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens, dtype=np.int64)  # views, no copy
        self.x = t[: n * batch_size].reshape(batch_size, n)  # (B, n) inputs of each stream
        self.y = t[1 : n * batch_size + 1].reshape(batch_size, n)  # (B, n) next-token targets
        self.batches_per_epoch = n // seq_len

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``i`` of an epoch: ``x, y`` of shape (B, T)."""
        if not 0 <= i < self.batches_per_epoch:
            raise IndexError(f"batch {i} outside 0..{self.batches_per_epoch - 1}")
        s = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return (np.ascontiguousarray(self.x[:, s], dtype=np.int64),  # (B, T)
                np.ascontiguousarray(self.y[:, s], dtype=np.int64))  # (B, T)


@dataclass
class EvalStreams:
    """A whole split laid out so that every target is predicted exactly once.

    The M = N - 1 (input, target) pairs are cut into B contiguous streams of
    m = ceil(M / B); the tail is padded and masked out. Evaluating chunk by chunk
    with the state carried gives the exact mean loss over all M targets. Windows are
    read on demand (:meth:`window`), so a memory-mapped split is never loaded whole.
    """

    tokens: np.ndarray  # (N,) the split
    streams: int  # B
    length: int  # m, pairs per stream (the last stream is padded)
    count: int  # M, the number of real targets

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, batch_size: int, name: str = "validation split") -> EvalStreams:
        _positive(batch_size=batch_size)
        m_total = len(tokens) - 1
        if m_total < 1:
            raise DataError(f"the {name} needs at least 2 tokens, got {len(tokens)}")
        b = min(batch_size, m_total)
        t = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens, dtype=np.int64)
        return cls(t, b, math.ceil(m_total / b), m_total)

    def window(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs ``start:stop`` of every stream: ``x, y`` (B, T) int64 (0 where padded) and ``mask`` (B, T)."""
        stop = min(stop, self.length)
        pos = np.arange(self.streams)[:, None] * self.length + np.arange(start, stop)[None, :]  # (B, T)
        mask = pos < self.count
        p = np.where(mask, pos, 0)
        x = np.where(mask, self.tokens[p], 0).astype(np.int64)  # (B, T)
        y = np.where(mask, self.tokens[p + 1], 0).astype(np.int64)  # (B, T)
        return x, y, mask

    @property
    def x(self) -> np.ndarray:
        """(B, m) every input (for small splits and tests; :meth:`window` reads a part)."""
        return self.window(0, self.length)[0]

    @property
    def y(self) -> np.ndarray:
        return self.window(0, self.length)[1]

    @property
    def mask(self) -> np.ndarray:
        return self.window(0, self.length)[2]
