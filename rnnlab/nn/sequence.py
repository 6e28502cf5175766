r"""Whole-sequence recurrences with a hand-written backward, for the CPU fast path.

PyTorch's ``nn.LSTM`` runs on oneDNN's fused RNN primitive on the CPU, but ``nn.RNN``
and ``nn.GRU`` run a native loop whose backward goes through autograd step by step:
every time step pays for the weight gradient as its own small matrix product and for a
dozen autograd nodes. Here the recurrence over one layer is one ``autograd.Function``:

* forward: the input projections :math:`x^p_t` of all T steps are given (one large
  product, done by the caller); the loop makes one matrix product and a few in-place
  element-wise operations per step into preallocated (T, B, .) buffers;
* backward: one loop of the same size carries :math:`\partial L / \partial h_t` back
  through time with one ``addmm`` per step, writing the gradient of every pre-activation
  into a (T, B, G*H) buffer; the weight gradient is then **one** large product
  :math:`\sum_t \delta_t^\top h_{t-1}` over all T steps, and the gradient of the
  projections goes back to the caller's input product (one more large product).

Element-wise factors that depend only on forward values (gate derivatives) are computed
a chunk of steps at a time (:data:`CHUNK_FLOATS`), in bulk but in scratch that stays in
cache. Products write in place (``addmm_``) where ``addmm(out=)`` would first copy its
input, once per step. The functions compute exactly what the cells' ``step_projected``
compute (the tests compare them with the unroller and with torch's modules in float64,
values and gradients, and with finite differences).

Both loops run in C++ where :mod:`rnnlab.nn.kernels` could be built (the default on an
x86-64 CPU with AVX2 and a C++ compiler): the same arithmetic, one matrix product and one
vectorized, multi-threaded element-wise pass per step. The Python loops here stay as the
fallback and as the reference the kernels are tested against (float64, values and every
gradient).

Measured on 2 cores (``benchmarks/bench_speed.py``): with the Python loops, a
whole training step 1.1-1.46x the plain ``nn.RNN``/``nn.GRU`` loop; the kernels make the
GRU at 2x128 about 1.5x faster again, the Elman RNN about 1.1x (both 1.05-1.14x at 2x512).
An LSTM of the same design in Python lost to oneDNN's fused LSTM at every size tried; in
C++ (:class:`LSTMSequence`, no Python loop) it is faster up to 128 units on one thread or where
oneDNN's workspaces pay fresh page faults (no :mod:`rnnlab.allocator` setting), and trains those
LSTMs there (:mod:`rnnlab.nn.paths` chooses, and gives the measurements). A gate-major
GRU layout (contiguous gate blocks for the element-wise calls) was no faster overall and is not kept.

Layout is time-major: xp (T, B, G*H) -> out (T, B, H); the final state is ``out[-1]``, so
its gradient reaches the loop through ``out``'s. Not twice differentiable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn import paths


class ElmanSequence(torch.autograd.Function):
    r"""h_t = tanh(x^p_t + W_hh h_{t-1}) for t = 1..T, with x^p_t holding both biases.

    Backward, with :math:`g_t = \partial L/\partial h_t` from above and
    :math:`\delta_t = \partial L/\partial z_t`:

    .. math::
        \delta_t = (g_t + \delta_{t+1} W_{hh}) \odot (1 - h_t^2), \qquad
        \partial L/\partial W_{hh} = \textstyle\sum_t \delta_t^\top h_{t-1}, \qquad
        \partial L/\partial h_0 = \delta_1 W_{hh}
    """

    @staticmethod
    def forward(ctx: Any, xp: Tensor, h0: Tensor, w_hh: Tensor) -> Tensor:
        ctx.kernel = _kernel_for(xp)
        if ctx.kernel:
            out = torch.ops.rnnlab.elman_forward(xp, h0, w_hh)
            ctx.save_for_backward(out, h0, w_hh)
            return out
        out = xp.clone(memory_format=torch.contiguous_format)  # (T, B, H): x^p_t, then h_t in place
        wt = w_hh.t()  # (H, H)
        h = h0  # (B, H)
        for h_t in out.unbind(0):  # addmm_ in place: addmm(out=) would first copy x^p_t, step by step
            h_t.addmm_(h, wt).tanh_()
            h = h_t
        ctx.save_for_backward(out, h0, w_hh)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        out, h0, w_hh = ctx.saved_tensors
        t_len, b, h = out.shape
        _, need_h0, need_w = ctx.needs_input_grad
        if ctx.kernel:
            delta, dh0, dw = torch.ops.rnnlab.elman_backward(dout, out, h0, w_hh)
            return delta, dh0 if need_h0 else None, dw if need_w else None
        delta = dout.clone(memory_format=torch.contiguous_format)  # (T, B, H): g_t, then dL/dz_t in place
        dw = torch.zeros_like(w_hh) if need_w else None  # (H, H)
        chunk = _chunk(t_len, b * h)
        deriv = out.new_empty(chunk, b, h)  # (C, B, H): tanh' = 1 - h^2 for a chunk of steps
        for t0, t1 in _chunks(t_len, chunk):
            c = t1 - t0
            dz = torch.mul(out[t0:t1], out[t0:t1], out=deriv[:c]).neg_().add_(1)
            for i in range(c - 1, -1, -1):
                t = t0 + i
                if t < t_len - 1:
                    delta[t].addmm_(delta[t + 1], w_hh)
                delta[t].mul_(dz[i])
            if dw is not None:  # dW += sum_t delta_t^T h_{t-1}
                dw.addmm_(delta[t0:t1].reshape(c * b, h).t(), _previous(out, h0, t0, t1).reshape(c * b, h))
        dh0 = delta[0] @ w_hh if need_h0 else None  # (B, H)
        return delta, dh0, dw


class GRUSequence(torch.autograd.Function):
    r"""PyTorch's GRU over T steps (see :class:`~rnnlab.nn.cells.GRUCell`), x^p_t = W_ih x_t + b_ih.

    With :math:`a = W_{hh} h_{t-1} + b_{hh} = [a_r, a_z, a_n]` and the gates r, z, n:

    .. math::
        h_t = n_t + z_t \odot (h_{t-1} - n_t)

    Backward, with :math:`g_t` the total gradient reaching :math:`h_t`:

    .. math::
        \delta^n_t &= g_t \odot (1 - z_t) \odot (1 - n_t^2), \\
        \delta^z_t &= g_t \odot (h_{t-1} - n_t) \odot z_t (1 - z_t), \\
        \delta^r_t &= \delta^n_t \odot a_{n,t} \odot r_t (1 - r_t), \\
        \partial L/\partial x^p_t &= [\delta^r_t, \delta^z_t, \delta^n_t], \qquad
        \partial L/\partial a_t = [\delta^r_t, \delta^z_t, \delta^n_t \odot r_t], \\
        g_{t-1} &= \partial L/\partial h_{t-1} \text{ from above}
                 + g_t \odot z_t + (\partial L/\partial a_t) W_{hh}
    """

    @staticmethod
    def forward(ctx: Any, xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        ctx.kernel = _kernel_for(xp)
        if ctx.kernel:
            out, a_n, rz, n = torch.ops.rnnlab.gru_forward(xp, h0, w_hh, b_hh)
            ctx.save_for_backward(out, h0, w_hh, a_n, rz, n)
            return out
        t_len, b, g = xp.shape
        h = g // 3
        out = xp.new_empty(t_len, b, h)  # (T, B, H)
        a_n = xp.new_empty(t_len, b, h)  # (T, B, H): W_hn h_{t-1} + b_hn, kept for the backward
        rz = xp.new_empty(t_len, b, 2 * h)  # (T, B, 2H): [r_t, z_t]
        n = xp.new_empty(t_len, b, h)  # (T, B, H)
        a = xp.new_empty(b, g)  # (B, 3H): this step's W_hh h_{t-1}
        x_rz = xp[..., :2 * h] + b_hh[:2 * h]  # (T, B, 2H): the r, z biases added once, not at every step
        b_n = b_hh[2 * h:]
        wt = w_hh.t()  # (H, 3H)
        h_prev = h0
        for x_t, xrz_t, an_t, rz_t, n_t, h_t in zip(xp.unbind(0), x_rz.unbind(0), a_n.unbind(0), rz.unbind(0),
                                                     n.unbind(0), out.unbind(0), strict=True):
            torch.mm(h_prev, wt, out=a)
            torch.add(xrz_t, a[:, :2 * h], out=rz_t).sigmoid_()
            torch.add(a[:, 2 * h:], b_n, out=an_t)
            torch.addcmul(x_t[:, 2 * h:], rz_t[:, :h], an_t, out=n_t).tanh_()
            torch.lerp(n_t, h_prev, rz_t[:, h:], out=h_t)  # n + z (h_prev - n)
            h_prev = h_t
        ctx.save_for_backward(out, h0, w_hh, a_n, rz, n)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        out, h0, w_hh, a_n, rz, n = ctx.saved_tensors
        t_len, b, h = out.shape
        _, need_h0, need_w, need_b = ctx.needs_input_grad
        if ctx.kernel:
            dxp, dh0, dw, db = torch.ops.rnnlab.gru_backward(dout, out, h0, w_hh, a_n, rz, n)
            return dxp, dh0 if need_h0 else None, dw if need_w else None, db if need_b else None
        dout = dout.contiguous()
        dxp = out.new_empty(t_len, b, 3, h)  # (T, B, 3, H)
        dw = torch.zeros_like(w_hh) if need_w else None  # (3H, H)
        db = torch.zeros_like(w_hh[:, 0]) if need_b else None  # (3H,)
        # The factors of g_t (dxp_t = g_t * m1_t, da_t = g_t * m2_t, per gate block) are computed a chunk of
        # steps at a time into scratch that stays in cache: whole-sequence temporaries of tens of MB cost more
        # in page faults and memory traffic than the loop itself.
        chunk = _chunk(t_len, b * 3 * h)
        m1 = out.new_empty(chunk, b, 3, h)  # (C, B, 3, H)
        m2 = out.new_empty(chunk, b, 3, h)
        da = out.new_empty(chunk, b, 3, h)  # (C, B, 3, H): dL/da_t
        tmp = out.new_empty(chunk, b, h)  # (C, B, H)
        g, g_next = dout[-1].clone(), torch.empty_like(dout[-1])  # (B, H): the total gradient reaching h_t
        for t0, t1 in _chunks(t_len, chunk):
            c = t1 - t0
            r, z, an_c, n_c = rz[t0:t1, :, :h], rz[t0:t1, :, h:], a_n[t0:t1], n[t0:t1]
            prev = _previous(out, h0, t0, t1)  # (c, B, H): h_{t-1}
            m1c, m2c, dac, tc = m1[:c], m2[:c], da[:c], tmp[:c]
            dn = m1c[:, :, 2]  # (c, B, H): (1 - n^2)(1 - z), the n block of m1
            torch.mul(z, -1, out=tc).add_(1)  # 1 - z
            torch.addcmul(tc, tc, n_c * n_c, value=-1, out=dn)  # (1 - z) - (1 - z) n^2
            torch.addcmul(r, r, r, value=-1, out=m1c[:, :, 0]).mul_(an_c).mul_(dn)  # r (1 - r) a_n (1-n^2)(1-z)
            torch.sub(prev, n_c, out=m1c[:, :, 1]).mul_(z).mul_(tc)  # (h_{t-1} - n) z (1 - z)
            m2c[:, :, :2] = m1c[:, :, :2]
            torch.mul(dn, r, out=m2c[:, :, 2])
            for i in range(c - 1, -1, -1):
                t = t0 + i
                gu = g.unsqueeze(1)  # (B, 1, H)
                torch.mul(gu, m1c[i], out=dxp[t])
                torch.mul(gu, m2c[i], out=dac[i])
                if t > 0:
                    torch.addcmul(dout[t - 1], g, z[i], out=g_next)
                else:
                    torch.mul(g, z[i], out=g_next)
                g_next.addmm_(dac[i].view(b, 3 * h), w_hh)  # in place: addmm(out=) would copy first
                g, g_next = g_next, g
            if dw is not None:  # dW += sum_t (dL/da_t)^T h_{t-1}
                dw.addmm_(dac.view(c * b, 3 * h).t(), prev.reshape(c * b, h))
            if db is not None:
                db.add_(dac.view(c * b, 3 * h).sum(0))
        return dxp.view(t_len, b, 3 * h), g if need_h0 else None, dw, db


def _kernel_for(xp: Tensor) -> bool:
    """Whether this call runs in :mod:`rnnlab.nn.kernels`' C++ loop (else in the Python loop below it)."""
    return paths.recurrence_loop(paths.Machine.of_tensor(xp)).path == "kernel"


