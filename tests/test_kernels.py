"""The fused C++ recurrences (rnnlab.nn.kernels): built here, used by default, equal to the Python loops they
replace, and optional -- a failed build or RNNLAB_KERNELS=0 leaves the Python loops running."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.profiler import profile

from rnnlab.nn import kernels
from rnnlab.nn.sequence import elman_sequence, gru_sequence

needs_kernels = pytest.mark.skipif(kernels.why_not() is not None, reason=f"kernels cannot be built here: "
                                   f"{kernels.why_not()}")


def _inputs(cell: str, t: int, b: int, h: int, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gates = 3 if cell == "gru" else 1
    xp = torch.randn(t, b, gates * h, generator=g, dtype=dtype).requires_grad_()
    h0 = torch.randn(b, h, generator=g, dtype=dtype).requires_grad_()
    w = (torch.randn(gates * h, h, generator=g, dtype=dtype) / h ** 0.5).requires_grad_()
    if cell == "elman":
        return (xp, h0, w)
    return (xp, h0, w, torch.randn(gates * h, generator=g, dtype=dtype).requires_grad_())


def _run(cell: str, args, dout):
    fn = gru_sequence if cell == "gru" else elman_sequence
    out = fn(*args)
    return (out, *torch.autograd.grad(out, args, dout))


@needs_kernels
def test_the_kernels_build_and_load_here():
    """Where nothing is known against them, the kernels must build: a broken build would otherwise pass every
    other test on the Python loops, silently slower."""
    assert kernels.available()
    assert hasattr(torch.ops.rnnlab, "gru_forward") and hasattr(torch.ops.rnnlab, "elman_backward")


@needs_kernels
@pytest.mark.parametrize("cell", ["elman", "gru"])
def test_the_sequences_run_in_the_kernel_unless_disabled(cell):
    args = _inputs(cell, 4, 3, 5)

    def ops() -> set[str]:
        with profile() as p:
            _run(cell, args, torch.ones(4, 3, 5, dtype=torch.float64))
        return {e.name for e in p.events() if e.name.startswith("rnnlab::")}

    assert ops() == {f"rnnlab::{cell}_forward", f"rnnlab::{cell}_backward"}
    with kernels.disabled():
        assert not kernels.available()
        assert ops() == set()
    assert kernels.available()


@needs_kernels
@pytest.mark.parametrize("cell", ["elman", "gru"])
@pytest.mark.parametrize("t, b, h", [(1, 1, 1), (3, 1, 13), (6, 5, 19), (4, 64, 128), (2, 3, 300)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_equals_the_python_loop(cell, t, b, h, dtype):
    """Values and every gradient, in float64 to round-off, in float32 to its precision. The shapes cover one row,
    rows split over threads (64 x 128), and widths that are not a multiple of the vector length."""
    args = _inputs(cell, t, b, h, dtype)
    dout = torch.randn(t, b, h, dtype=dtype, generator=torch.Generator().manual_seed(9))
    got = _run(cell, args, dout)
    with kernels.disabled():
        want = _run(cell, args, dout)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for a, e, name in zip(got, want, ["out", "d xp", "d h0", "d w_hh", "d b_hh"]):
        torch.testing.assert_close(a, e, **tol, msg=name)


@needs_kernels
def test_the_kernel_takes_strided_inputs():
    """A transposed (non-contiguous) projection and state are read as the values they hold."""
    xp, h0, w, bias = _inputs("gru", 5, 4, 6)
    xp_t = xp.detach().transpose(0, 1).contiguous().transpose(0, 1)  # same values, (B, T, G) storage order
    h0_t = h0.detach().t().contiguous().t()
    assert not xp_t.is_contiguous() and not h0_t.is_contiguous()
    with torch.no_grad():
        got = gru_sequence(xp_t, h0_t, w, bias)
        with kernels.disabled():
            want = gru_sequence(xp.detach(), h0.detach(), w, bias)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@needs_kernels
def test_the_kernel_refuses_shapes_that_do_not_agree():
    xp, h0, w, bias = (a.detach() for a in _inputs("gru", 3, 2, 4))
    with pytest.raises(RuntimeError, match="shapes do not agree"):
        torch.ops.rnnlab.gru_forward(xp, h0[:, :3], w, bias)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.rnnlab.elman_forward(xp[..., :4].half(), h0.half(), w[:4].half())


def test_a_failed_build_warns_once_and_the_python_loops_run(tmp_path, monkeypatch):
    broken = tmp_path / "recurrences.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(kernels, "SOURCE", broken)
    monkeypatch.setattr(kernels, "_loaded", None)
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    if kernels.why_not() is None:
        with pytest.warns(UserWarning, match="could not be built.*Python loops"):
            assert not kernels.available()
    else:
        assert not kernels.available()
    assert not kernels.available()  # decided once: no second attempt, no second warning
    args = _inputs("gru", 3, 2, 4)
    out = gru_sequence(*args)  # runs, on the Python loop
    assert out.shape == (3, 2, 4) and torch.isfinite(out).all()


def test_rnnlab_kernels_0_turns_them_off():
    code = ("import torch\nfrom rnnlab.nn import kernels\n"
            "print(kernels.why_not(), kernels.available())")
    env = {**os.environ, kernels.ENV: "0"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{kernels.ENV}=0 False"
    assert "building" not in r.stderr


def test_the_build_folder_follows_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path))
    first = kernels.build_directory()
    assert first.parent == tmp_path
    other = tmp_path / "other.cpp"
    other.write_text(kernels.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(kernels, "SOURCE", other)
    assert kernels.build_directory() != first
