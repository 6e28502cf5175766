r"""Many-to-one: an RNN reads a sequence and the state after its last element is classified.

.. math::
    h_t = \text{stack}(e_t, h_{t-1}), \qquad
    p(y \mid x_{1..L}) = \operatorname{softmax}(W_c\, \text{drop}(h_L) + b_c)

where L is the sequence's own length: in a padded batch (B, T) with lengths L_b <= T,
example b is read from ``h[b, L_b - 1]``. The recurrence is causal, so that state is
the same as for the unpadded sequence (the padding after it is never read into it);
``test_what_the_head_reads_ignores_padding`` checks this against a loop over unpadded
sequences. With ``bidirectional`` a second stack reads each sequence reversed (its
real part only: ``x[L-1], ..., x[0]``, then the padding) and its state after ``x[0]``
is concatenated with the forward one: :math:`[h^{\rightarrow}_L; h^{\leftarrow}_1]`.
The two directions are two independent stacks (each layer of one direction sees only
its own direction's lower layer; ``torch.nn.GRU(bidirectional=True)`` feeds both
directions to the next layer: the same for one layer).

With ``pool="mean"`` the head reads each direction's mean state over the sequence's real steps
instead, :math:`[\bar h^{\rightarrow}; \bar h^{\leftarrow}]` with
:math:`\bar h = \frac{1}{L} \sum_{t=1}^{L} h_t`, and with ``pool="last+mean"`` both:
:math:`[h^{\rightarrow}_L; \bar h^{\rightarrow}; h^{\leftarrow}_1; \bar h^{\leftarrow}]`. The
mean weighs the evidence of every position alike (as a bag of character n-grams does), where
the last state holds what the recurrence kept.

Inputs are token ids (B, T) through an embedding or the one-hot vector, as in the
language model, or real-valued vectors (B, T, F) fed to the first layer as they are.
The loss is the cross entropy of the softmax against the one-hot label.

Input dropout (``input_dropout`` p, training only, token inputs) zeroes each time step's whole
input vector (a character's embedding) with probability p and scales the others by 1 / (1 - p): the network
learns to classify from any large enough part of the sequence rather than from the few
characters of a string it has memorised.

An ensemble (:class:`ClassifierEnsemble`) is K such classifiers, each with its own initial
weights and dropout masks, trained side by side on the same batches (each its own loss, so they
learn independently) and predicting the mean of their probabilities:
:math:`p(y \mid x) = \frac{1}{K} \sum_k p_k(y \mid x)`. A comma list of pools gives the members
different heads, in turn (:func:`~rnnlab.config.member_pools`): members that read their states
differently can err on different strings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.config import POOLS, ClassifyRunConfig, ModelConfig, member_pools
from rnnlab.nn.stack import RecurrentStack


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Each row's first ``lengths[b]`` steps reversed, the padding left in place: (B, T, ...) -> same."""
    t = torch.arange(x.shape[1], device=x.device)  # (T,)
    idx = torch.where(t[None, :] < lengths[:, None], lengths[:, None] - 1 - t[None, :], t[None, :])  # (B, T)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def last_real(out: Tensor, lengths: Tensor) -> Tensor:
    """out (B, T, H) -> (B, H): each row's output at step ``lengths[b] - 1``."""
    return out[torch.arange(out.shape[0], device=out.device), lengths - 1]


def mean_real(out: Tensor, lengths: Tensor) -> Tensor:
    """out (B, T, H) -> (B, H): each row's mean output over its first ``lengths[b]`` steps."""
    real = torch.arange(out.shape[1], device=out.device)[None, :] < lengths[:, None]  # (B, T)
    return (out * real.unsqueeze(-1).to(out.dtype)).sum(1) / lengths.unsqueeze(-1).to(out.dtype)


