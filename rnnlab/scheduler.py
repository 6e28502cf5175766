"""Continuous batching: many generations of one language model advanced together, one batched step per token.

A :class:`Scheduler` owns every active :class:`Stream` of one model. Each *round* it

1. reads :data:`PRIME_CHUNK` tokens of the first prime longer than :data:`BATCHED_PRIME` tokens waiting to
   be read (one forward pass, about the cost of a batched step; the next round the next chunk, so a long
   prime never holds the others back);
2. draws the next token of every stream whose prime is read -- each from its own generator, with its own
   strategy, temperature, top-k and top-p (:func:`choose`) -- and hands it to the stream (:meth:`Stream.deliver`,
   with the model's own softmax at that step);
3. advances every stream that goes on by one batched step of the packed :class:`~rnnlab.nn.models.Stepper`
   (replayed as a CUDA graph per batch size on a GPU): its token, or, for a stream whose prime is short, the
   prime's next token (a short prime is read in the batch, a token a round, at no cost to the others).

Streams join and leave between rounds; each stream in the batch advances exactly one token per round, so no
stream waits while others advance. A thread per scheduler runs the rounds while there are streams.

The draws are those of :func:`rnnlab.sampling.generate` (and so of ``rnnlab sample``) with the stream's seed:
the first token from the prime's logits, then one uniform per token from ``numpy.random.default_rng(seed)``, by
inverse CDF over the same float64 distribution (:func:`rnnlab.decoding.distribution`). Only the logits can
differ, in their last bits, because products over another batch size round differently; a draw that falls
within that rounding of a boundary of the distribution function may then take the neighbouring token.

Memory: a stream holds its prime's ids and, while it reads it, one chunk's logits; in the batch, its state
(2 x layers x hidden floats for an LSTM) and one row of logits. The scheduler holds at most three packed
:class:`~rnnlab.nn.models.Stepper` copies of the weights (batches of under 4, under 16, and more rows).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from rnnlab.config import sampling_problems
from rnnlab.decoding import distribution, log_softmax
from rnnlab.errors import ConfigError
from rnnlab.nn import paths
from rnnlab.nn.graphs import GraphedStep, Step
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.nn.stack import StackState

BATCHED_PRIME = 16  # a prime of at most this many tokens is read in the batch, a token a round
PRIME_CHUNK = 64  # of a longer prime, the tokens read in a round (one forward pass, about a batched step's cost)
STEPPER_ROWS = (1, 8, 64)  # the batch sizes the packed steps are prepared for: under 4 rows, under 16, more


@dataclass(eq=False)
class Stream:
    """One generation: its prime (ids, at least one), its length and how it draws. Subclasses receive the
    tokens (:meth:`deliver`) and the end (:meth:`finish`, or :meth:`fail`); all three are called from the
    scheduler's thread. :meth:`cancel` (from any thread) drops the stream at the next round."""

    ids: np.ndarray = field(repr=False)  # (P,) int64
    length: int
    strategy: str = "sample"  # "sample" or "argmax"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    done: int = field(default=0, init=False)  # tokens delivered
    cancelled: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.strategy not in ("sample", "argmax"):
            raise ConfigError(f"a stream samples or takes the argmax, got strategy {self.strategy!r}")
        problems = sampling_problems(self.temperature, self.top_k, self.top_p)
        if problems:
            raise ConfigError(problems)
        if len(self.ids) < 1 or self.length < 0:
            raise ConfigError(f"a stream needs a prime of at least one token and a length >= 0, got "
                              f"{len(self.ids)} token(s) and length {self.length}")
        self.rng = np.random.default_rng(self.seed)
        self.read = 0  # prime tokens read
        self.state: StackState | None = None  # while the prime is read
        self.logits: torch.Tensor | None = None  # (1, V): the next token's, once the prime is read

    def deliver(self, token: int, probs: np.ndarray) -> None:
        """Token number ``self.done`` (before it is counted) and the model's softmax (V,) it was drawn from
        (at temperature 1, before top-k and top-p)."""

    def finish(self) -> None:
        """Every token was delivered."""

    def fail(self, message: str) -> None:
        """The scheduler could not go on; nothing more comes."""

    def cancel(self) -> None:
        self.cancelled = True


