r"""Continuous batching: many generations of one language model advanced together, a few batched steps a round.

A :class:`Scheduler` owns every active :class:`Stream` of one model. Each *round* it

1. reads the primes of the streams that joined, a chunk of at most :data:`PRIME_CHUNK` tokens of each and
   :data:`PRIME_TOKENS` in all, in batched forward passes (one for the streams that read as many tokens), so a
   burst of new streams is read at once and a long prime a chunk a round, never holding the others back for
   long; a stream whose prime is now read draws its first token from the model's logits after it, as
   :func:`rnnlab.sampling.generate` does, and is handed it at once;
2. advances every stream whose first token is drawn -- those in the batch and those read just now -- by ``n``
   batched steps: each step reads the stream's last token and draws its next one, from its own generator, with
   its own strategy, temperature, top-k and top-p;
3. hands each stream its ``n`` new tokens, each with the model's own softmax at that step
   (:meth:`Stream.deliver_many`), and lets the streams that are done or cancelled leave.

Streams join and leave between rounds; within a round every stream in the batch advances the same ``n`` tokens,
so no stream waits while others advance, and a stream that joins during a round has its first token at the
start of the next, before that round's steps. ``n`` keeps a round near :data:`ROUND_SECONDS`: measured per batch
size, it is many steps for a lone stream (Python's cost of a round spread over them) and few for a large batch,
whose step alone takes a good part of that (at most :data:`MAX_ROUND_STEPS`, and never more than any stream
still needs).

The steps run where :func:`rnnlab.nn.paths.decision` says: in :mod:`rnnlab.nn.kernels`' C++ decision loop
(:meth:`~rnnlab.nn.models.Decider.rows`: no Python between steps, each row's own draw, the logits kept), or
else the packed :class:`~rnnlab.nn.models.Stepper` from Python with :func:`choose` (replayed as a CUDA graph
per batch size on a GPU).

The draws are those of :func:`rnnlab.sampling.generate` (and so of ``rnnlab sample``) with the stream's seed:
one uniform per token from ``numpy.random.default_rng(seed)``, by inverse CDF over the distribution of
:func:`rnnlab.decoding.distribution` (temperature, then top-k, then top-p), or the argmax. Only the logits can
differ, in their last bits, because products over another batch size or another path round differently; a draw
that falls within that rounding of a boundary of the distribution function may then take the neighbouring token.

Memory: a stream holds its prime's ids and, while it is read, its state; in the batch, its state (2 x layers x
hidden floats for an LSTM) and ``n`` rows of logits and probabilities a round. The scheduler holds at most
three prepared copies of the weights (for batches of under 4, under 16, and more rows).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from rnnlab.config import sampling_problems
from rnnlab.decoding import distribution
from rnnlab.errors import ConfigError
from rnnlab.nn import paths
from rnnlab.nn.graphs import GraphedStep, Step
from rnnlab.nn.models import Decider, RNNLanguageModel
from rnnlab.nn.stack import StackState

PRIME_CHUNK = 64  # prime tokens read per stream in a round (one forward pass for every stream being read)
PRIME_TOKENS = 256  # at most this many prime tokens read in a round, over all streams
ROUND_SECONDS = 0.02  # a round's steps: as many as fit in this, as measured for the batch's size
MAX_ROUND_STEPS = 64  # and at most this many (the C++ loop's gain is spent by then)
STEPPER_ROWS = (1, 8, 64)  # the batch sizes the steps are prepared for: under 4 rows, under 16, more


class Reported(NamedTuple):
    """What a stream reports with a round's ``n`` tokens, as Python numbers (from :func:`report`): each token's
    probability under the model's own softmax, and the ``top`` most probable tokens at each step with theirs
    (most probable first, ties by id: NumPy's stable argsort)."""

    p: list[float]  # (n,): the probability of each token drawn
    top_ids: list[list[int]]  # (n, top)
    top_p: list[list[float]]  # (n, top)
    finite: bool  # every one of these probabilities is a finite number (a model gone NaN makes them not)


def report(tokens: np.ndarray, probs: np.ndarray, top: int) -> Reported:
    """:class:`Reported` for the ``tokens`` (n,) drawn from the softmax ``probs`` (n, V)."""
    return _report(tokens[:, None], probs[:, None], [top])[0]


def _report(tokens: np.ndarray, probs: np.ndarray, tops: list[int]) -> list[Reported]:
    """:class:`Reported` for each of B streams at once: ``tokens`` (n, B), ``probs`` (n, B, V), ``tops`` (B,) how
    many candidates each reports -- one sort and a few array operations for a whole round."""
    want = max(tops)
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :want]  # (n, B, want)
    top_p = np.take_along_axis(probs, order, axis=-1)  # (n, B, want)
    chosen = np.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]  # (n, B)
    finite = (np.isfinite(top_p).all(axis=(0, 2)) & np.isfinite(chosen).all(axis=0)).tolist()  # (B,)
    ids_l, p_l = order.transpose(1, 0, 2).tolist(), top_p.transpose(1, 0, 2).tolist()  # (B, n, want)
    out = []
    for k, (top, ids, ps, ch) in enumerate(zip(tops, ids_l, p_l, chosen.T.tolist())):
        if top < want:
            ids, ps = [row[:top] for row in ids], [row[:top] for row in ps]
        out.append(Reported(ch, ids, ps, finite[k]))
    return out