class RNNClassifier(nn.Module):
    """A sequence classifier: ``vocab_size`` for token inputs, or ``feature_size`` for vectors."""

    members = 1

    def __init__(self, cfg: ModelConfig, num_classes: int, vocab_size: int = 0, feature_size: int = 0,
                 bidirectional: bool = False, input_dropout: float = 0.0, pool: str = "last", lm: bool = False):
        super().__init__()
        if (vocab_size > 0) == (feature_size > 0):
            raise ValueError("give vocab_size (token inputs) or feature_size (vector inputs), not both")
        if pool not in POOLS:
            raise ValueError(f"pool must be {', '.join(POOLS[:-1])} or {POOLS[-1]}, got {pool!r}")
        self.cfg, self.num_classes, self.bidirectional, self.pool = cfg, num_classes, bidirectional, pool
        self.input_dropout = input_dropout  # training, token inputs: a step's whole input zeroed with this probability
        # a fixed shift (C,) added to the log-probabilities when a trained classifier predicts (logit adjustment,
        # -tau log pi; rnnlab.classify sets it from the checkpoint); None: the plain softmax. Not a parameter.
        self.logit_shift: np.ndarray | None = None
        self.vocab_size, self.feature_size = vocab_size, feature_size
        self.embedding: nn.Embedding | None = None
        if vocab_size and cfg.input == "embedding":
            self.embedding = nn.Embedding(vocab_size, cfg.embedding_size)
            input_size = cfg.embedding_size
        else:
            input_size = vocab_size or feature_size
        self.rnn = RecurrentStack(cfg.cell, input_size, cfg.hidden_size, cfg.num_layers, cfg.dropout)
        self.rnn_reverse = (RecurrentStack(cfg.cell, input_size, cfg.hidden_size, cfg.num_layers, cfg.dropout)
                            if bidirectional else None)
        per_direction = cfg.hidden_size * (2 if pool == "last+mean" else 1)
        self.head = nn.Linear(per_direction * (2 if bidirectional else 1), num_classes)
        if lm and not vocab_size:
            raise ValueError("the language-model loss needs token inputs (vocab_size), not vectors")
        # lm: each direction's next-token head, over the vocabulary and the end of the sequence (id vocab_size)
        self.lm_heads = nn.ModuleList(nn.Linear(cfg.hidden_size, vocab_size + 1)
                                      for _ in range(2 if bidirectional else 1)) if lm else None

    def embed(self, x: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, I); vectors (B, T, F) pass through."""
        if self.feature_size:
            return x.to(self.head.weight.dtype)
        if self.embedding is not None:
            return self.embedding(x)
        return F.one_hot(x, self.vocab_size).to(self.head.weight.dtype)

    def _read(self, out: Tensor, lengths: Tensor) -> list[Tensor]:
        """One direction's outputs (B, T, H) -> what the head reads of them: [last], [mean] or [last, mean],
        each (B, H)."""
        return ([last_real(out, lengths)] if self.pool != "mean" else []) + (
            [mean_real(out, lengths)] if self.pool != "last" else [])

    def states(self, x: Tensor, lengths: Tensor, fused: bool | None = None) -> list[Tensor]:
        """Each direction's outputs at every step, (B, T, H): the forward one, then (bidirectional) the
        backward one, which reads each sequence's real part reversed (its step t follows ``x[L-1-t]``)."""
        fused = self.cfg.fused if fused is None else fused
        e = self.embed(x)  # (B, T, I)
        if self.training and self.input_dropout > 0 and not self.feature_size:
            keep = torch.rand(e.shape[:2], device=e.device) >= self.input_dropout  # (B, T)
            e = e * keep.unsqueeze(-1).to(e.dtype) / (1.0 - self.input_dropout)  # (B, T, I)
        out, _ = self.rnn(e, fused=fused)  # (B, T, H)
        if self.rnn_reverse is None:
            return [out]
        back, _ = self.rnn_reverse(reverse_padded(e, lengths), fused=fused)  # (B, T, H)
        return [out, back]

    def read(self, states: list[Tensor], lengths: Tensor) -> Tensor:
        """:meth:`states` -> what the head reads of each direction: its state after the sequence's last real
        element, its mean state over the real elements, or both (``pool``): (B, H * pooled * directions)."""
        return torch.cat([part for out in states for part in self._read(out, lengths)], dim=-1)

    def features(self, x: Tensor, lengths: Tensor, fused: bool | None = None) -> Tensor:
        """What the head reads of each direction (:meth:`read` of :meth:`states`): (B, H * pooled * directions)."""
        return self.read(self.states(x, lengths, fused), lengths)

    def lm_loss(self, states: list[Tensor], x: Tensor, lengths: Tensor) -> Tensor:
        r"""The auxiliary language-model loss of :meth:`states`: each direction's state at every real step
        predicts the token that direction reads next, and after the last one the end of the sequence:

        .. math::
            \ell_{LM} = -\frac{1}{D \sum_b L_b} \sum_{d,b} \sum_{t=1}^{L_b}
                \log \operatorname{softmax}(U_d h^d_{b,t} + c_d)_{x^d_{b,t+1}}

        with :math:`x^d` the sequence as direction d reads it (the backward one reversed) and
        :math:`x^d_{b,L_b+1}` the end id V. x (B, T) ids, lengths (B,) -> a scalar (nats per token)."""
        if self.lm_heads is None:
            raise ValueError("this classifier has no language-model heads (built without lm)")
        t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
        real, last = t < lengths[:, None], t == lengths[:, None] - 1  # (B, T) each
        reads = [x] if len(states) == 1 else [x, reverse_padded(x, lengths)]  # each as its direction reads it
        logits = torch.stack([head(out) for head, out in zip(self.lm_heads, states)])  # (D, B, T, V+1)
        targets = torch.stack([torch.where(real, torch.where(last, self.vocab_size, r.roll(-1, dims=1)), -100)
                               for r in reads])  # (D, B, T): the next token, the end id, or -100 (padding)
        return F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=-100)

    def train_outputs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        """One training pass: the logits (B, C) and, with ``lm``, :meth:`lm_loss` of the same states (else None)."""
        states = self.states(x, lengths)
        logits = self.classify(self.read(states, lengths))  # (B, C)
        return logits, (self.lm_loss(states, x, lengths) if self.lm_heads is not None else None)

    def classify(self, h: Tensor) -> Tensor:
        """What the head reads (B, H * pooled * directions) -> logits (B, C), through dropout in training."""
        return self.head(F.dropout(h, self.cfg.dropout, self.training))

    def forward(self, x: Tensor, lengths: Tensor, fused: bool | None = None) -> Tensor:
        """x (B, T) ids or (B, T, F) vectors, lengths (B,) in 1..T -> logits (B, C)."""
        return self.classify(self.features(x, lengths, fused))  # (B, C)

    def prefix_logits(self, x: Tensor) -> Tensor:
        r"""The logits after every prefix of one unpadded sequence, in one pass: x (1, T) ids or (1, T, F)
        vectors -> (T, C), row t the classification of :math:`x_{1..t+1}` (the head applied to every
        :math:`h_t`, as :meth:`forward` applies it to :math:`h_L`). Forward only: a bidirectional
        classifier's backward state differs for every prefix (:func:`rnnlab.classify.prefix_proba`
        reads those prefixes one by one)."""
        if self.rnn_reverse is not None:
            raise ValueError("a bidirectional classifier reads every prefix from its end: no single pass")
        out, _ = self.rnn(self.embed(x), fused=self.cfg.fused)  # (1, T, H)
        last = out[0]  # (T, H): row t the last state of the prefix x_{1..t+1}
        steps = torch.arange(1, last.shape[0] + 1, device=last.device, dtype=last.dtype)
        mean = last.cumsum(0) / steps[:, None]  # (T, H): row t the mean state of that prefix
        read = {"last": [last], "mean": [mean], "last+mean": [last, mean]}[self.pool]  # as _read reads
        return self.head(torch.cat(read, dim=-1))  # (T, C)

    def member_train_outputs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        """:meth:`train_outputs` as an ensemble gives it (K = 1): logits (K, B, C), LM losses (K,) or None."""
        logits, lm = self.train_outputs(x, lengths)
        return logits[None], (None if lm is None else lm[None])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ClassifierEnsemble(nn.Module):
    """K :class:`RNNClassifier` members of one shape (their heads may read different pools); its logits are the log
    of their mean probability.

    It answers what the classifier's users ask of a model (``num_classes``, ``logit_shift``, ``head`` for the
    device, ``rnn_reverse``, :meth:`forward`, :meth:`prefix_logits`), so it stands wherever one classifier does."""

    def __init__(self, members: list[RNNClassifier]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members_ = nn.ModuleList(members)
        first = members[0]
        self.cfg, self.num_classes, self.bidirectional = first.cfg, first.num_classes, first.bidirectional
        self.vocab_size, self.feature_size = first.vocab_size, first.feature_size
        self.logit_shift: np.ndarray | None = None

    @property
    def members(self) -> int:
        return len(self.members_)

    @property
    def head(self) -> nn.Linear:
        return self.members_[0].head

    @property
    def rnn_reverse(self) -> RecurrentStack | None:
        return self.members_[0].rnn_reverse

    def member_train_outputs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        """Every member's :meth:`RNNClassifier.train_outputs`: logits (K, B, C), language-model losses (K,) or None."""
        logits, lms = zip(*(m.train_outputs(x, lengths) for m in self.members_))  # the members are built alike
        return torch.stack(logits), (None if lms[0] is None else torch.stack(lms))

    @staticmethod
    def mean_probability_logits(logits: Tensor) -> Tensor:
        """(K, ..., C) -> (..., C): log of the members' mean softmax (a softmax of it gives that mean)."""
        return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - np.log(logits.shape[0])

    def forward(self, x: Tensor, lengths: Tensor, fused: bool | None = None) -> Tensor:
        """x (B, T) ids or (B, T, F) vectors, lengths (B,) -> logits (B, C) of the mean probability."""
        return self.mean_probability_logits(torch.stack([m(x, lengths, fused) for m in self.members_]))

    def prefix_logits(self, x: Tensor) -> Tensor:
        """(1, T) or (1, T, F) -> (T, C): every prefix, as :meth:`RNNClassifier.prefix_logits` (forward members)."""
        return self.mean_probability_logits(torch.stack([m.prefix_logits(x) for m in self.members_]))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_classifier(cfg: ClassifyRunConfig, num_classes: int, vocab_size: int = 0, feature_size: int = 0
                     ) -> RNNClassifier | ClassifierEnsemble:
    """The classifier ``cfg`` describes, with fresh weights: one :class:`RNNClassifier`, or an ensemble of
    ``cfg.classifier.ensemble`` of them."""
    c = cfg.classifier
    members = [RNNClassifier(cfg.model, num_classes, vocab_size=vocab_size, feature_size=feature_size,
                             bidirectional=c.bidirectional, input_dropout=c.input_dropout, pool=pool,
                             lm=c.lm_weight > 0 and vocab_size > 0)
               for pool in member_pools(c.pool, c.ensemble)]
    return members[0] if len(members) == 1 else ClassifierEnsemble(members)
