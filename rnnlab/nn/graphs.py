r"""One inference step replayed as a CUDA graph: the GPU's answer to per-step launch overhead.

Sampling on a GPU is bound by the CPU: a 2-layer LSTM step is a few dozen small kernels,
each launched from Python (some 5-10 us apiece), while the GPU runs them in a fraction
of that. :class:`GraphedStep` records the whole step once as a CUDA graph
(``torch.cuda.CUDAGraph``) and replays it with one launch per step:

* the step reads its tokens and state from static input buffers and, at its end, copies
  the new state back into the state buffers, inside the graph;
* a call copies the tokens in (and the state, unless it is the state the last call
  returned, which already sits in the buffers), replays, and returns the static logits
  and state buffers: **they are overwritten by the next call**, so a caller that keeps
  them copies them first (the sampler turns the logits into a NumPy array at once);
* one graph per batch size, recorded at the first call with that size (after a few
  warm-up steps on a side stream, as CUDA graph capture requires), on the GPU that holds
  the tokens, one capture at a time in the process; a capture that fails leaves the
  caller's stream current and the step running eagerly, with a warning.

The replayed step is the same kernels on the same data as the eager one, so its results
are the eager step's (the GPU tests compare them). The weights are those of the wrapped
step when it was built: build a new one after training on.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from rnnlab.nn.stack import StackState

Step = Callable[[Tensor, StackState], tuple[Tensor, StackState]]  # tokens (B,), state -> logits (B, V), state
WARMUP = 3  # eager steps on a side stream before a capture


class GraphedStep:
    """``step`` (tokens (B,) -> logits (B, V), new state) replayed as one CUDA graph per batch size."""

    def __init__(self, step: Step):
        self.step = step
        self._graphs: dict[int, _Graph] = {}
        self.eager = False  # set when a capture failed: the step then runs as it is

    @torch.no_grad()
    def __call__(self, tokens: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        if not tokens.is_cuda:
            raise ValueError("GraphedStep runs on a CUDA device; step on the CPU directly")
        if self.eager:
            return self.step(tokens, state)
        b = tokens.shape[0]
        with torch.cuda.device(tokens.device):  # the graph, its streams and replays on the data's GPU
            g = self._graphs.get(b)
            if g is None:
                try:
                    g = self._graphs[b] = _Graph(self.step, tokens, state)
                except RuntimeError as e:  # a driver or an operation that cannot be captured: slower, not wrong
                    warnings.warn(f"CUDA graph capture failed ({str(e).splitlines()[0]}); stepping without graphs",
                                  RuntimeWarning, stacklevel=2)
                    self.eager = True
                    return self.step(tokens, state)
            return g(tokens, state)


_CAPTURE = threading.Lock()  # one capture at a time in the process (CUDA's rule for a process's captures)


class _Graph:
    """One recorded step for one batch size, on the current device."""

    def __init__(self, step: Step, tokens: Tensor, state: StackState):
        self.tokens = tokens.clone()  # (B,)
        self.state = tuple(tuple(t.clone() for t in layer) for layer in state)  # static, updated by each replay
        caller = torch.cuda.current_stream()
        side = torch.cuda.Stream()  # warm-up and capture on a stream of this graph's own, on this device
        side.wait_stream(caller)
        self.graph = torch.cuda.CUDAGraph()
        with _CAPTURE:
            try:
                with torch.cuda.stream(side):
                    for _ in range(WARMUP):  # reads the buffers, writes only fresh tensors
                        step(self.tokens, self.state)
                side.synchronize()
                # thread_local: other threads may use the GPU meanwhile (their streams are not this one)
                with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
                    self.logits, new = step(self.tokens, self.state)  # (B, V)
                    for old_layer, new_layer in zip(self.state, new):
                        for old, fresh in zip(old_layer, new_layer):
                            old.copy_(fresh)  # after every read of the old state: the copies come last
            finally:
                torch.cuda.set_stream(caller)  # a capture that failed to begin or end leaves its stream current
        caller.wait_stream(side)

    def __call__(self, tokens: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        self.tokens.copy_(tokens)
        if state is not self.state:  # a state from elsewhere (the prime's, a beam's reordering)
            for old_layer, new_layer in zip(self.state, state):
                for old, fresh in zip(old_layer, new_layer):
                    if fresh.shape != old.shape:
                        raise ValueError(f"a state of shape {tuple(fresh.shape)} for a step of {tuple(old.shape)}")
                    old.copy_(fresh)
        self.graph.replay()
        return self.logits, self.state
