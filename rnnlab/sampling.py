"""Generating text from a recurrent language model.

The model reads the prime once (a fused teacher-forced pass), then writes one token
per step, feeding each chosen token back and carrying its state forward; nothing is
recomputed from the start. ``num_samples`` streams run as one batch; on a GPU each step is
replayed as one CUDA graph; on the CPU, argmax and plain sampling (any temperature, no top-k
or top-p) run in :mod:`rnnlab.nn.kernels`' C++ loop, a chunk of steps per call. Token choice is
:mod:`rnnlab.decoding`, shared with the n-gram models.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
import torch

from rnnlab.config import SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import (
    Argmax,
    BeamTree,
    ReorderFn,
    Sample,
    StepFn,
    beam_search,
    beam_search_tree,
    log_softmax,
    make_sampler,
    prime_end,
    token_buffer,
)
from rnnlab.errors import ConfigError
from rnnlab.nn.graphs import GraphedStep, Step
from rnnlab.nn import paths
from rnnlab.nn.models import Decider, RNNLanguageModel
from rnnlab.nn.stack import StackState


def start_token(vocab: Vocab) -> str:
    """What an empty prime starts from: a newline if the model knows one, else its first symbol."""
    return "\n" if "\n" in vocab.index else vocab.symbols[0]


def encode_prime(vocab: Vocab, prime: str) -> np.ndarray:
    """Ids of the prime (a :class:`~rnnlab.errors.VocabError` names every character the model
    never saw); an empty prime starts from :func:`start_token`."""
    ids = vocab.encode(prime) if prime else np.zeros(0, dtype=np.int64)
    return ids if len(ids) else vocab.encode(start_token(vocab))


def _device(model: RNNLanguageModel) -> torch.device:
    return model.decoder.weight.device


GRAPH_FROM = paths.GRAPH_FROM  # steps from which a GPU run records its step as a CUDA graph


def _stepper(model: RNNLanguageModel, streams: int, steps: int = GRAPH_FROM) -> Step:
    """The packed inference step for ``steps`` steps, replayed as a CUDA graph where :func:`rnnlab.nn.paths.stepping`
    says so (a GPU and enough steps: :class:`~rnnlab.nn.graphs.GraphedStep`, one launch a step instead of dozens;
    its outputs are overwritten by the next call)."""
    step = model.stepper(streams)
    graph = paths.stepping(paths.Machine.of_tensor(model.decoder.weight), steps).path == "graph"
    return GraphedStep(step) if graph else step


PRIME_CHUNK = 4096  # prime tokens read per forward pass: only the last position's logits are kept


def _read_prime(model: RNNLanguageModel, ids: np.ndarray, batch: int) -> tuple[torch.Tensor, StackState]:
    """Run the prime through the model: the logits for the next token (B, V) and the state.

    Every stream reads the same prime, so it is read once, as one row, :data:`PRIME_CHUNK` tokens at a
    time (the state carried between chunks, which the recurrence makes exact); the logits and the state
    are then repeated for the ``batch`` streams."""
    x = torch.as_tensor(ids, dtype=torch.int64, device=_device(model)).unsqueeze(0)  # (1, P)
    state = model.initial_state(1)
    for i in range(0, x.shape[1], PRIME_CHUNK):
        logits, state = model(x[:, i:i + PRIME_CHUNK], state)  # (1, n, V)
    last = logits[:, -1].expand(batch, -1).contiguous()  # (B, V)
    return last, tuple(tuple(t.expand(batch, *t.shape[1:]).contiguous() for t in layer) for layer in state)


def _begin(model: RNNLanguageModel, ids: np.ndarray,
           cfg: SampleConfig) -> tuple[Argmax | Sample, np.random.Generator, torch.Tensor, StackState]:
    """What every sampling loop starts from: the sampler, the seeded generator, and the prime read by the model
    (the logits for the first token (B, V) and the state)."""
    logits, state = _read_prime(model, ids, cfg.num_samples)
    return make_sampler(cfg.strategy, cfg.temperature, cfg.top_k, cfg.top_p), np.random.default_rng(cfg.seed), \
        logits, state


@torch.no_grad()
def sample_steps(model: RNNLanguageModel, vocab: Vocab,
                 cfg: SampleConfig) -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
    """Generate step by step: for each of ``cfg.length`` steps, yield the chosen ids (B,) and
    the logits (B, V), float64, they were chosen from.

    This is the loop :func:`generate` runs, exposed for callers that stream or show the
    model's distribution at every step (the web server); the same ``cfg`` (seed included)
    gives the same tokens. Beam search is not step by step and is refused here.
    """
    cfg.validate()
    if cfg.strategy == "beam":
        raise ConfigError("beam search chooses the whole continuation at the end; it cannot be run step by step")
    model.eval()
    ids = encode_prime(vocab, cfg.prime)
    sampler, rng, logits, state = _begin(model, ids, cfg)
    step = _stepper(model, cfg.num_samples, cfg.length)  # weights packed once for the whole continuation
    for t in range(cfg.length):
        z = logits.double().cpu().numpy()  # (B, V)
        nxt = sampler.choose(z, rng)  # (B,)
        yield nxt, z
        if t + 1 < cfg.length:
            logits, state = step(torch.as_tensor(nxt, dtype=torch.int64, device=_device(model)), state)


@torch.no_grad()
def generate(model: RNNLanguageModel, vocab: Vocab, cfg: SampleConfig,
             on_text: Callable[[list[str]], None] | None = None) -> list[str]:
    """``cfg.num_samples`` continuations of ``cfg.prime``; each returned text starts with the prime.

    ``on_text`` is called after every step with the new piece of text of every stream
    (the symbol, with a separating space at word level), for streaming output.
    """
    cfg.validate()
    model.eval()
    ids = encode_prime(vocab, cfg.prime)
    last = prime_end(vocab, cfg.prime, ids)
    if cfg.strategy == "beam":
        return [cfg.prime + vocab.decode(_beam(model, ids, cfg), after=last)] * cfg.num_samples
    out = token_buffer(cfg.num_samples, cfg.length)  # (B, N)
    prev = [last] * cfg.num_samples
    chunks = _kernel_chunks(model, ids, cfg) if _kernel_applies(model, cfg) else (
        nxt[:, None] for nxt, _ in sample_steps(model, vocab, cfg))
    t = 0
    for chunk in chunks:  # (B, n) ids
        out[:, t:t + chunk.shape[1]] = chunk
        t += chunk.shape[1]
        for nxt in chunk.T if on_text is not None else ():
            syms = [vocab.symbols[i] for i in nxt]
            on_text([vocab.separator(p, s) + s for p, s in zip(prev, syms)])
            prev = syms
    return [cfg.prime + vocab.decode(row, after=last) for row in out]


KERNEL_CHUNK = 64  # steps per call of the C++ loop: streamed text appears this many tokens at a time


def _sampler(model: RNNLanguageModel, cfg: SampleConfig) -> str:
    """What ``cfg`` draws, as :func:`rnnlab.nn.paths.sampling` reads it: argmax, plain sampling at any temperature,
    sampling filtered by top-k or top-p, or beam search."""
    if cfg.strategy == "sample" and (0 < cfg.top_k < model.vocab_size or cfg.top_p < 1.0):
        return "filtered"
    return cfg.strategy


def _kernel_applies(model: RNNLanguageModel, cfg: SampleConfig) -> bool:
    """Whether :func:`generate` runs in :mod:`rnnlab.nn.kernels`' C++ loop, as :func:`rnnlab.nn.paths.sampling`
    chooses (argmax, or sampling at any temperature without top-k / top-p, where the decision loop runs)."""
    choice = paths.sampling(paths.Machine.of_tensor(model.decoder.weight), paths.Network.of(model.rnn, cfg.num_samples),
                            _sampler(model, cfg), cfg.length)
    return choice.path == "kernel"


def _kernel_chunks(model: RNNLanguageModel, ids: np.ndarray,
                   cfg: SampleConfig) -> Generator[np.ndarray, None, None]:
    """The continuation (B, n) ids, :data:`KERNEL_CHUNK` steps at a time, from the C++ loop
    (a :class:`~rnnlab.nn.models.Decider`). The same draws as :func:`sample_steps`: the first token by
    the sampler from the prime's logits, then each step's B uniforms from the same generator, in the same order
    (a different token only where rounding moves a draw across a boundary of the distribution function)."""
    if cfg.length == 0:
        return
    sampler, rng, logits, state = _begin(model, ids, cfg)
    b = cfg.num_samples
    tok = sampler.choose(logits.double().numpy(), rng)  # (B,)
    yield tok[:, None]
    mode = "sample" if cfg.strategy == "sample" else "argmax"
    decide = Decider(model, b)  # weights prepared once for every chunk
    done = 1
    while done < cfg.length:
        n = min(KERNEL_CHUNK, cfg.length - done)
        u = torch.from_numpy(rng.random((n, b))) if mode == "sample" else None  # (n, B) float64
        x = torch.zeros((b, n + 1), dtype=torch.int64)
        x[:, 0] = torch.from_numpy(np.asarray(tok, dtype=np.int64))
        fed, state = decide(x, state, mode, u, temperature=cfg.temperature)
        tok = fed[:, -1].numpy()
        yield fed[:, 1:].numpy()
        done += n


@torch.no_grad()
def next_token_logits(model: RNNLanguageModel, vocab: Vocab, prime: str) -> np.ndarray:
    """The model's logits (V,), float64, for the token after ``prime`` (an empty prime starts from
    :func:`start_token`): what :func:`generate` draws its first token from. Feed them to
    :func:`rnnlab.decoding.distribution` for the probabilities at a temperature, top-k and top-p."""
    model.eval()
    logits, _ = _read_prime(model, encode_prime(vocab, prime), 1)  # (1, V)
    return logits[0].double().cpu().numpy()


@torch.no_grad()
def beam_tree(model: RNNLanguageModel, vocab: Vocab, cfg: SampleConfig, pruned: int = 3) -> BeamTree:
    """The beam search :func:`generate` runs for ``cfg`` (``cfg.beam_width``, ``cfg.length``, ``cfg.prime``;
    the strategy is taken to be beam), with its tree: every step's kept hypotheses and the ``pruned`` best
    candidates that fell out (:func:`rnnlab.decoding.beam_search_tree`). ``tree.tokens`` are the ids
    :func:`generate` continues the prime with."""
    cfg.validate()
    if pruned < 0:
        raise ConfigError(f"pruned must be >= 0, got {pruned}")
    model.eval()
    return beam_search_tree(*_beam_model(model, encode_prime(vocab, cfg.prime), cfg), cfg.beam_width, cfg.length,
                            pruned)


def _beam_model(model: RNNLanguageModel, ids: np.ndarray, cfg: SampleConfig
                ) -> tuple[StepFn, ReorderFn, StackState, np.ndarray]:
    """What a beam search over ``model`` after the prime ``ids`` needs: the step function, the state
    reordering, the state after the prime (one row) and the first token's log probabilities (V,)."""
    logits, state = _read_prime(model, ids, 1)
    device = _device(model)
    stepper = _stepper(model, 1, cfg.length)

    def step(tokens: np.ndarray, st: StackState) -> tuple[np.ndarray, StackState]:
        lg, st = stepper(torch.as_tensor(tokens, dtype=torch.int64, device=device), st)  # (K, V)
        return log_softmax(lg.double().cpu().numpy()), st

    def reorder(st: StackState, idx: np.ndarray) -> StackState:
        i = torch.as_tensor(idx, dtype=torch.int64, device=device)
        return tuple(tuple(t.index_select(0, i) for t in layer) for layer in st)

    return step, reorder, state, log_softmax(logits[0].double().cpu().numpy())


def _beam(model: RNNLanguageModel, ids: np.ndarray, cfg: SampleConfig) -> list[int]:
    seq, _ = beam_search(*_beam_model(model, ids, cfg), cfg.beam_width, cfg.length)
    return seq
