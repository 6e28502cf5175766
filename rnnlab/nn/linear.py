r"""A linear map applied many times with the same weights, for inference: oneDNN's packed product.

:class:`PackedLinear` computes :math:`y = x W^\top + b` for x (B, K), W (N, K), b (N,).
On a CPU build of PyTorch with oneDNN (the x86 and Arm wheels), float32, it reorders W
once into oneDNN's blocked layout for about B rows and multiplies with oneDNN's matmul: the pair
of private operators PyTorch's own compiler (inductor, with weight prepacking) emits for a frozen
``nn.Linear`` on the CPU, used only through their guard (:mod:`rnnlab.nn.onednn`). Measured here (2 Zen 3 cores, interleaved, median of 7; ``addmm`` time /
oneDNN time, so above 1 oneDNN is faster):

===============  =====  =====  =====  =====
K -> N           1 row  4      16     64
===============  =====  =====  =====  =====
128 -> 512       0.48   0.74   0.76   0.89
256 -> 1024      0.77   1.00   1.10   1.34
512 -> 1024      0.96   1.17   1.31   1.26
512 -> 2048      0.96   1.44   1.38   1.65
1024 -> 2048     1.09   1.55   1.47   1.09
1024 -> 4096     1.07   2.00   2.39   1.47
===============  =====  =====  =====  =====

oneDNN's call costs some 30 us more, so by default (``onednn=None``) it takes a matrix of
at least :data:`~rnnlab.nn.paths.ONEDNN_MIN_SIZE` entries for at least
:data:`~rnnlab.nn.paths.ONEDNN_MIN_ROWS` rows (:func:`rnnlab.nn.paths.linear` chooses).
Otherwise (and for float64, a GPU, a build without oneDNN or whose private operators fail their
guard, or oneDNN switched off with ``torch.backends.mkldnn.flags(enabled=False)`` when it is packed)
it computes the same with ``addmm``: on the CPU, for fewer than :data:`~rnnlab.nn.paths.WHOLE_FROM` rows
the matrix is kept as two blocks of
its columns and multiplied by one batched product (``baddbmm``), since a single product
with few rows runs as a matrix-vector product on one core, while the two halves of a
batched one run on two (measured here: 1.6x faster for one row, 2x for four); for more
rows the matrix stays whole and one ``addmm`` multiplies it, which the BLAS already
spreads over the cores.

The weights are copied when the object is built: build a new one after they change.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn import onednn as dnn
from rnnlab.nn import paths


def onednn_usable(weight: Tensor) -> bool:
    """Whether oneDNN's packed product can take ``weight``: float32 on the CPU, oneDNN built in, on, and its
    private operators as expected (:mod:`rnnlab.nn.onednn`)."""
    return paths.linear(paths.Machine.of_tensor(weight), 1, weight.numel(), onednn=True).path == "onednn"


class PackedLinear:
    """``y = x W^T + b (+ add)``: W (N, K) packed once; x (B, K) -> (B, N). See the module's docstring."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int, onednn: bool | None = None):
        """``rows``: about how many rows x will have. ``onednn``: True takes oneDNN wherever it is usable,
        False never, None (the default) where it was measured faster (see the module's docstring)."""
        weight = weight.detach()
        self.out_features = weight.shape[0]
        self.bias = bias.detach().clone(memory_format=torch.contiguous_format) if bias is not None else None
        self.packed: Tensor | None = None
        path = paths.linear(paths.Machine.of_tensor(weight), rows, weight.numel(), onednn).path
        if path == "onednn":
            try:
                self.packed = dnn.pack(weight, rows)
            except RuntimeError:  # a oneDNN that refuses this shape or machine: the BLAS does it
                self.packed = None
                path = "addmm-halves" if rows < paths.WHOLE_FROM and weight.device.type == "cpu" else "addmm"
        if self.packed is None:
            halves = path == "addmm-halves"  # two cores for a few rows; a GPU runs one product on all its cores
            # (S, K, N/S) or (K, N), a copy even where the transpose is already contiguous (N or K of 1)
            self.weight = _halves(weight.t()) if halves else weight.t().clone(memory_format=torch.contiguous_format)

    @staticmethod
    def would_pack(weight: Tensor, rows: int, numel: int | None = None) -> bool:
        """Whether the default (``onednn=None``) takes oneDNN for a matrix like ``weight`` -- of ``numel`` entries
        where given (a joined matrix) -- and about ``rows`` rows."""
        size = weight.numel() if numel is None else numel
        return paths.linear(paths.Machine.of_tensor(weight), rows, size).path == "onednn"

    @property
    def onednn(self) -> bool:
        return self.packed is not None

    def tensors(self) -> list[Tensor]:
        """The tensors a product reads besides x, for copying new weights into them in place (not for
        oneDNN's packed layout, which is rebuilt instead)."""
        if self.packed is not None:
            raise ValueError("oneDNN-packed weights are rebuilt, not copied into")
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def __call__(self, x: Tensor, add: Tensor | None = None) -> Tensor:
        """x (B, K) -> x W^T + b (B, N), plus ``add`` (B, N) when given."""
        if self.packed is not None:
            y = dnn.linear(x, self.packed, self.bias)
            return y if add is None else y.add_(add)
        if self.bias is None:
            bias = add if add is not None else x.new_zeros(self.out_features)
        else:
            bias = self.bias if add is None else add + self.bias
        return _split_mm(bias, x, self.weight)


def _halves(w: Tensor) -> Tensor:
    """(K, N) -> (S, K, N/S), contiguous: its columns in S = 2 blocks (S = 1 for odd N)."""
    k, n = w.shape
    s = 2 if n % 2 == 0 else 1
    return w.reshape(k, s, n // s).transpose(0, 1).clone(memory_format=torch.contiguous_format)


def _split_mm(bias: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """``bias + x @ W`` with W given whole (K, N) or as its column blocks w (S, K, N/S): x (B, K),
    bias (N,) or (B, N) -> (B, N)."""
    if w.dim() == 2:
        return torch.addmm(bias, x, w)
    s, k, n = w.shape
    b = x.shape[0]
    bias = bias.view(s, 1, n) if bias.dim() == 1 else bias.reshape(b, s, n).transpose(0, 1)  # (S, 1 or B, N/S)
    return torch.baddbmm(bias, x.expand(s, b, k), w).transpose(0, 1).reshape(b, s * n)
