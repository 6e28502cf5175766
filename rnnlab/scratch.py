r"""Back-propagation through time by hand: an Elman RNN language model in NumPy (no torch here).

The model is the repo's :class:`~rnnlab.nn.models.RNNLanguageModel` with ``input="onehot"``,
``cell="elman"``, ``num_layers=1``, ``dropout=0``, written out so that every derivative
can be read. With V symbols, H hidden units, a sequence of input ids
:math:`x_1..x_T` (one-hot vectors :math:`\mathbf{x}_t \in \{0,1\}^V`) and targets
:math:`c_1..c_T` (the next symbols):

.. math::
    a_t &= W_{ih}\,\mathbf{x}_t + b_{ih} + W_{hh}\, h_{t-1} + b_{hh}   && (H) \\
    h_t &= \tanh(a_t), \qquad h_0 = 0 \text{ (or a given state)}          && (H) \\
    y_t &= W_{ho}\, h_t + b_{ho}                                           && (V) \\
    p_t &= \operatorname{softmax}(y_t)                                     && (V) \\
    L   &= -\frac{1}{BT} \sum_{b=1}^{B} \sum_{t=1}^{T} \log p_{t}[c_t]     && \text{nats per token}

The parameters live in a dict of float64 arrays whose names are PyTorch's
(``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` as in ``torch.nn.RNN``; the
output layer ``weight_ho``, ``bias_ho`` is the language model's ``decoder``).
:data:`TORCH_KEYS` maps them to the keys of ``RNNLanguageModel.state_dict()``, so
:func:`to_torch_state_dict` / :func:`from_torch_state_dict` move weights across and
the tests check loss and gradients against autograd to 1e-10. There are two hidden
biases, as in PyTorch: only their sum :math:`b_h = b_{ih} + b_{hh}` matters, and
both get the same gradient.

Shapes: ids (B, T) or one sequence (T,); states (B, H) or (H,). Everything is
computed batch-first (B, T, ...) in float64.

The backward pass (:func:`backward`) goes from t = T down to 1 carrying
:math:`\delta h` -- the gradient that reaches :math:`h_t` from the future -- which
is the whole of BPTT; :func:`train_scratch` trains with truncated BPTT (the state
is carried from one window to the next, its gradient is not), Adagrad and clipping
as in Karpathy's ``min-char-rnn``. A loss of :math:`\ln V` nats is what a model
that knows nothing gets; a few hundred steps on a repetitive text should take it
well below 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnlab.data.vocab import Vocab
from rnnlab.decoding import distribution, log_softmax
from rnnlab.errors import ConfigError, DataError

Params = dict[str, np.ndarray]

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ho", "bias_ho")

TORCH_KEYS: dict[str, str] = {
    "weight_ih": "rnn.layers.0.weight_ih",  # (H, V)
    "weight_hh": "rnn.layers.0.weight_hh",  # (H, H)
    "bias_ih": "rnn.layers.0.bias_ih",  # (H,)
    "bias_hh": "rnn.layers.0.bias_hh",  # (H,)
    "weight_ho": "decoder.weight",  # (V, H)
    "bias_ho": "decoder.bias",  # (V,)
}
"""Our parameter name -> the key of the same tensor in ``RNNLanguageModel.state_dict()``
(``input="onehot"``, ``cell="elman"``, ``num_layers=1``)."""


def param_shapes(vocab_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter for V = ``vocab_size`` and H = ``hidden_size``."""
    v, h = vocab_size, hidden_size
    return {"weight_ih": (h, v), "weight_hh": (h, h), "bias_ih": (h,), "bias_hh": (h,),
            "weight_ho": (v, h), "bias_ho": (v,)}