@dataclass(eq=False)
class Stream:
    """One generation: its prime (ids, at least one), its length and how it draws. Subclasses receive the
    tokens (:meth:`deliver`, or all of a round's at once: :meth:`deliver_many`) and the end (:meth:`finish`, or
    :meth:`fail`); all are called from the scheduler's thread. :meth:`cancel` (from any thread) drops the stream
    at the next round."""

    ids: np.ndarray = field(repr=False)  # (P,) int64
    length: int
    strategy: str = "sample"  # "sample" or "argmax"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    report_top: int = 0  # > 0: each round's tokens come with a Reported of this many candidates (deliver_many)
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
        self.read = 0  # prime tokens read (all of them before the stream joins the batch)
        self.state: StackState | None = None  # while the prime is read
        self.next = -1  # the token its first step in the batch reads: the one drawn after the prime

    @property
    def settings(self) -> tuple[float, float, float, float]:
        """How it draws, as :func:`choose` and the C++ loop read it: (mode (0 argmax, 1 sample), temperature,
        top_k, top_p)."""
        return (1.0 if self.strategy == "sample" else 0.0, self.temperature, float(self.top_k), self.top_p)

    def deliver(self, token: int, probs: np.ndarray) -> None:
        """Token number ``self.done`` (before it is counted) and the model's softmax (V,) it was drawn from
        (at temperature 1, before top-k and top-p)."""

    def deliver_many(self, tokens: np.ndarray, probs: np.ndarray, reported: Reported | None = None) -> None:
        """A round's tokens (n,), numbered from ``self.done``, and the softmax (n, V) each was drawn from; counts
        them (``done`` grows by n). ``reported``: with ``report_top`` > 0, what :func:`report` gives for them,
        computed for the whole round at once. By default :meth:`deliver` one by one."""
        for token, p in zip(tokens.tolist(), probs):
            self.deliver(token, p)
            self.done += 1

    def finish(self) -> None:
        """Every token was delivered."""

    def fail(self, message: str) -> None:
        """The scheduler could not go on; nothing more comes."""

    def cancel(self) -> None:
        self.cancelled = True


