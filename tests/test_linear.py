"""PackedLinear: oneDNN's packed product and the addmm fall-back both compute x W^T + b (+ add)."""

from __future__ import annotations

import pytest
import torch

from rnnlab.nn.linear import PackedLinear, onednn_usable

ONEDNN = onednn_usable(torch.zeros(1))


@pytest.mark.parametrize("rows", [1, 3, 16, 40])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("add", [True, False])
@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("n", [12, 13])  # odd N: the fall-back keeps one block
def test_packed_linear_equals_the_float64_product(rows, bias, add, onednn, n):
    torch.manual_seed(0)
    w, b = torch.randn(n, 9), torch.randn(n) if bias else None
    x, extra = torch.randn(rows, 9), torch.randn(rows, n) if add else None
    lin = PackedLinear(w, b, rows, onednn=onednn)
    assert lin.onednn == (onednn and ONEDNN)
    got = lin(x, add=extra)
    expect = x.double() @ w.double().t() + (b.double() if bias else 0) + (extra.double() if add else 0)
    assert got.dtype == torch.float32 and got.shape == (rows, n)
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("shape", [(8, 6), (8, 1), (1, 8), (40, 600)])
def test_packed_linear_copies_the_weights_and_serves_other_row_counts(onednn, shape):
    """Packed for 1 row, it still multiplies 5 (the count is only a hint); later changes to the weights
    and the bias do not reach it (the Stepper is rebuilt after training), whatever the shape (a (N, 1)
    weight's transpose is already contiguous); a bias that is a strided view is read as the values it shows."""
    torch.manual_seed(1)
    w, b = torch.randn(*shape), torch.randn(2 * shape[0])[::2]
    lin = PackedLinear(w, b, rows=1, onednn=onednn)
    x = torch.randn(5, shape[1])
    expect = x.double() @ w.double().t() + b.double()
    w.add_(1.0)
    b.add_(1.0)
    torch.testing.assert_close(lin(x).double(), expect, rtol=1e-4, atol=1e-4)  # float32 sums of 600 terms


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_the_default_takes_onednn_for_large_matrices_and_several_rows_only():
    big, small = torch.zeros(1024, 512), torch.zeros(512, 512)
    assert PackedLinear(big, None, 4).onednn == ONEDNN
    assert not PackedLinear(big, None, 1).onednn  # one row: the two-core halves are as fast
    assert not PackedLinear(small, None, 64).onednn  # oneDNN's fixed cost outweighs its gain


def test_float64_and_disabled_onednn_take_the_fall_back():
    w = torch.randn(4, 3)
    assert not PackedLinear(w.double(), None, 1, onednn=True).onednn
    with torch.backends.mkldnn.flags(enabled=False):
        assert not PackedLinear(w, None, 1, onednn=True).onednn


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_matrix_stays_whole():
    lin = PackedLinear(torch.randn(8, 6, device="cuda"), None, rows=1)
    assert not lin.onednn and lin.weight.dim() == 2