class LSTMSequence(torch.autograd.Function):
    r"""PyTorch's LSTM over T steps (see :class:`~rnnlab.nn.cells.LSTMCell`), x^p_t = W_ih x_t + b_ih + b_hh; C++ only
    (:mod:`rnnlab.nn.kernels`: without them the LSTM trains on ``torch.nn.LSTM``, and the tests hold this one to
    that and to the unroller).

    With :math:`z_t = x^p_t + W_{hh} h_{t-1} = [z_i, z_f, z_g, z_o]`, :math:`c_t = f c_{t-1} + i g`,
    :math:`h_t = o \tanh c_t`; backward, with :math:`\bar h_t` and :math:`\bar c_t` the total gradients reaching
    :math:`h_t` and (through step t + 1 or from outside) :math:`c_t`:

    .. math::
        \bar c'_t &= \bar c_t + \bar h_t\, o (1 - \tanh^2 c_t), \qquad
        \partial L/\partial z_o = \bar h_t \tanh c_t\, o(1 - o), \\
        \partial L/\partial z_i &= \bar c'_t\, g\, i(1 - i), \quad
        \partial L/\partial z_f = \bar c'_t\, c_{t-1} f(1 - f), \quad
        \partial L/\partial z_g = \bar c'_t\, i (1 - g^2), \\
        \bar c_{t-1} &\mathrel{+}= \bar c'_t f, \qquad
        \bar h_{t-1} \mathrel{+}= (\partial L/\partial z_t) W_{hh}, \qquad
        \partial L/\partial W_{hh} = \textstyle\sum_t (\partial L/\partial z_t)^\top h_{t-1}
    """

    @staticmethod
    def forward(ctx: Any, xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        out, cs, gates, tcs = torch.ops.rnnlab.lstm_forward(xp, h0, c0, w_hh)
        ctx.save_for_backward(out, cs, gates, tcs, h0, c0, w_hh)
        return out, cs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor | None, dcs: Tensor | None) -> tuple[Tensor | None, ...]:
        out, cs, gates, tcs, h0, c0, w_hh = ctx.saved_tensors
        _, need_h0, need_c0, need_w = ctx.needs_input_grad
        dout = torch.zeros_like(out) if dout is None else dout
        dcs = torch.zeros_like(out) if dcs is None else dcs
        dz, dh0, dc0, dw = torch.ops.rnnlab.lstm_backward(dout, dcs, out, cs, gates, tcs, h0, c0, w_hh)
        return dz, dh0 if need_h0 else None, dc0 if need_c0 else None, dw if need_w else None


