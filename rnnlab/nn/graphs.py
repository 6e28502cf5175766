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
  warm-up steps on a side stream, as CUDA graph capture requires).

The replayed step is the same kernels on the same data as the eager one, so its results
are the eager step's (the GPU tests compare them). The weights are those of the wrapped
step when it was built: build a new one after training on.
"""

from __future__ import annotations

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


class _Graph:
    """One recorded step for one batch size."""

    def __init__(self, step: Step, tokens: Tensor, state: StackState):
        self.tokens = tokens.clone()  # (B,)
        self.state = tuple(tuple(t.clone() for t in layer) for layer in state)  # static, updated by each replay
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):  # reads the buffers, writes only fresh tensors
                step(self.tokens, self.state)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # other threads may use the GPU
            self.logits, new = step(self.tokens, self.state)  # (B, V)
            for old_layer, new_layer in zip(self.state, new):
                for old, fresh in zip(old_layer, new_layer):
                    old.copy_(fresh)  # after every read of the old state: the copies come last

    def __call__(self, tokens: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        self.tokens.copy_(tokens)
        if state is not self.state:  # a state from elsewhere (the prime's, a beam's reordering)
            for old_layer, new_layer in zip(self.state, state):
                for old, fresh in zip(old_layer, new_layer):
                    old.copy_(fresh)
        self.graph.replay()
        return self.logits, self.state
