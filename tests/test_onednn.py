"""rnnlab.nn.onednn: PyTorch's private oneDNN operators behind one guard, and the public product where it fails."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.nn import kernels, onednn
from rnnlab.nn.linear import PackedLinear, onednn_usable
from rnnlab.nn.models import Decider, RNNLanguageModel

REAL = onednn.why_not() is None
_real_schemas = onednn._schemas
needs_real = pytest.mark.skipif(not REAL, reason=f"oneDNN's packed product is unusable here: {onednn.why_not()}")


@pytest.fixture
def patch():
    """A monkeypatch whose changes to the operators are judged afresh, and forgotten with them."""
    with pytest.MonkeyPatch.context() as mp:
        onednn.recheck()
        yield mp
    onednn.recheck()


class _Schema:
    def __init__(self, overload: str, args: tuple[str, ...]):
        self.overload_name = overload
        self.arguments = [SimpleNamespace(type=a) for a in args]
        self.returns = [SimpleNamespace(type="Tensor")]


def _moved_schemas(name: str) -> list[_Schema]:
    """The operators as a later PyTorch might declare them: ``_linear_pointwise`` with a new argument in front."""
    real = {(s.overload_name): onednn._signature(s)[0] for s in _real_schemas(name)} if REAL else {}
    if name == "mkldnn::_linear_pointwise":
        return [_Schema("", ("Tensor", "Tensor", "Tensor", "Optional[Tensor]", "str", "List[Optional[number]]",
                             "Optional[str]")), _Schema("binary", real.get("binary", ()))]
    return [_Schema(o, a) for o, a in real.items()]


def _missing() -> SimpleNamespace:
    return SimpleNamespace()  # a torch.ops.mkldnn without the private operators


def _wrong_numbers() -> SimpleNamespace:
    ns = torch.ops.mkldnn
    return SimpleNamespace(_reorder_linear_weight=ns._reorder_linear_weight,
                           _linear_pointwise=lambda *a: torch.zeros(a[0].shape[0], 8))


@needs_real
def test_the_real_operators_pass_the_guard():
    assert onednn.usable() and onednn_usable(torch.zeros(1))
    w, b, x = torch.randn(1024, 512), torch.randn(1024), torch.randn(64, 512)
    torch.testing.assert_close(onednn.linear(x, onednn.pack(w, 64), b), torch.addmm(b, x, w.t()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("broken, why", [
    ("missing", "torch.ops has no mkldnn::_reorder_linear_weight"),
    ("moved", "mkldnn::_linear_pointwise takes (Tensor, Tensor, Tensor, Optional[Tensor], str"),
    ("wrong numbers", "a test call gave numbers other than x W^T + b"),
])
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_unusable_operators_leave_the_public_product_with_the_same_numbers(broken, why, patch):
    w, b = torch.randn(1024, 512), torch.randn(1024)
    x, add = torch.randn(64, 512), torch.randn(64, 1024)
    with torch.backends.mkldnn.flags(enabled=False):  # the public product, as every build without oneDNN has it
        want = PackedLinear(w, b, 64)(x, add=add)
    if broken == "missing":
        patch.setattr(onednn, "_namespace", _missing)
    elif broken == "moved":
        if not REAL:
            pytest.skip("no real schemas to move")
        patch.setattr(onednn, "_schemas", _moved_schemas)
    else:
        if not REAL:
            pytest.skip("no real operators to wrap")
        patch.setattr(onednn, "_namespace", _wrong_numbers)
    onednn.recheck()  # the verdict was reached above, with the real operators
    assert not onednn.usable() and why in onednn.why_not()
    assert not onednn_usable(w)
    lin = PackedLinear(w, b, 64)  # large and many rows: oneDNN's, were it usable
    assert not lin.onednn and not PackedLinear(w, b, 64, onednn=True).onednn
    assert torch.equal(lin(x, add=add), want)  # addmm, bit for bit
    torch.testing.assert_close(lin(x, add=add), x @ w.t() + b + add, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not kernels.available() or not REAL, reason="needs the C++ kernels and oneDNN")
def test_the_decision_loop_gets_packed_matrices_only_where_the_guard_passed(patch):
    lm = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=512, num_layers=2, embedding_size=8), 11).eval()
    x = torch.randint(0, 11, (64, 5))
    state = lm.initial_state(64)
    u = torch.rand(4, 64, dtype=torch.float64)
    assert Decider(lm, 64).onednn
    packed, _ = Decider(lm, 64)(x, state, "sample", u)
    patch.setattr(onednn, "_namespace", _missing)
    onednn.recheck()
    blas = Decider(lm, 64)
    assert not blas.onednn and blas.dnn_hh == [] and blas.dnn_ih == []
    fed, _ = blas(x, state, "sample", u)
    assert (fed == packed).float().mean() > 0.95  # the same draws but within rounding of a boundary
