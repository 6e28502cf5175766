r"""The recurrent language model: input layer, recurrent stack, softmax output layer.

.. math::
    e_t = E[x_t] \;(\text{or the one-hot of } x_t), \qquad
    h^{(1..L)}_t = \text{stack}(e_t, h_{t-1}), \qquad
    p(x_{t+1} \mid x_{\le t}) = \operatorname{softmax}(W_{o}\, \text{drop}(h^{(L)}_t) + b_o)

The loss is the mean cross entropy of every position's prediction against the next
token, in nats; divide by ln 2 for bits per character.

Shapes: tokens (B, T) int64 -> logits (B, T, V). A *soft* input (B, T, V) of
probabilities is also accepted (fed through the input layer as a soft one-hot), for
feeding strategies that give the model its own output.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.config import ModelConfig
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
        out = F.dropout(out, self.cfg.dropout, self.training)
        return self.decoder(out), state  # (B, T, V)

    def step(self, token: Tensor, state: StackState) -> tuple[Tensor, StackState]:
        """One step: token (B,) ids or (B, V) probabilities -> logits (B, V), new state."""
        x = self.embed(token.unsqueeze(1))[:, 0]  # (B, I)
        h, state = self.rnn.step(x, state)  # (B, H)
        h = F.dropout(h, self.cfg.dropout, self.training)
        return self.decoder(h), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sequence_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross entropy in nats: logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