def choose(logits: np.ndarray, streams: list[Stream]) -> np.ndarray:
    """The next token of each stream (B,) from its row of ``logits`` (B, V) float64: the argmax, or one draw
    from its own generator by inverse CDF -- exactly :class:`~rnnlab.decoding.Sample`'s and
    :class:`~rnnlab.decoding.Argmax`'s choice for that row. Plain sampling (no top-k, no top-p) runs for all its
    rows at once with a temperature per row; the others go row by row through
    :func:`~rnnlab.decoding.distribution`."""
    b, v = logits.shape
    plain = [s.strategy == "sample" and not 0 < s.top_k < v and s.top_p >= 1.0 for s in streams]
    # one uniform per token for every stream that samples, from its own generator (Sample.choose's
    # rng.random((1, 1)))
    u = np.array([[0.0 if s.strategy == "argmax" else s.rng.random()] for s in streams])  # (B, 1)
    if all(plain):  # the common case, all rows at once
        return _inverse_cdf(logits, np.array([[s.temperature] for s in streams]), u)
    out = np.empty(b, dtype=np.int64)
    rows = [k for k in range(b) if plain[k]]
    if rows:
        out[rows] = _inverse_cdf(logits[rows], np.array([[streams[k].temperature] for k in rows]), u[rows])
    for k, s in enumerate(streams):
        if s.strategy == "argmax":
            out[k] = logits[k].argmax()
        elif not plain[k]:
            cum = np.cumsum(distribution(logits[k:k + 1], s.temperature, s.top_k, s.top_p), axis=-1)
            out[k] = min(int((cum <= u[k, 0] * cum[:, -1:]).sum()), v - 1)
    return out