# Backward scratch is sized to about this many floats (4 MB in float32), a chunk of steps at a time.
CHUNK_FLOATS = 1 << 20


def _chunk(t_len: int, floats_per_step: int) -> int:
    return max(1, min(t_len, CHUNK_FLOATS // floats_per_step))


def _chunks(t_len: int, chunk: int) -> list[tuple[int, int]]:
    """[t0, t1) blocks of at most ``chunk`` steps, last block first (the order backward visits them)."""
    return [(max(0, t1 - chunk), t1) for t1 in range(t_len, 0, -chunk)]


def _previous(out: Tensor, h0: Tensor, t0: int, t1: int) -> Tensor:
    """h_{t-1} for t0 <= t < t1 (c, B, H), from out = h_1..h_T (T, B, H): a view, but for the chunk that
    starts at t = 0, whose first h_{t-1} is h_0 (a chunk-sized copy)."""
    if t0 > 0:
        return out[t0 - 1:t1 - 1]
    return torch.cat([h0.unsqueeze(0), out[:t1 - 1]], 0)


def elman_sequence(xp: Tensor, h0: Tensor, w_hh: Tensor) -> Tensor:
    """xp (T, B, H) with both biases, h0 (B, H), w_hh (H, H) -> h_1..h_T (T, B, H)."""
    return ElmanSequence.apply(xp, h0, w_hh)


def lstm_sequence(xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
    """xp (T, B, 4H) with both biases, h0, c0 (B, H), w_hh (4H, H) -> h_1..h_T, c_1..c_T (T, B, H); needs the
    kernels (:func:`rnnlab.nn.paths.training` chooses it only where they are built)."""
    return LSTMSequence.apply(xp, h0, c0, w_hh)


def gru_sequence(xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """xp (T, B, 3H) = W_ih x + b_ih, h0 (B, H), w_hh (3H, H), b_hh (3H,) -> h_1..h_T (T, B, H)."""
    return GRUSequence.apply(xp, h0, w_hh, b_hh)