def _size_problems(vocab_size: Any, hidden_size: Any) -> list[str]:
    p = []
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        p.append(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
    if not isinstance(hidden_size, (int, np.integer)) or hidden_size < 1:
        p.append(f"hidden_size must be an integer >= 1, got {hidden_size!r}")
    return p


def init_params(vocab_size: int, hidden_size: int, rng: np.random.Generator) -> Params:
    """PyTorch's initialisation: every parameter uniform in (-1/sqrt(H), 1/sqrt(H)).

    (``nn.RNN`` draws all four recurrent tensors so; ``nn.Linear(H, V)`` draws its weight
    and bias uniform in (-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = H.)
    """
    problems = _size_problems(vocab_size, hidden_size)
    if problems:
        raise ConfigError(problems)
    k = 1.0 / math.sqrt(hidden_size)
    return {n: rng.uniform(-k, k, size=s) for n, s in param_shapes(vocab_size, hidden_size).items()}


@dataclass
class Cache:
    """What the forward pass keeps for the backward pass (all float64, batch-first)."""

    x: np.ndarray  # (B, T, V) one-hot inputs
    targets: np.ndarray  # (B, T) target ids
    h: np.ndarray  # (B, T + 1, H): h[:, 0] = h_0, h[:, t] = h_t
    p: np.ndarray  # (B, T, V) softmax probabilities
    params: Params  # the parameters the pass used (not copied)
    single: bool  # the inputs were one sequence (T,): gradients of h_0 come back as (H,)

    @property
    def last_state(self) -> np.ndarray:
        """h_T: (B, H), or (H,) for one sequence -- the state to carry to the next window."""
        return self.h[0, -1] if self.single else self.h[:, -1]


class ScratchRNN:
    r"""An Elman RNN language model with hand-written forward and backward passes.

    ``params`` is a dict of float64 arrays (:data:`PARAM_NAMES`, shapes
    :func:`param_shapes`); pass it to wrap existing weights, or leave it out to draw
    PyTorch's initialisation from ``seed``.

    >>> m = ScratchRNN(vocab_size=3, hidden_size=4, seed=0)
    >>> loss, cache = m.forward([0, 1, 2], [1, 2, 0])
    >>> bool(0 < loss < 3), m.backward(cache)["weight_hh"].shape, cache.last_state.shape
    (True, (4, 4), (4,))
    """

    def __init__(self, vocab_size: int, hidden_size: int, seed: int = 0, params: Mapping[str, Any] | None = None):
        problems = _size_problems(vocab_size, hidden_size)
        if problems:
            raise ConfigError(problems)
        self.vocab_size, self.hidden_size = int(vocab_size), int(hidden_size)
        if params is None:
            self.params = init_params(self.vocab_size, self.hidden_size, np.random.default_rng(seed))
        else:
            self.params = _checked_params(params, param_shapes(self.vocab_size, self.hidden_size))

    def initial_state(self, batch: int | None = None) -> np.ndarray:
        """h_0 = 0: (H,) for one sequence, (B, H) for a batch."""
        return np.zeros(self.hidden_size if batch is None else (batch, self.hidden_size))

    def forward(self, inputs: Any, targets: Any, h0: Any = None) -> tuple[float, Cache]:
        """Mean cross entropy (nats per token) of ``targets`` given ``inputs``, and the cache.

        ``inputs``, ``targets``: ids (T,) or (B, T); ``h0``: (H,) or (B, H), zeros if None.
        """
        return forward(self.params, inputs, targets, h0)

    def backward(self, cache: Cache) -> Params:
        """Gradients of the loss of :meth:`forward` (see :func:`backward`)."""
        return backward(cache)

    def loss_and_grads(self, inputs: Any, targets: Any, h0: Any = None) -> tuple[float, Params, np.ndarray]:
        """Forward and backward in one call: (loss, grads, h_T)."""
        loss, cache = forward(self.params, inputs, targets, h0)
        return loss, backward(cache), cache.last_state

    def sample(self, h: Any, seed_id: int, n: int, rng: np.random.Generator, temperature: float = 1.0) -> list[int]:
        """``n`` ids drawn one at a time, each fed back in, starting by feeding ``seed_id`` from state ``h`` (H,)."""
        return sample(self.params, h, seed_id, n, rng, temperature)


def _checked_params(params: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> Params:
    """The parameters as float64 arrays; every missing, extra or misshapen one is reported at once."""
    problems = [f"missing parameter {n!r}" for n in shapes if n not in params]
    problems += [f"unexpected parameter {n!r}" for n in params if n not in shapes]
    out = {}
    for n, s in shapes.items():
        if n in params:
            a = np.array(params[n], dtype=np.float64)
            if a.shape != s:
                problems.append(f"parameter {n!r} must have shape {s}, got {a.shape}")
            out[n] = a
    if problems:
        raise ConfigError(problems)
    return out


def _ids(name: str, a: Any, vocab_size: int) -> np.ndarray:
    """Token ids as an int64 array (T,) or (B, T), or a ConfigError saying what is wrong."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise ConfigError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2) or 0 in arr.shape:
        raise ConfigError(f"{name} must have shape (T,) or (B, T) with B, T >= 1, got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ConfigError(f"{name} must lie in [0, {vocab_size}), got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64)


def forward(params: Params, inputs: Any, targets: Any, h0: Any = None) -> tuple[float, Cache]:
    r"""The forward pass, one step at a time; returns (L, cache).

    For t = 1..T (every line batched over B):

    .. math::
        h_t = \tanh(W_{ih} \mathbf{x}_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \quad
        p_t = \operatorname{softmax}(W_{ho} h_t + b_{ho}), \quad
        L = -\tfrac{1}{BT} \textstyle\sum_{b,t} \log p_t[c_t]

    ``inputs``, ``targets``: ids (T,) or (B, T) of the same shape; ``h0``: (H,) or
    (B, H), zeros if None.
    """
    hidden, vocab = params["weight_hh"].shape[0], params["weight_ih"].shape[1]
    ids = _ids("inputs", inputs, vocab)
    tgt = _ids("targets", targets, vocab)
    if ids.shape != tgt.shape:
        raise ConfigError(f"inputs and targets must have the same shape, got {ids.shape} and {tgt.shape}")
    single = ids.ndim == 1
    ids, tgt = np.atleast_2d(ids), np.atleast_2d(tgt)  # (B, T)
    b, t_len = ids.shape
    expected = (hidden,) if single else (b, hidden)
    h0 = np.zeros(expected) if h0 is None else np.array(h0, dtype=np.float64)
    if h0.shape != expected:
        raise ConfigError(f"h0 must have shape {expected}, got {h0.shape}")
    h0 = h0.reshape(b, hidden)  # (B, H)

    w_ih, w_hh, b_ih, b_hh = params["weight_ih"], params["weight_hh"], params["bias_ih"], params["bias_hh"]
    w_ho, b_ho = params["weight_ho"], params["bias_ho"]
    x = np.eye(vocab)[ids]  # (B, T, V) one-hot
    h = np.zeros((b, t_len + 1, hidden))  # (B, T+1, H)
    h[:, 0] = h0
    logp = np.zeros((b, t_len, vocab))  # (B, T, V)
    for t in range(t_len):  # h[:, t] is h_{t-1}, h[:, t + 1] is h_t
        a = x[:, t] @ w_ih.T + b_ih + h[:, t] @ w_hh.T + b_hh  # (B, H)
        h[:, t + 1] = np.tanh(a)
        y = h[:, t + 1] @ w_ho.T + b_ho  # (B, V) logits
        logp[:, t] = log_softmax(y)
    nll = -np.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]  # (B, T)
    cache = Cache(x=x, targets=tgt, h=h, p=np.exp(logp), params=params, single=single)
    return float(nll.mean()), cache


def backward(cache: Cache) -> Params:
    r"""Back-propagation through time: the gradient of L for every parameter, and of h_0.

    Going backwards, t = T..1, with :math:`\delta h_{T+1 \to T} = 0`:

    .. math::
        \frac{\partial L}{\partial y_t} &= \tfrac{1}{BT}\,(p_t - \operatorname{onehot}(c_t))
            && \text{softmax and cross entropy together} \\
        \frac{\partial L}{\partial W_{ho}} \mathrel{+}= \frac{\partial L}{\partial y_t} h_t^\top,
            \quad \frac{\partial L}{\partial b_{ho}} &\mathrel{+}= \frac{\partial L}{\partial y_t} \\
        \frac{\partial L}{\partial h_t} &= W_{ho}^\top \frac{\partial L}{\partial y_t} + \delta h
            && \text{from the output now, and from the future} \\
        \frac{\partial L}{\partial a_t} &= (1 - h_t^2) \odot \frac{\partial L}{\partial h_t}
            && \tanh'(a) = 1 - \tanh^2(a) \\
        \frac{\partial L}{\partial W_{ih}} \mathrel{+}= \frac{\partial L}{\partial a_t} \mathbf{x}_t^\top,
            \quad \frac{\partial L}{\partial W_{hh}} &\mathrel{+}= \frac{\partial L}{\partial a_t} h_{t-1}^\top,
            \quad \frac{\partial L}{\partial b_{ih}} = \frac{\partial L}{\partial b_{hh}} \mathrel{+}= \frac{\partial L}{\partial a_t} \\
        \delta h &\leftarrow W_{hh}^\top \frac{\partial L}{\partial a_t}
            && \text{what reaches } h_{t-1}

    (the sums also run over the batch). After t = 1, :math:`\delta h` is
    :math:`\partial L / \partial h_0`, returned under the key ``"h0"`` with the shape
    ``h0`` had. The repeated product :math:`\prod_t W_{hh}^\top \operatorname{diag}(1 - h_t^2)`
    in :math:`\delta h` is where gradients vanish or explode.
    """
    params, x, h, p = cache.params, cache.x, cache.h, cache.p
    w_hh, w_ho = params["weight_hh"], params["weight_ho"]
    b, t_len, _ = p.shape
    grads = {n: np.zeros_like(v) for n, v in params.items()}
    dy_all = p.copy()  # (B, T, V)
    np.put_along_axis(dy_all, cache.targets[..., None], np.take_along_axis(p, cache.targets[..., None], -1) - 1.0, -1)
    dy_all /= b * t_len  # the loss is a mean over B*T tokens
    dh_next = np.zeros((b, h.shape[-1]))  # (B, H): dL/dh_t arriving from step t+1
    for t in reversed(range(t_len)):
        h_t, h_prev = h[:, t + 1], h[:, t]  # (B, H) each
        dy = dy_all[:, t]  # (B, V)
        grads["weight_ho"] += dy.T @ h_t
        grads["bias_ho"] += dy.sum(0)
        dh = dy @ w_ho + dh_next  # (B, H)
        da = (1.0 - h_t**2) * dh  # (B, H) back through tanh
        grads["weight_ih"] += da.T @ x[:, t]
        grads["weight_hh"] += da.T @ h_prev
        grads["bias_ih"] += da.sum(0)
        grads["bias_hh"] += da.sum(0)
        dh_next = da @ w_hh  # (B, H) on to h_{t-1}
    grads["h0"] = dh_next[0] if cache.single else dh_next
    return grads


def global_norm(grads: Mapping[str, np.ndarray], names: tuple[str, ...] = PARAM_NAMES) -> float:
    """sqrt of the sum of squares of every parameter gradient (``h0`` is not a parameter)."""
    return math.sqrt(sum(float(np.sum(grads[n] ** 2)) for n in names))


def clip_gradients(grads: Params, max_norm: float = 0.0, max_value: float = 0.0) -> float:
    """Clip in place: every element to [-max_value, max_value], then the global norm to max_norm.

    0 turns either off (the order is that of ``rnnlab train``). Returns the global norm
    before any clipping, for logging.
    """
    if max_norm < 0 or max_value < 0:
        raise ConfigError(f"max_norm and max_value must be >= 0 (0 turns clipping off), got {max_norm} and {max_value}")
    before = global_norm(grads)
    if max_value > 0:
        for n in PARAM_NAMES:
            np.clip(grads[n], -max_value, max_value, out=grads[n])
    if max_norm > 0:
        norm = global_norm(grads)
        if norm > max_norm:
            for n in PARAM_NAMES:
                grads[n] *= max_norm / (norm + 1e-12)
    return before


def sgd_step(params: Params, grads: Mapping[str, np.ndarray], lr: float) -> None:
    r"""Plain gradient descent, in place: :math:`\theta \leftarrow \theta - \eta\, g`."""
    for n in PARAM_NAMES:
        params[n] -= lr * grads[n]


def adagrad_step(params: Params, grads: Mapping[str, np.ndarray], memory: Params, lr: float, eps: float = 1e-8) -> None:
    r"""Adagrad (Duchi et al. 2011) as in ``min-char-rnn``, in place.

    :math:`m \leftarrow m + g^2`, :math:`\theta \leftarrow \theta - \eta\, g / \sqrt{m + \epsilon}`;
    ``memory`` (the sums m) starts empty and is filled on the first call.
    """
    for n in PARAM_NAMES:
        m = memory.setdefault(n, np.zeros_like(params[n]))
        m += grads[n] ** 2
        params[n] -= lr * grads[n] / np.sqrt(m + eps)


def sample(params: Params, h: Any, seed_id: int, n: int, rng: np.random.Generator,
           temperature: float = 1.0) -> list[int]:
    """Generate ``n`` ids: feed ``seed_id`` to the model in state ``h`` (H,), draw the next id
    from the softmax (at ``temperature``), feed it back, and so on."""
    vocab = params["weight_ih"].shape[1]
    if not 0 <= seed_id < vocab:
        raise ConfigError(f"seed_id must lie in [0, {vocab}), got {seed_id}")
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    h = np.array(h, dtype=np.float64)  # (H,)
    if h.shape != (params["weight_hh"].shape[0],):
        raise ConfigError(f"h must have shape ({params['weight_hh'].shape[0]},), got {h.shape}")
    out, x = [], seed_id
    for _ in range(n):
        h = np.tanh(params["weight_ih"][:, x] + params["bias_ih"] + params["weight_hh"] @ h + params["bias_hh"])
        y = params["weight_ho"] @ h + params["bias_ho"]  # (V,)
        p = distribution(y, temperature)[0]
        x = int(rng.choice(vocab, p=p))
        out.append(x)
    return out


def to_torch_state_dict(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our parameters under the keys of ``RNNLanguageModel.state_dict()`` (NumPy arrays, copied).

    Load into a model of ``ModelConfig(cell="elman", num_layers=1, input="onehot",
    hidden_size=H, dropout=0)`` and vocabulary size V with
    ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``
    (cast the model to float64 first to keep every digit).
    """
    return {TORCH_KEYS[n]: np.array(params[n], dtype=np.float64) for n in PARAM_NAMES}


def from_torch_state_dict(state_dict: Mapping[str, Any]) -> Params:
    """Parameters from a ``RNNLanguageModel.state_dict()`` of a one-layer one-hot Elman model.

    The values may be NumPy arrays or anything ``np.asarray`` reads (CPU tensors:
    ``{k: v.numpy() for k, v in model.state_dict().items()}``). A state dict of another
    kind of model (an embedding, more layers, an LSTM) raises :class:`ConfigError`
    naming what differs.
    """
    want = set(TORCH_KEYS.values())
    extra = sorted(set(state_dict) - want)
    if extra:
        raise ConfigError(f"not a one-layer one-hot Elman language model: unexpected keys {extra}")
    missing = sorted(want - set(state_dict))
    if missing:
        raise ConfigError(f"not a one-layer one-hot Elman language model: missing keys {missing}")
    params = {n: np.array(state_dict[k], dtype=np.float64) for n, k in TORCH_KEYS.items()}
    hidden, vocab = params["weight_ih"].shape if params["weight_ih"].ndim == 2 else (0, 0)
    return _checked_params(params, param_shapes(vocab, hidden))


def train_scratch(text: str, hidden_size: int = 100, seq_len: int = 25, lr: float = 0.1, steps: int = 1000,
                  seed: int = 0, optimizer: str = "adagrad", clip_value: float = 5.0, clip_norm: float = 0.0,
                  log_interval: int = 100, sample_len: int = 0,
                  on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    r"""Train a :class:`ScratchRNN` on ``text`` (characters) with truncated BPTT; return its history.

    One step reads the next ``seq_len`` characters of one stream (B = 1), as
    ``min-char-rnn``: forward from the state carried over from the previous window,
    :func:`backward` (which stops at the window's start: truncated BPTT), clipping
    (``clip_value`` per element, then ``clip_norm`` globally; 0 turns either off), and
    an ``optimizer`` step (``"adagrad"`` or ``"sgd"``). At the end of the text the
    state is reset to zeros and reading starts again.

    Every ``log_interval`` steps (and at the last step) ``on_log`` gets a row
    ``{"step", "loss", "smooth_loss", "bpc", "grad_norm"}`` (nats per character; the
    smoothed loss is the running average :math:`0.99\,s + 0.01\,L`; ``grad_norm`` is
    the norm before clipping) plus ``"sample"`` (text) when ``sample_len > 0``.

    Returns a dict: ``"losses"`` (the loss of every step), ``"log"`` (the rows),
    ``"initial_loss"`` (:math:`\ln V`, knowing nothing), ``"final_smooth_loss"``,
    ``"symbols"`` (the vocabulary, id order), ``"config"`` (the arguments) -- all
    JSON-able -- and ``"model"``, the trained :class:`ScratchRNN`.
    """
    problems = []
    for name, v in (("hidden_size", hidden_size), ("seq_len", seq_len), ("steps", steps),
                    ("log_interval", log_interval)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            problems.append(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(sample_len, (int, np.integer)) or sample_len < 0:
        problems.append(f"sample_len must be an integer >= 0, got {sample_len!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        problems.append(f"lr must be a positive number, got {lr!r}")
    if optimizer not in ("adagrad", "sgd"):
        problems.append(f"optimizer must be adagrad or sgd, got {optimizer!r}")
    if not (clip_value >= 0 and clip_norm >= 0):  # NaN too: it would turn clipping off
        problems.append(f"clip_value and clip_norm must be >= 0 (0 turns clipping off), got {clip_value} and {clip_norm}")
    if problems:
        raise ConfigError(problems)
    if not isinstance(text, str) or len(text) < seq_len + 1:
        n = len(text) if isinstance(text, str) else type(text).__name__
        raise DataError(f"the text must hold at least seq_len + 1 = {seq_len + 1} characters, got {n}")

    vocab = Vocab.from_text(text)
    data = vocab.encode(text)  # (N,)
    rng = np.random.default_rng(seed)
    model = ScratchRNN(len(vocab), hidden_size, params=init_params(len(vocab), hidden_size, rng))
    memory: Params = {}
    h = model.initial_state()  # (H,)
    pos = 0
    initial = math.log(len(vocab))
    smooth = initial
    losses: list[float] = []
    log: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        if pos + seq_len + 1 > len(data):  # end of the text: start again from a fresh state
            pos, h = 0, model.initial_state()
        x, y = data[pos:pos + seq_len], data[pos + 1:pos + seq_len + 1]  # (T,) each
        loss, cache = model.forward(x, y, h)
        grads = backward(cache)
        h = cache.last_state  # carried, not differentiated through: truncated BPTT
        norm = clip_gradients(grads, max_norm=clip_norm, max_value=clip_value)
        if optimizer == "adagrad":
            adagrad_step(model.params, grads, memory, lr)
        else:
            sgd_step(model.params, grads, lr)
        pos += seq_len
        losses.append(loss)
        smooth = 0.99 * smooth + 0.01 * loss
        if step % log_interval == 0 or step == steps:
            row: dict[str, Any] = {"step": step, "loss": loss, "smooth_loss": smooth, "bpc": smooth / math.log(2),
                                   "grad_norm": norm}
            if sample_len:
                # the next window starts with y[-1]: feed it to the carried state, as the model would go on
                row["sample"] = vocab.decode(model.sample(h, int(y[-1]), sample_len, rng))
            log.append(row)
            if on_log is not None:
                on_log(row)
    config = {"hidden_size": hidden_size, "seq_len": seq_len, "lr": lr, "steps": steps, "seed": seed,
              "optimizer": optimizer, "clip_value": clip_value, "clip_norm": clip_norm}
    return {"losses": losses, "log": log, "initial_loss": initial, "final_smooth_loss": smooth,
            "symbols": vocab.symbols, "config": config, "model": model}
