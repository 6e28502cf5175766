r"""oneDNN's packed matrix product: PyTorch's private operators behind one guard.

PyTorch's compiler (inductor, with weight prepacking) multiplies a frozen ``nn.Linear`` on the
CPU by two operators of its ``mkldnn`` library that are not public API:

* ``mkldnn::_reorder_linear_weight(Tensor self, int? batch_size)``: W (N, K) reordered once into
  oneDNN's blocked layout for about ``batch_size`` rows;
* ``mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr, Scalar?[] scalars, str? algorithm)``
  and its ``binary`` overload ``(Tensor X, Tensor other, Tensor W, Tensor? B, str attr)``: x W^T + b, or
  x W^T + other (``attr="add"``), with W so packed.

rnnlab uses them for inference (:class:`~rnnlab.nn.linear.PackedLinear` here, in Python, and the C++
decision loop of :mod:`rnnlab.nn.kernels`, which calls both overloads of ``_linear_pointwise``
positionally through the dispatcher). Being private, they may be missing from a build or change
signature in any release. :func:`usable` checks once per process that oneDNN is built in, that the three
operators exist with the argument and return types above (``torch._C._jit_get_schemas_for_operator``),
and that a tiny call of each gives x W^T + b; where anything fails they are unusable (:func:`why_not`
says why), and every caller takes the public ``addmm`` instead. The C++ loop is given packed matrices
only where :func:`usable` passed.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor

# (operator, overload) -> the types of its arguments and returns (as the schema's types print them), in the
# order the callers pass them positionally
EXPECTED: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("mkldnn::_reorder_linear_weight", ""): (("Tensor", "Optional[int]"), ("Tensor",)),
    ("mkldnn::_linear_pointwise", ""): (
        ("Tensor", "Tensor", "Optional[Tensor]", "str", "List[Optional[number]]", "Optional[str]"), ("Tensor",)),
    ("mkldnn::_linear_pointwise", "binary"): (("Tensor", "Tensor", "Tensor", "Optional[Tensor]", "str"), ("Tensor",)),
}

_lock = threading.Lock()
_verdict: str | None | bool = False  # False: not checked yet; None: usable; a string: why not


def _namespace() -> Any:
    """The operators' namespace (``torch.ops.mkldnn``); a test replaces it with a fake."""
    return torch.ops.mkldnn


def _schemas(name: str) -> list[Any]:
    """The registered schemas of one operator (every overload)."""
    return list(torch._C._jit_get_schemas_for_operator(name))


def _signature(schema: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(a.type) for a in schema.arguments), tuple(str(r.type) for r in schema.returns)


def _check() -> str | None:
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch is built without oneDNN"
    ns = _namespace()
    for (name, overload), expected in EXPECTED.items():
        if not hasattr(ns, name.split("::")[1]):
            return f"torch.ops has no {name}"
        found = {s.overload_name: _signature(s) for s in _schemas(name)}
        if overload not in found:
            return f"torch.ops has no {name}{'.' + overload if overload else ''}"
        if found[overload] != expected:
            args, rets = found[overload]
            return f"{name}{'.' + overload if overload else ''} takes ({', '.join(args)}) -> ({', '.join(rets)}), " \
                   f"expected ({', '.join(expected[0])}) -> ({', '.join(expected[1])})"
    try:  # one tiny call of each: the right numbers, not only the right types
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            w, b = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
            x, other = torch.randn(2, 4, generator=g), torch.randn(2, 8, generator=g)
            packed = ns._reorder_linear_weight(w, 2)
            y = ns._linear_pointwise(x, packed, b, "none", [], "")
            z = ns._linear_pointwise(x, other, packed, None, "add")
            ok = torch.allclose(y, torch.addmm(b, x, w.t()), atol=1e-5) and \
                torch.allclose(z, torch.addmm(other, x, w.t()), atol=1e-5)
    except Exception as e:  # noqa: BLE001 -- any failure of a private operator means: the public product
        return f"a test call failed ({(str(e).strip().splitlines() or [type(e).__name__])[0]})"
    return None if ok else "a test call gave numbers other than x W^T + b"


def why_not() -> str | None:
    """Why oneDNN's packed product cannot be used in this process (None: it can). Checked once."""
    global _verdict
    if _verdict is False:
        with _lock:
            if _verdict is False:
                _verdict = _check()
    return _verdict  # type: ignore[return-value]


def usable() -> bool:
    """Whether the private operators passed the guard (see the module's docstring); the caller still asks for a
    float32 CPU tensor and ``torch.backends.mkldnn.enabled`` (:class:`rnnlab.nn.paths.Machine` does)."""
    return why_not() is None


def recheck() -> None:
    """Forget the verdict, so that the next :func:`usable` checks again (tests that replace the operators)."""
    global _verdict
    with _lock:
        _verdict = False


def pack(weight: Tensor, rows: int) -> Tensor:
    """W (N, K) float32 in oneDNN's blocked layout for about ``rows`` rows (only where :func:`usable`); a
    ``RuntimeError`` where this oneDNN refuses the shape or machine."""
    return _namespace()._reorder_linear_weight(weight.contiguous(), max(rows, 1))


def linear(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """x (B, K) -> x W^T + b (B, N), W as :func:`pack` gave it."""
    return _namespace()._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")