def choose(logits: np.ndarray, settings: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The next token of each row (B,) from its ``logits`` (B, V) float64, drawn as its ``settings`` (B, 4) say
    (:attr:`Stream.settings`) with its uniform ``u`` (B,): the argmax, or the inverse-CDF draw -- exactly
    :class:`~rnnlab.decoding.Sample`'s and :class:`~rnnlab.decoding.Argmax`'s choice for that row (the C++ loop
    makes the same choice). Plain sampling (no top-k, no top-p) runs for all its rows at once with a temperature
    per row; the others go row by row through :func:`~rnnlab.decoding.distribution`."""
    b, v = logits.shape
    out = logits.argmax(axis=-1)
    sample = settings[:, 0] == 1
    top_k, top_p = settings[:, 2], settings[:, 3]
    plain = sample & ~((top_k > 0) & (top_k < v)) & (top_p >= 1.0)
    if plain.any():
        out[plain] = _inverse_cdf(logits[plain], settings[plain, 1:2], u[plain, None])
    for k in np.flatnonzero(sample & ~plain):
        cum = np.cumsum(distribution(logits[k:k + 1], settings[k, 1], int(top_k[k]), top_p[k]), axis=-1)
        out[k] = min(int((cum <= u[k] * cum[:, -1:]).sum()), v - 1)
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
                 warm: bool = False, steps: int | None = None, round_seconds: float = ROUND_SECONDS,
                 prime_tokens: int = PRIME_TOKENS):
        """``warm``: prepare the steps for every batch size now, so no round waits for one later. ``steps``: this
        many steps every round (at most what a stream still needs) instead of as many as fit in
        ``round_seconds``."""
        if prime_chunk < 1 or prime_tokens < 1:
            raise ConfigError(f"prime_chunk and prime_tokens must be >= 1, got {prime_chunk} and {prime_tokens}")
        if steps is not None and steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        model.eval()
        self.model, self.prime_chunk, self.prime_tokens = model, prime_chunk, prime_tokens
        self.steps, self.round_seconds = steps, round_seconds
        self.device = model.decoder.weight.device
        machine = paths.Machine.of_tensor(model.decoder.weight)
        self.kernel = paths.decision(machine, paths.Network.of(model.rnn)).path == "kernel"
        self._graphs = paths.stepping(machine, kept=True).path == "graph"  # one capture per size serves every round
        self._steps: dict[int, Step | Decider] = {}
        self._step_seconds: dict[int, float] = {}  # a step's measured seconds, by batch size
        self._cv = threading.Condition()
        self._pending: list[Stream] = []  # added, not yet taken into a round
        self.reading: list[Stream] = []  # reading their primes
        self.active: list[Stream] = []  # in the batch: rows of self.state and self.last, in this order
        self._batch: list[Stream] = []  # the streams of the round under way
        self.state: StackState | None = None  # (B, H) per tensor per layer
        self.last = np.zeros(0, dtype=np.int64)  # (B,): each active stream's last token, read by the next step
        self.rounds = 0
        self.round_steps: list[int] = []  # the steps of the latest rounds (at most 1,000), for tests and benchmarks
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
                    everyone, self._pending = [*self._pending, *self.reading, *self.active, *self._batch], []
                self.reading, self.active, self._batch, self.state, self.last = [], [], [], None, self.last[:0]
                for s in dict.fromkeys(everyone):  # each once, in order
                    s.fail(message)

    # --- the round (the scheduler's thread) ------------------------------------------------------------
    def _step(self, rows: int) -> Step | Decider:
        """The prepared step for a batch of ``rows``: a :class:`~rnnlab.nn.models.Decider` (the C++ loop) or a
        packed :class:`~rnnlab.nn.models.Stepper` (a :class:`~rnnlab.nn.graphs.GraphedStep` on a GPU)."""
        key = STEPPER_ROWS[0] if rows < 4 else STEPPER_ROWS[1] if rows < 16 else STEPPER_ROWS[2]
        step = self._steps.get(key)
        if step is None:
            if self.kernel:
                step = Decider(self.model, key)
            else:
                step = self.model.stepper(key)
                step = GraphedStep(step) if self._graphs else step
            self._steps[key] = step
        return step

    def _round_steps(self, rows: int, need: int) -> int:
        """How many steps this round takes for a batch of ``rows`` when its streams need at most ``need``."""
        if self.steps is not None:
            n = self.steps
        else:
            per = self._step_seconds.get(rows)
            n = 1 if per is None else int(self.round_seconds / max(per, 1e-6))
        return max(1, min(n, MAX_ROUND_STEPS, need))

    @torch.no_grad()
    def round(self) -> bool:
        """One round: the new primes read (a chunk of each), every stream whose prime is read advanced by a few
        steps, their tokens delivered. Returns whether there was work."""
        with self._cv:
            new, self._pending = self._pending, []
        self.rounds += 1
        for s in new:
            if s.length == 0:
                s.finish()
            elif not s.cancelled:
                self.reading.append(s)
        self._drop_cancelled()
        work = bool(new or self.reading or self.active)
        ready = self._read_primes()
        batch = self._batch = self.active + ready  # told if the round fails
        if not batch:
            return work
        # the batch: who stays, then who was read just now, each its state and the last token it has not read
        states = [self.state] if self.active else []
        states += [s.state for s in ready]
        state = states[0] if len(states) == 1 else _cat(states)
        last = np.concatenate([self.last, np.array([s.next for s in ready], dtype=np.int64)])
        for s in ready:
            s.state = None
        b = len(batch)
        n = self._round_steps(b, max(s.length - s.done for s in batch))
        u = np.zeros((n, b))  # (n, B): each stream's uniforms, one per token it still draws this round
        for k, s in enumerate(batch):
            if s.strategy == "sample":
                take = min(n, s.length - s.done)
                u[:take, k] = s.rng.random(take)
        settings = np.array([s.settings for s in batch])  # (B, 4)
        t0 = time.perf_counter()
        fed, state, logits = self._advance(last, state, settings, u, n)  # (B, n + 1), state, (n, B, V)
        per = (time.perf_counter() - t0) / n
        old = self._step_seconds.get(b)
        self._step_seconds[b] = per if old is None else 0.5 * (old + per)
        self.round_steps = [*self.round_steps[-999:], n]
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))  # (n, B, V): the model's own softmax,
        probs /= probs.sum(axis=-1, keepdims=True)  # reported with each token
        tops = [s.report_top for s in batch]
        reported = _report(fed[:, 1:].T, probs, tops) if max(tops) > 0 else [None] * b
        keep = []
        for k, s in enumerate(batch):
            take = min(n, s.length - s.done)
            r = reported[k]
            if r is not None and take < n:
                r = Reported(r.p[:take], r.top_ids[:take], r.top_p[:take], r.finite)
            s.deliver_many(fed[k, 1:take + 1], probs[:take, k], r if s.report_top else None)
            if s.done >= s.length:
                s.finish()
            elif not s.cancelled:
                keep.append(k)
        self.active, self._batch = [batch[k] for k in keep], []
        self.last = fed[keep, -1]
        if not keep:
            self.state = None
        else:
            self.state = state if len(keep) == b else _rows(state, keep, self.device)
        return True

    def _advance(self, last: np.ndarray, state: StackState, settings: np.ndarray, u: np.ndarray,
                 n: int) -> tuple[np.ndarray, StackState, np.ndarray]:
        """``n`` steps of the batch from its ``last`` tokens (B,): the tokens fed (B, n + 1), ``last`` first, then
        each step's draw; the state after reading all but the last; the logits (n, B, V) float64 of every draw."""
        step = self._step(len(last))
        if isinstance(step, Decider):
            x = torch.zeros((len(last), n + 1), dtype=torch.int64)
            x[:, 0] = torch.from_numpy(last)
            fed, state, logits = step.rows(x, state, torch.from_numpy(settings), torch.from_numpy(u))
            return fed.numpy(), state, logits.double().numpy()
        fed = np.empty((len(last), n + 1), dtype=np.int64)
        fed[:, 0] = last
        zs = []
        for t in range(n):
            logits, state = step(torch.as_tensor(fed[:, t], device=self.device), state)
            z = logits.double().cpu().numpy()  # (B, V); a copy: a graph's outputs are overwritten by its next replay
            fed[:, t + 1] = choose(z, settings, u[t])
            zs.append(z)
        if self.device.type == "cuda":
            state = tuple(tuple(t.clone() for t in layer) for layer in state)
        return fed, state, np.stack(zs)

    def _read_primes(self) -> list[Stream]:
        """A chunk of the primes being read -- of each up to :data:`PRIME_CHUNK` tokens -- in join order for as
        many streams as :data:`PRIME_TOKENS` allows (the first always): one forward pass for the streams that read
        the same number of tokens. A stream whose prime is now read draws its first token from the model's logits
        after it, as :func:`rnnlab.sampling.generate` does, and is handed it at once. Returns the streams that
        go on into the batch, in join order."""
        buckets: dict[int, list[Stream]] = {}
        budget = self.prime_tokens
        for s in self.reading:
            n = min(self.prime_chunk, len(s.ids) - s.read)
            if n <= budget or budget == self.prime_tokens:
                buckets.setdefault(n, []).append(s)
                budget -= n
        read, logits = [], []
        for n, group in buckets.items():
            x = torch.as_tensor(np.stack([s.ids[s.read:s.read + n] for s in group]), dtype=torch.int64,
                                device=self.device)  # (R, n)
            fresh = self.model.initial_state(1)
            state = _cat([s.state if s.state is not None else fresh for s in group])
            out, state = self.model.rnn(self.model.embed(x), state, fused=self.model.cfg.fused)  # (R, n, H)
            for k, s in enumerate(group):
                s.state = _rows(state, [k], self.device)
                s.read += n
            ends = [k for k, s in enumerate(group) if s.read == len(s.ids)]
            if ends:  # the logits after the whole prime, for the first token
                read += [group[k] for k in ends]
                logits.append(self.model.readout(out[ends])[:, -1])  # (E, V)
        self.reading = [s for s in self.reading if s.read < len(s.ids)]
        if not read:
            return []
        z = torch.cat(logits).double().cpu().numpy()  # (E, V)
        u = np.array([s.rng.random() if s.strategy == "sample" else 0.0 for s in read])  # each its first uniform
        first = choose(z, np.array([s.settings for s in read]), u)  # (E,)
        probs = np.exp(z - z.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)  # (E, V)
        tops = [s.report_top for s in read]
        reported = _report(first[None], probs[None], tops) if max(tops) > 0 else [None] * len(read)
        ready = []
        for k, s in enumerate(read):
            s.deliver_many(first[k:k + 1], probs[k:k + 1], reported[k])
            if s.done >= s.length:
                s.finish()
            elif not s.cancelled:
                s.next = int(first[k])
                ready.append(s)
        return ready

    def _drop_cancelled(self) -> None:
        self.reading = [s for s in self.reading if not s.cancelled]
        keep = [k for k, s in enumerate(self.active) if not s.cancelled]
        if len(keep) == len(self.active):
            return
        self.active = [self.active[k] for k in keep]
        self.last = self.last[keep]
        if not keep:
            self.state = None
            return
        assert self.state is not None
        self.state = _rows(self.state, keep, self.device)


def _rows(state: StackState, rows: list[int], device: torch.device) -> StackState:
    idx = torch.as_tensor(rows, dtype=torch.int64, device=device)
    return tuple(tuple(t.index_select(0, idx) for t in layer) for layer in state)


def _cat(states: list[StackState]) -> StackState:
    """States of several batches, their rows one after another."""
    return tuple(tuple(torch.cat([st[layer][i] for st in states]) for i in range(len(states[0][layer])))
                 for layer in range(len(states[0])))


__all__ = ["MAX_ROUND_STEPS", "PRIME_CHUNK", "PRIME_TOKENS", "ROUND_SECONDS", "Reported", "Scheduler", "Stream",
           "choose", "report"]
