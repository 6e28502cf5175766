r"""A linear map applied many times with the same weights, for inference: oneDNN's packed product.

:class:`PackedLinear` computes :math:`y = x W^\top + b` for x (B, K), W (N, K), b (N,).
On a CPU build of PyTorch with oneDNN (the x86 and Arm wheels), float32, it reorders W
once into oneDNN's blocked layout for about B rows (``torch.ops.mkldnn._reorder_linear_weight``)
and multiplies with oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``): the pair
PyTorch's own compiler (inductor, with weight prepacking) emits for a frozen ``nn.Linear``
on the CPU. Measured here (2 Zen 3 cores, interleaved, median of 7; ``addmm`` time /
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
at least :data:`ONEDNN_MIN_SIZE` entries for at least :data:`ONEDNN_MIN_ROWS` rows.
Otherwise (and for float64, a GPU, a build without oneDNN, or oneDNN switched off with
``torch.backends.mkldnn.flags(enabled=False)`` when it is packed) it computes the same
with ``addmm``: on the CPU, for fewer than :data:`WHOLE_FROM` rows the matrix is kept as two blocks of
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

WHOLE_FROM = 16  # rows from which the addmm fall-back keeps its matrix whole
ONEDNN_MIN_ROWS = 4  # the default takes oneDNN from this many rows...
ONEDNN_MIN_SIZE = 1 << 19  # ...and this many entries of W (512 x 1024)


def onednn_usable(weight: Tensor) -> bool:
    """Whether oneDNN's packed product can take ``weight``: float32 on the CPU, oneDNN built in and on."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear:
    """``y = x W^T + b (+ add)``: W (N, K) packed once; x (B, K) -> (B, N). See the module's docstring."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int, onednn: bool | None = None):
        """``rows``: about how many rows x will have. ``onednn``: True takes oneDNN wherever it is usable,
        False never, None (the default) where it was measured faster (see the module's docstring)."""
        weight = weight.detach()
        self.out_features = weight.shape[0]
        self.bias = bias.detach().clone(memory_format=torch.contiguous_format) if bias is not None else None
        self.packed: Tensor | None = None
        if onednn is None:
            onednn = rows >= ONEDNN_MIN_ROWS and weight.numel() >= ONEDNN_MIN_SIZE
        if onednn and onednn_usable(weight):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), max(rows, 1))
            except RuntimeError:  # a oneDNN that refuses this shape or machine: the BLAS does it
                self.packed = None
        if self.packed is None:
            halves = rows < WHOLE_FROM and weight.device.type == "cpu"  # a GPU runs one product on all its cores
            # (S, K, N/S) or (K, N), a copy even where the transpose is already contiguous (N or K of 1)
            self.weight = _halves(weight.t()) if halves else weight.t().clone(memory_format=torch.contiguous_format)

    @staticmethod
    def would_pack(weight: Tensor, rows: int, numel: int | None = None) -> bool:
        """Whether the default (``onednn=None``) takes oneDNN for a matrix like ``weight`` -- of ``numel`` entries
        where given (a joined matrix) -- and about ``rows`` rows."""
        size = weight.numel() if numel is None else numel
        return rows >= ONEDNN_MIN_ROWS and size >= ONEDNN_MIN_SIZE and onednn_usable(weight)

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
            y = torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")
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
