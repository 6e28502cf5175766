r"""The recurrent language model: input layer, recurrent stack, softmax output layer.

.. math::
    e_t = E[x_t] \;(\text{or the one-hot of } x_t), \qquad
    h^{(1..L)}_t = \text{stack}(e_t, h_{t-1}), \qquad
    p(x_{t+1} \mid x_{\le t}) = \operatorname{softmax}(W_{o}\, \text{drop}(h^{(L)}_t) + b_o)

With ``tie_weights``, :math:`W_o = E` (one parameter, Press & Wolf 2017).

The loss is the mean cross entropy of every position's prediction against the next
token, in nats; divide by ln 2 for bits per character.

Shapes: tokens (B, T) int64 -> logits (B, T, V). A *soft* input (B, T, V) of
probabilities is also accepted (fed through the input layer as a soft one-hot), for
feeding strategies that give the model its own output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.config import ModelConfig
from rnnlab.nn import paths
from rnnlab.nn.linear import PackedLinear
from rnnlab.nn.stack import RecurrentStack, StackState


class RNNLanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        if cfg.input == "embedding":
            self.embedding: nn.Embedding | None = nn.Embedding(vocab_size, cfg.embedding_size)
            input_size = cfg.embedding_size
        else:
            self.embedding = None
            input_size = vocab_size
        self.rnn = RecurrentStack(cfg.cell, input_size, cfg.hidden_size, cfg.num_layers, cfg.dropout)
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)
        if cfg.tie_weights:  # E = W_o: one (V, H) parameter, its gradient the sum of both roles' (Press & Wolf 2017),
            # drawn as the softmax layer's (U(+-1/sqrt(H))): an embedding's N(0, 1) would make logits of size sqrt(H)
            assert self.embedding is not None and cfg.embedding_size == cfg.hidden_size, "checked by ModelConfig"
            self.embedding.weight = self.decoder.weight

    def initial_state(self, batch: int) -> StackState:
        p = self.decoder.weight
        return self.rnn.initial_state(batch, p.device, p.dtype)

    def embed(self, tokens: Tensor) -> Tensor:
        """(B, T) ids or (B, T, V) probabilities -> (B, T, I) inputs to the first layer."""
        if tokens.is_floating_point():
            return tokens @ self.embedding.weight if self.embedding is not None else tokens  # soft one-hot
        if self.embedding is not None:
            return self.embedding(tokens)
        return F.one_hot(tokens, self.vocab_size).to(self.decoder.weight.dtype)

    def forward(self, tokens: Tensor, state: StackState | None = None,
                fused: bool | None = None) -> tuple[Tensor, StackState]:
        """tokens (B, T) -> logits (B, T, V), final state. ``fused`` defaults to the config."""
        x = self.embed(tokens)  # (B, T, I)
        if state is None:
            state = self.initial_state(x.shape[0])
        out, state = self.rnn(x, state, fused=self.cfg.fused if fused is None else fused)  # (B, T, H)
        return self.readout(out), state  # (B, T, V)

    def readout(self, h: Tensor) -> Tensor:
        """Top-layer states h (B, T, H) -> logits (B, T, V): output dropout, then the softmax layer. Where h is
        the fused stack's time-major result seen batch-major, the product runs in that order and the logits are
        a view of it (a later reshape copies the (B, T, V) logits, not the larger (B, T, H) states)."""
        h = F.dropout(h, self.cfg.dropout, self.training)
        if h.dim() == 3 and not h.is_contiguous() and h.transpose(0, 1).is_contiguous():
            return self.decoder(h.transpose(0, 1)).transpose(0, 1)
        return self.decoder(h)

    def step(self, token: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """One step: token (B,) ids or (B, V) probabilities -> logits (B, V), new state."""
        x = self.embed(token.unsqueeze(1))[:, 0]  # (B, I)
        h, state = self.rnn.step(x, state)  # (B, H)
        h = F.dropout(h, self.cfg.dropout, self.training)
        return self.decoder(h), state

    def stepper(self, streams: int = 1, onednn: bool | None = None) -> Stepper:
        """A fast :meth:`step` for inference (sampling, beam search, deciding a self-fed run's inputs) of
        about ``streams`` streams at once: see :class:`Stepper` (``onednn``: see
        :class:`~rnnlab.nn.linear.PackedLinear`)."""
        return Stepper(self, streams, onednn)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def input_table(model: RNNLanguageModel, add_bias_hh: bool) -> Tensor:
    r"""The first layer's input projection of every symbol v, :math:`e(v) W_{ih}^\top + b_{ih}` (V, G*H), with
    :math:`b_{hh}` added where ``add_bias_hh``: a step then reads a row instead of multiplying."""
    ids = torch.arange(model.vocab_size, device=model.decoder.weight.device)
    table = model.rnn.cells[0].project_input(model.embed(ids[:, None])[:, 0])
    return table + model.rnn.cells[0].bias_hh if add_bias_hh else table


class Stepper:
    r""":meth:`RNNLanguageModel.step` in eval mode, with the weights packed once for inference.

    The first layer's input projection is folded into a table,
    :math:`T = e(v) W_{ih}^\top + b_{ih} + b_{hh}` for every symbol v (V, G*H), so a step
    reads one row instead of multiplying; every later layer multiplies the joined
    :math:`[x_t, h_{t-1}]` (B, I+H) by one matrix :math:`[W_{ih}, W_{hh}]`, and the cell's
    :meth:`~rnnlab.nn.cells.Cell.activate_` applies the gates (in place). The recurrent
    matrices are :class:`~rnnlab.nn.linear.PackedLinear`: oneDNN's packed product for large
    float32 matrices and 4 or more streams on the CPU, ``addmm`` (in column halves for fewer than
    16 streams) otherwise; the small
    softmax layer stays on ``addmm``, faster there. Cells whose step is not a function of
    that sum alone (the GRU: its reset gate multiplies :math:`W_{hn} h + b_{hn}` apart) take
    their ordinary :meth:`~rnnlab.nn.cells.Cell.step`. The same function as ``step`` up to
    float rounding; built from the weights as they are now (build a new one after training on).
    """

    @torch.no_grad()
    def __init__(self, model: RNNLanguageModel, streams: int = 1, onednn: bool | None = None):
        self.model, self.streams, self.onednn = model, streams, onednn
        cells = model.rnn.cells
        self.cells = cells
        first = cells[0]
        self.table = None
        if first.packs:  # (V, G*H): every symbol's input projection, biases included
            self.table = input_table(model, add_bias_hh=True)
            self.hh0 = PackedLinear(first.weight_hh, None, streams, onednn)  # h (B, H) -> (B, G*H)
        self.packed = [PackedLinear(torch.cat([c.weight_ih, c.weight_hh], 1), c.bias_ih + c.bias_hh, streams,
                                    onednn)
                       if c.packs and k > 0 else None for k, c in enumerate(cells)]  # [x, h] (B, I+H) -> (B, G*H)
        self.dec_w = model.decoder.weight.t().contiguous()  # (H, V)
        self.dec_b = model.decoder.bias.detach().clone()

    def tensors(self) -> list[Tensor]:
        """The packed weights the step reads, in a fixed order (the GRU's own step reads the live parameters)."""
        out = [] if self.table is None else [self.table, *self.hh0.tensors()]
        for lin in self.packed:
            out += lin.tensors() if lin is not None else []
        return out + [self.dec_w, self.dec_b]

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the model's current weights into this Stepper's own tensors, in place, so that a CUDA graph
        recorded over it (:class:`~rnnlab.nn.graphs.GraphedStep`) steps with them. Not for a Stepper with
        oneDNN-packed matrices (the CPU's: build a new one there)."""
        fresh = Stepper(self.model, self.streams, self.onednn)
        for mine, new in zip(self.tensors(), fresh.tensors(), strict=True):
            mine.copy_(new)

    @torch.no_grad()
    def __call__(self, tokens: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """tokens (B,) ids -> logits (B, V), new state."""
        new = []
        x = None
        for k, cell in enumerate(self.cells):
            s = state[k]
            if k == 0 and self.table is not None:
                x, s = cell.activate_(self.hh0(s[0], add=self.table.index_select(0, tokens)), s)
            elif k == 0:
                x, s = cell.step(self.model.embed(tokens[:, None])[:, 0], s)
            elif self.packed[k] is not None:
                x, s = cell.activate_(self.packed[k](torch.cat([x, s[0]], 1)), s)  # (B, H)
            else:
                x, s = cell.step(x, s)
            new.append(s)
        return torch.addmm(self.dec_b, x, self.dec_w), tuple(new)  # (B, V)


def kernel_decides(model: RNNLanguageModel, streams: int = 1) -> bool:
    """Whether :func:`decide_in_kernel` runs for this model, as :func:`rnnlab.nn.paths.decision` chooses: a cell
    the C++ loop knows (``Cell.kernel_code``), on the CPU, float32 or float64, kernels built."""
    machine = paths.Machine.of_tensor(model.decoder.weight)
    return paths.decision(machine, paths.Network.of(model.rnn, streams)).path == "kernel"


class Decider:
    r"""The C++ decision loop (``torch.ops.rnnlab.decide``) with its weights prepared once for one model and about
    ``streams`` rows; call it again for every run while the weights stay as they are (build a new one after they
    change). Prepared: the first layer's input projection of every symbol as a table (V, G*H) with the biases that
    add to it, the later layers' biases, and -- where :meth:`~rnnlab.nn.linear.PackedLinear.would_pack` says so
    for that matrix and that many rows, as for the :class:`Stepper` -- each recurrent and later-layer input matrix
    in oneDNN's packed layout, multiplied by oneDNN from the loop; the others by the BLAS."""

    @torch.no_grad()
    def __init__(self, model: RNNLanguageModel, streams: int = 1):
        self.model = model
        w = model.decoder.weight
        cells = model.rnn.cells
        self.gru = not cells[0].packs  # the GRU: its b_hh is not a plain sum
        # the GRU's b_hh is not a plain sum: its reset gate scales b_hn
        self.table = input_table(model, add_bias_hh=not self.gru).contiguous()
        none = w.new_empty(0)
        self.w_ih = [none] + [c.weight_ih.detach() for c in cells[1:]]
        self.b_in = [none] + [(c.bias_ih if self.gru else c.bias_ih + c.bias_hh).detach().contiguous()
                              for c in cells[1:]]
        self.w_hh = [c.weight_hh.detach() for c in cells]
        self.b_rec = [c.bias_hh.detach() for c in cells] if self.gru else [none] * len(cells)

        def packed(m: Tensor) -> Tensor | None:  # PackedLinear's packing, with its fall-back for refused shapes
            return PackedLinear(m, None, streams, onednn=True).packed if PackedLinear.would_pack(m, streams) else None
        self.dnn_ih = [None] + [packed(m) for m in self.w_ih[1:]]
        self.dnn_hh = [packed(m) for m in self.w_hh]
        if not any(t is not None for t in self.dnn_ih + self.dnn_hh):
            self.dnn_ih, self.dnn_hh = [], []

    @property
    def onednn(self) -> bool:
        """Whether any product runs on oneDNN."""
        return bool(self.dnn_hh)

    @torch.no_grad()
    def __call__(self, x: Tensor, state: StackState, mode: str, u: Tensor | None = None, truth: Tensor | None = None,
                 temperature: float = 1.0) -> tuple[Tensor, StackState]:
        """See :func:`decide_in_kernel`."""
        fed, state, _ = self._run(x, state, 1 if mode == "sample" else 0, float(temperature), u, truth, None, False)
        return fed, state

    @torch.no_grad()
    def rows(self, x: Tensor, state: StackState, settings: Tensor, u: Tensor | None = None,
             truth: Tensor | None = None) -> tuple[Tensor, StackState, Tensor]:
        """As :meth:`__call__`, each row drawing its own way -- ``settings`` (B, 4) float64, per row ``[mode (0
        argmax, 1 sample), temperature, top_k (0: all), top_p]``, top-k and top-p filtering as
        :func:`rnnlab.decoding.distribution` does -- and also returning the logits (T - 1, B, V) every choice was made
        from (``u`` (T - 1, B) float64, needed where a row samples)."""
        return self._run(x, state, 0, 1.0, u, truth, settings, True)

    def _run(self, x: Tensor, state: StackState, mode: int, temperature: float, u: Tensor | None,
             truth: Tensor | None, settings: Tensor | None, keep: bool) -> tuple[Tensor, StackState, Tensor]:
        model = self.model
        flat = [t for layer in state for t in layer]
        if truth is not None:  # broadcast as the Python loop's torch.where does
            truth = truth.expand(x.shape[0], max(x.shape[1] - 1, 0))
        fed, out, logits = torch.ops.rnnlab.decide(
            x, flat, model.rnn.cells[0].kernel_code, self.table, self.w_ih, self.b_in, self.w_hh, self.b_rec,
            model.decoder.weight.detach(), model.decoder.bias.detach(), mode, temperature, u, truth, self.dnn_ih,
            self.dnn_hh, settings, keep)
        n = len(state[0])
        return fed, tuple(tuple(out[n * k:n * (k + 1)]) for k in range(len(model.rnn.cells))), logits


@torch.no_grad()
def decide_in_kernel(model: RNNLanguageModel, x: Tensor, state: StackState, mode: str, u: Tensor | None = None,
                     truth: Tensor | None = None, temperature: float = 1.0) -> tuple[Tensor, StackState] | None:
    r"""A self-fed run's inputs (B, T), decided by :mod:`rnnlab.nn.kernels`' C++ loop: ``fed[:, 0] = x[:, 0]``, then
    at every t >= 1 the eval-mode step of the model on ``fed[:, t - 1]`` and the choice of its own token -- the
    argmax, or (``mode="sample"``) the first k whose cumulative softmax probability exceeds ``u[t - 1]`` times the
    total, at the ``temperature`` given -- unless ``truth[:, t - 1]`` (B, T - 1) bool takes ``x[:, t]``. Returns
    ``fed`` and the state after reading ``fed[:, :T-1]``, from which a run goes on with ``fed[:, -1]``. The same
    function as :func:`rnnlab.feeding.own_inputs`' Python loop, up to float rounding. None where the kernel
    cannot run: not on the CPU, a dtype other than float32/float64, or no kernels here. (For many runs with the
    same weights, build one :class:`Decider` and call it.)
    """
    if not kernel_decides(model, x.shape[0]):
        return None
    return Decider(model, x.shape[0])(x, state, mode, u, truth, temperature)


def sequence_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross entropy in nats: logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