def _inverse_cdf(logits: np.ndarray, temperature: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Rows of ``logits`` (n, V), each at its ``temperature`` (n, 1), drawn with its ``u`` (n, 1): the same
    operations as :func:`~rnnlab.decoding.distribution` without top-k and top-p, then the inverse CDF."""
    with np.errstate(over="ignore"):
        z = (logits - logits.max(axis=-1, keepdims=True)) / temperature  # the best token at exactly 0
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    cum = np.cumsum(p, axis=-1)
    return np.minimum((cum <= u * cum[:, -1:]).sum(axis=-1), logits.shape[-1] - 1)


class Scheduler:
    """Every active stream of one model, advanced together (see the module's docstring). :meth:`add` a stream
    from any thread; a thread of its own runs :meth:`round` while there are streams. Tests may call
    :meth:`round` directly instead (``start=False``)."""

    def __init__(self, model: RNNLanguageModel, prime_chunk: int = PRIME_CHUNK, start: bool = True,
                 warm: bool = False, batched_prime: int = BATCHED_PRIME):
        """``warm``: prepare the packed steps for every batch size now, so no round waits for one later."""
        if prime_chunk < 1:
            raise ConfigError(f"prime_chunk must be >= 1, got {prime_chunk}")
        model.eval()
        self.model, self.prime_chunk, self.batched_prime = model, prime_chunk, batched_prime
        self.device = model.decoder.weight.device
        self._steps: dict[int, Step] = {}
        self._cv = threading.Condition()
        self._pending: list[Stream] = []  # added, not yet taken into a round
        self.reading: list[Stream] = []  # reading their primes
        self.active: list[Stream] = []  # in the batch: rows of self.state and self.logits, in this order
        self.state: StackState | None = None  # (B, H) per tensor per layer
        self.logits: torch.Tensor | None = None  # (B, V): each active stream's next-token logits
        self.rounds = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start = start
        for rows in STEPPER_ROWS if warm else ():
            self._step(rows)

    # --- from any thread ---------------------------------------------------------------------------
    def add(self, stream: Stream) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._pending.append(stream)
            self._cv.notify()
            if self._start and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rnnlab-scheduler", daemon=True)
                self._thread.start()

    @property
    def size(self) -> int:
        """Streams present: waiting, reading their primes, or in the batch."""
        with self._cv:
            return len(self._pending) + len(self.reading) + len(self.active)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._pending or self.reading or self.active or self._closed):
                    self._cv.wait()
                if self._closed:
                    return
            try:
                self.round()
            except Exception as e:  # a failure of the model or the machine: every stream is told, none hangs
                message = f"generation failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                with self._cv:
                    everyone, self._pending = [*self._pending, *self.reading, *self.active], []
                self.reading, self.active, self.state, self.logits = [], [], None, None
                for s in everyone:
                    s.fail(message)

    # --- the round (the scheduler's thread) ------------------------------------------------------------
    def _step(self, rows: int) -> Step:
        key = STEPPER_ROWS[0] if rows < 4 else STEPPER_ROWS[1] if rows < 16 else STEPPER_ROWS[2]
        step = self._steps.get(key)
        if step is None:
            step = self.model.stepper(key)
            machine = paths.Machine.of_tensor(self.model.decoder.weight)
            if paths.stepping(machine, kept=True).path == "graph":  # kept: one capture per size serves every round
                step = GraphedStep(step)
            self._steps[key] = step
        return step

    @torch.no_grad()
    def round(self) -> bool:
        """One round: a chunk of the first long prime read, one token drawn and delivered for every stream whose
        logits are ready, one batched step for every stream that goes on. Returns whether there was work."""
        with self._cv:
            new, self._pending = self._pending, []
        self.rounds += 1
        joining: list[Stream] = []  # short primes: read in the batch, a token a round, as forced inputs
        for s in new:
            if s.length == 0:
                s.finish()
            elif s.cancelled:
                continue
            elif len(s.ids) <= self.batched_prime:
                joining.append(s)
            else:
                self.reading.append(s)
        self._drop_cancelled()
        # 1. a chunk of the first long prime (one a round: a forward pass costs about a batched step)
        ready: list[Stream] = []
        if self.reading:
            s = self.reading[0]
            chunk = torch.as_tensor(s.ids[s.read:s.read + self.prime_chunk], dtype=torch.int64, device=self.device)
            logits, s.state = self.model(chunk.unsqueeze(0), s.state)  # (1, n, V)
            s.read += chunk.numel()
            if s.read == len(s.ids):
                s.logits = logits[:, -1]  # (1, V)
                ready.append(self.reading.pop(0))
        batch = self.active
        if not (batch or ready or joining):
            return bool(new or self.reading)
        # 2. one token for every stream whose prime is read: in the batch, or read just now
        drawing = [k for k, s in enumerate(batch) if s.read == len(s.ids)]
        choosers = [batch[k] for k in drawing] + ready
        chosen: dict[int, int] = {}
        if choosers:
            parts = [s.logits for s in ready]
            if drawing:
                parts.insert(0, self.logits if len(drawing) == len(batch) else
                             self.logits.index_select(0, torch.as_tensor(drawing, device=self.device)))
            z = (torch.cat(parts) if len(parts) > 1 else parts[0]).double().cpu().numpy()  # (C, V)
            tokens = choose(z, choosers)
            probs = np.exp(log_softmax(z))  # (C, V): the model's own softmax, reported with each token
            for k, s in enumerate(choosers):
                s.deliver(int(tokens[k]), probs[k])
                s.done += 1
                chosen[id(s)] = int(tokens[k])
                if s.done >= s.length:
                    s.finish()
        # 3. the next batch, in row order: who stays, who was read just now, who joins; one batched step
        keep, fed, states = [], [], []
        going: list[Stream] = []
        for k, s in enumerate(batch):
            if s.cancelled or s.done >= s.length:
                continue
            keep.append(k)
            going.append(s)
            if s.read < len(s.ids):  # still reading its prime
                fed.append(int(s.ids[s.read]))
                s.read += 1
            else:
                fed.append(chosen[id(s)])
        if keep:
            states.append(self.state if len(keep) == len(batch) else _rows(self.state, keep, self.device))
        for s in ready:
            if s.done < s.length and not s.cancelled:
                going.append(s)
                fed.append(chosen[id(s)])
                states.append(s.state)
            s.state, s.logits = None, None
        for s in joining:
            going.append(s)
            fed.append(int(s.ids[0]))
            s.read = 1
            states.append(self.model.initial_state(1))
        self.active = going
        if not going:
            self.state, self.logits = None, None
            return True
        state = states[0] if len(states) == 1 else tuple(
            tuple(torch.cat([st[layer][i] for st in states]) for i in range(len(states[0][layer])))
            for layer in range(len(states[0])))
        x = torch.as_tensor(fed, dtype=torch.int64, device=self.device)  # (B,)
        logits, state = self._step(len(going))(x, state)
        if self.device.type == "cuda":  # a graph's outputs are overwritten by its next replay
            logits = logits.clone()
            state = tuple(tuple(t.clone() for t in layer) for layer in state)
        self.logits, self.state = logits, state
        return True

    def _drop_cancelled(self) -> None:
        self.reading = [s for s in self.reading if not s.cancelled]
        keep = [k for k, s in enumerate(self.active) if not s.cancelled]
        if len(keep) == len(self.active):
            return
        self.active = [self.active[k] for k in keep]
        if not keep:
            self.state, self.logits = None, None
            return
        assert self.state is not None and self.logits is not None
        self.state = _rows(self.state, keep, self.device)
        self.logits = self.logits.index_select(0, torch.as_tensor(keep, device=self.device))


def _rows(state: StackState, rows: list[int], device: torch.device) -> StackState:
    idx = torch.as_tensor(rows, dtype=torch.int64, device=device)
    return tuple(tuple(t.index_select(0, idx) for t in layer) for layer in state)


__all__ = ["BATCHED_PRIME", "PRIME_CHUNK", "Scheduler", "Stream", "choose"]
