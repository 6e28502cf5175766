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


SPLITS = [  # (cell, threads, B, H) -> the forward's and the backward's split, and their blocks
    ("elman", 2, 40, 19, ("rows", 20), ("rows", 20)),
    ("elman", 8, 70, 19, ("rows", 18), ("rows", 18)),  # 4 blocks of rows, the last narrower
    ("gru", 2, 40, 19, ("rows", 20), ("rows", 20)),
    ("gru", 8, 70, 100, ("rows", 18), ("rows", 18)),
    ("gru", 2, 5, 520, ("units", 272), ("units", 272)),  # too few rows: by units, 2 blocks, the last narrower
    ("gru", 8, 5, 1100, ("units", 144), ("units", 288)),  # 8 blocks forward, 4 backward
    ("gru", 2, 40, 300, ("units", 160), ("none", 0)),  # wide: forward by units; backward on MKL's threads
]


@needs_kernels
@pytest.mark.parametrize("cell, threads, b, h, fwd, bwd", SPLITS)
def test_the_split_loops_equal_the_python_loop(cell, threads, b, h, fwd, bwd):
    """The loops over time in one parallel region: each block of rows its own whole loop, or each block of hidden
    units its rows (columns) of W_hh and its units' element-wise work with a barrier per step. Values and every
    gradient to float64 round-off, for each split with 2 to 8 blocks, the last one narrower."""
    assert kernels.available()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert tuple(torch.ops.rnnlab.split_plan(cell, False, b, h)) == fwd
        assert tuple(torch.ops.rnnlab.split_plan(cell, True, b, h)) == bwd
        args = _inputs(cell, 4, b, h)
        dout = torch.randn(4, b, h, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        got = _run(cell, args, dout)
        with kernels.disabled():
            want = _run(cell, args, dout)
    finally:
        torch.set_num_threads(before)
    for a, e, name in zip(got, want, ["out", "d xp", "d h0", "d w_hh", "d b_hh"]):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12, msg=name)


@needs_kernels
def test_the_split_follows_the_measurements():
    """Batch 64 on 2 threads: the Elman RNN by rows at every size, the GRU by rows up to 128 units and by units
    beyond (its backward from 512 units, on MKL's threads at 256); fewer than 32 rows are not split by rows, and
    with one thread nothing is split."""
    assert kernels.available()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)

        def plans(cell: str, backward: bool, b: int = 64) -> list[str]:
            return [torch.ops.rnnlab.split_plan(cell, backward, b, h)[0] for h in (64, 128, 256, 512)]

        assert plans("elman", False) == plans("elman", True) == ["rows"] * 4
        assert plans("gru", False) == ["rows", "rows", "units", "units"]
        assert plans("gru", True) == ["rows", "rows", "none", "units"]
        assert plans("elman", False, b=31) == ["none"] * 4
        torch.set_num_threads(1)
        assert plans("elman", False) == plans("gru", False) == ["none"] * 4
    finally:
        torch.set_num_threads(before)


@needs_kernels
def test_the_gates_are_float32_accurate_and_keep_nan():
    """The kernels' tanh and sigmoid run on ATen's faster exp: over [-20, 20] within 3e-7 of float64's (what a
    float32 state can tell apart), and a NaN stays NaN (the polynomial alone would map it to -1 or 0, hiding a
    diverged run). With W_hh = 0 and h_0 = 0 the Elman step is tanh(x^p) and the GRU's is tanh(x_n) (1 - sig(x_z))."""
    assert kernels.available()
    h = 4001
    x = torch.linspace(-20, 20, h, dtype=torch.float64)
    xp = x.float().reshape(1, 1, h).repeat(1, 2, 1)  # (T 1, B 2, H)
    xp[0, 1, ::100] = float("nan")
    zero_h, zero_w = torch.zeros(2, h), torch.zeros(h, h)
    out = torch.ops.rnnlab.elman_forward(xp, zero_h, zero_w)[0]
    assert (out[0].double() - torch.tanh(x)).abs().max() < 3e-7
    assert torch.equal(out[1].isnan(), xp[0, 1].isnan())
    gx = torch.stack([torch.zeros(h), x.float().flip(0), x.float()])  # x_r, x_z, x_n
    gxp = gx.reshape(1, 1, 3 * h).repeat(1, 2, 1)
    gxp[0, 1, 2 * h::97] = float("nan")
    out = torch.ops.rnnlab.gru_forward(gxp, zero_h, torch.zeros(3 * h, h), torch.zeros(3 * h))[0][0]
    want = torch.tanh(x) * (1 - torch.sigmoid(x.flip(0)))
    assert (out[0].double() - want).abs().max() < 3e-7
    assert torch.equal(out[1].isnan(), gxp[0, 1, 2 * h:].isnan())


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
@pytest.mark.parametrize("cell", ["elman", "gru"])
@pytest.mark.parametrize("layout", ["batch-major", "every other row"])
def test_the_backward_reads_a_gradient_of_any_row_layout(cell, layout):
    """The gradient from above arrives as the transpose of a batch-major tensor (the model's (B, T, H) output) or
    with gaps between rows; the backward reads its rows in place and computes what it does from a contiguous copy."""
    t, b, h = 5, 4, 19
    args = _inputs(cell, t, b, h)
    dout = torch.randn(t, b, h, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    if layout == "batch-major":
        strided = dout.transpose(0, 1).contiguous().transpose(0, 1)
    else:
        strided = torch.zeros(t, 2 * b, h, dtype=torch.float64)[:, ::2]
        strided.copy_(dout)
    assert not strided.is_contiguous() and strided.stride(2) == 1 and torch.equal(strided, dout)
    got = _run(cell, args, strided)
    want = _run(cell, args, dout.contiguous())
    for a, e, name in zip(got, want, ["out", "d xp", "d h0", "d w_hh", "d b_hh"]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14, msg=name)


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


# ---------------------------------------------------------------------------------------------------------------
# the decision loop: a self-fed run's inputs (rnnlab.feeding.own_inputs) and text generation, in C++


def _lm(cell: str, hidden: int = 48, layers: int = 2, vocab: int = 13, **kw):
    from rnnlab.config import ModelConfig
    from rnnlab.nn import RNNLanguageModel

    torch.manual_seed(5)
    return RNNLanguageModel(ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers, embedding_size=8,
                                        dropout=0.0, **kw), vocab).double().eval()


def _decide_ops(fn) -> int:
    with profile() as p:
        fn()
    return sum(e.name == "rnnlab::decide" for e in p.events())


@needs_kernels
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("mode", ["sample", "argmax"])
@pytest.mark.parametrize("teacher", [False, True])
@pytest.mark.parametrize("layers, extra", [(2, {}), (1, {"input": "onehot"}), (3, {})])
def test_the_decision_loop_feeds_what_the_python_loop_feeds(cell, mode, teacher, layers, extra):
    """own_inputs in C++ against the same function in Python, token for token (float64: equal up to a draw
    within round-off of a boundary); with truth, the true token wherever truth says so."""
    from rnnlab.feeding import own_inputs

    lm = _lm(cell, layers=layers, **extra)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 13, (6, 30), generator=g)
    state = tuple(tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) for t in layer)
                  for layer in lm.initial_state(6))
    truth = torch.rand(6, 29, generator=g) < 0.4 if teacher else None
    got = own_inputs(lm, x, state, mode, torch.Generator().manual_seed(2), truth)
    assert _decide_ops(lambda: own_inputs(lm, x, state, mode, torch.Generator().manual_seed(2), truth)) == 1
    with kernels.disabled():
        want = own_inputs(lm, x, state, mode, torch.Generator().manual_seed(2), truth)
    assert torch.equal(got, want)
    assert torch.equal(got[:, 0], x[:, 0])
    if truth is not None:
        assert torch.equal(got[:, 1:][truth], x[:, 1:][truth])
    if mode == "sample":  # the run really is the model's own: not the truth, and not one token over and over
        assert not torch.equal(got, x) and got.unique().numel() > 3


@pytest.fixture
def eight_threads():
    """More threads than this machine's cores, as on a 16-core machine: the column split runs on pool threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(8)
    yield
    torch.set_num_threads(before)


@needs_kernels
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_the_decision_loop_with_many_threads_on_weights_that_require_grad(cell, eight_threads):
    """Pool threads do not inherit no-grad mode: their column-split products once recorded autograd history on
    the trainable weights (an error, or a crash with 16 threads). Now the same tokens as the Python loop, and no
    history on anything."""
    from rnnlab.feeding import own_inputs

    lm = _lm(cell, hidden=128, layers=3)  # 128+ columns in every recurrent product: split
    assert all(p.requires_grad for p in lm.parameters())
    g = torch.Generator().manual_seed(5)
    for rows in (2, 6):  # under 16 rows: the columns are split over the threads
        x = torch.randint(0, 13, (rows, 60), generator=g)
        state = lm.initial_state(rows)
        truth = torch.rand(rows, 59, generator=g) < 0.3
        got = own_inputs(lm, x, state, "sample", torch.Generator().manual_seed(6), truth)
        with kernels.disabled():
            want = own_inputs(lm, x, state, "sample", torch.Generator().manual_seed(6), truth)
        assert torch.equal(got, want)
    assert all(p.grad_fn is None and p.grad is None for p in lm.parameters())


@needs_kernels
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_the_decision_loop_returns_the_state_after_reading_its_inputs(cell):
    from rnnlab.nn.models import decide_in_kernel

    lm = _lm(cell)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 13, (3, 12), generator=g)
    state = lm.initial_state(3)
    u = torch.rand(11, 3, generator=g, dtype=torch.float64)
    fed, end = decide_in_kernel(lm, x, state, "sample", u)
    with torch.no_grad():
        _, want = lm(fed[:, :-1], state)  # the teacher-forced pass over what was fed, but the last token
    for a, b in zip(end, want, strict=True):
        for ta, tb in zip(a, b, strict=True):
            torch.testing.assert_close(ta, tb, rtol=1e-10, atol=1e-12)


@needs_kernels
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("options", [dict(length=40, num_samples=3, seed=4), dict(length=25, temperature=0.4, seed=1),
                                     dict(length=17, strategy="argmax", num_samples=2), dict(length=1, seed=3)])
def test_generate_in_the_kernel_writes_what_the_python_loop_writes(cell, options, monkeypatch):
    """The same texts and the same streamed pieces, with chunks of 7 steps (so runs cross chunk boundaries)."""
    from rnnlab import sampling
    from rnnlab.config import SampleConfig
    from rnnlab.data.vocab import Vocab

    monkeypatch.setattr(sampling, "KERNEL_CHUNK", 7)
    vocab = Vocab(list("abcdefghij\n .")[:13])
    lm = _lm(cell)
    cfg = SampleConfig(prime="ab", **options)
    pieces: list[list[str]] = []
    got = sampling.generate(lm, vocab, cfg, on_text=pieces.append)
    assert _decide_ops(lambda: sampling.generate(lm, vocab, cfg)) == (0 if cfg.length == 1 else -(-(cfg.length - 1) // 7))
    with kernels.disabled():
        want_pieces: list[list[str]] = []
        want = sampling.generate(lm, vocab, cfg, on_text=want_pieces.append)
    assert got == want and pieces == want_pieces
    assert len(pieces) == cfg.length and all(len(t) == len("ab") + cfg.length for t in got)


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_the_prime_is_read_once_in_chunks_with_the_state_of_every_stream(cell, monkeypatch):
    """The prime read as one row, 4 tokens at a time, gives every stream the logits and the state of the
    whole prime read at once by every stream."""
    from rnnlab import sampling

    monkeypatch.setattr(sampling, "PRIME_CHUNK", 4)
    lm = _lm(cell)
    ids = torch.randint(0, 13, (11,), generator=torch.Generator().manual_seed(5)).numpy()
    with torch.no_grad():
        logits, state = sampling._read_prime(lm, ids, 3)
        want_logits, want_state = lm(torch.as_tensor(ids).expand(3, -1), lm.initial_state(3))
    torch.testing.assert_close(logits, want_logits[:, -1], rtol=1e-10, atol=1e-12)
    for a, b in zip(state, want_state, strict=True):
        for ta, tb in zip(a, b, strict=True):
            assert ta.shape == tb.shape and ta.is_contiguous()
            torch.testing.assert_close(ta, tb, rtol=1e-10, atol=1e-12)


@needs_kernels
def test_top_k_and_top_p_stay_in_the_python_loop():
    from rnnlab import sampling
    from rnnlab.config import SampleConfig
    from rnnlab.data.vocab import Vocab

    vocab = Vocab(list("abcdefghij\n ."))
    lm = _lm("gru")
    for cfg in (SampleConfig(length=30, top_k=3, seed=0), SampleConfig(length=30, top_p=0.5, seed=0)):
        assert _decide_ops(lambda c=cfg: sampling.generate(lm, vocab, c)) == 0
    assert _decide_ops(lambda: sampling.generate(lm, vocab, SampleConfig(length=30, seed=0))) > 0


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@needs_kernels
@needs_onednn
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags, 2.13
def test_the_decision_loop_multiplies_by_onednn_where_the_stepper_would():
    """Large float32 matrices and 4 or more streams: oneDNN's packed matrices, as the Stepper's; else the BLAS."""
    from rnnlab.nn.models import Decider

    lm = _lm("lstm", hidden=512).float()
    assert Decider(lm, 64).onednn and not Decider(lm, 1).onednn
    assert not Decider(lm.double(), 64).onednn  # oneDNN's packed product is float32 only
    assert not Decider(_lm("lstm", hidden=64).float(), 64).onednn  # small matrices: the BLAS is faster
    with torch.backends.mkldnn.flags(enabled=False):
        assert not Decider(lm, 64).onednn


@needs_kernels
@needs_onednn
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 3])
def test_the_decision_loop_on_onednn_feeds_what_the_python_loop_feeds(cell, layers, monkeypatch):
    """Every matrix on oneDNN (the size threshold lowered): the same tokens as the Python loop of packed steps, in
    float32, with truth or without, and the state a teacher-forced pass over what was fed reaches."""
    from rnnlab.feeding import own_inputs
    from rnnlab.nn import paths
    from rnnlab.nn.models import Decider

    monkeypatch.setattr(paths, "ONEDNN_MIN_SIZE", 1)
    lm = _lm(cell, layers=layers).float()
    assert Decider(lm, 6).onednn
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 13, (6, 30), generator=g)
    state = lm.initial_state(6)
    for mode, truth in (("argmax", None), ("sample", None), ("sample", torch.rand(6, 29, generator=g) < 0.4)):
        got = own_inputs(lm, x, state, mode, torch.Generator().manual_seed(8), truth)
        assert _decide_ops(lambda m=mode, t=truth: own_inputs(lm, x, state, m, torch.Generator().manual_seed(8), t)) == 1
        with kernels.disabled():
            want = own_inputs(lm, x, state, mode, torch.Generator().manual_seed(8), truth)
        assert torch.equal(got, want), mode
    u = torch.rand(29, 6, generator=g, dtype=torch.float64)
    fed, end = Decider(lm, 6)(x, state, "sample", u)
    with torch.no_grad():
        _, want_state = lm(fed[:, :-1], state)
    for a, b in zip(end, want_state, strict=True):
        for ta, tb in zip(a, b, strict=True):
            torch.testing.assert_close(ta, tb, rtol=1e-4, atol=1e-5)


@needs_kernels
@needs_onednn
def test_generate_on_onednn_writes_what_the_python_loop_writes(monkeypatch):
    """64 streams of a 2x512 LSTM (oneDNN's products in the C++ loop, prepared once for every chunk): the texts of
    the Python loop of packed steps, which multiplies by the same packed matrices."""
    from rnnlab import sampling
    from rnnlab.config import SampleConfig
    from rnnlab.data.vocab import Vocab

    monkeypatch.setattr(sampling, "KERNEL_CHUNK", 9)
    vocab = Vocab(list("abcdefghij\n ."))
    lm = _lm("lstm", hidden=512, vocab=13).float()
    cfg = SampleConfig(prime="ab", length=20, num_samples=64, seed=2)
    got = sampling.generate(lm, vocab, cfg)
    assert _decide_ops(lambda: sampling.generate(lm, vocab, cfg)) == 3
    with kernels.disabled():
        want = sampling.generate(lm, vocab, cfg)
    assert got == want and len(set(got)) > 32


@needs_kernels
def test_the_decision_loop_refuses_what_does_not_fit():
    """Shapes the C++ loop would otherwise read past or misalign: one clear error each."""
    from rnnlab.nn.models import decide_in_kernel

    lm = _lm("lstm")
    x = torch.randint(0, 13, (4, 6))
    state = lm.initial_state(4)
    u = torch.rand(5, 4, dtype=torch.float64)
    bad_c = tuple((h, c[:1]) for h, c in state)  # a cell state of another batch
    with pytest.raises(RuntimeError, match=r"state tensor must be \(B, H\)"):
        decide_in_kernel(lm, x, bad_c, "sample", u)
    with pytest.raises(RuntimeError, match=r"u must be \(T - 1, B\) float64"):
        decide_in_kernel(lm, x, state, "sample", u[:4])
    with pytest.raises(RuntimeError, match=r"u must be \(T - 1, B\) float64"):
        decide_in_kernel(lm, x, state, "sample", u.float())
    with pytest.raises(RuntimeError, match=r"truth must be \(B, T - 1\) bool"):
        decide_in_kernel(lm, x, state, "argmax", truth=torch.zeros(4, 5, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="expanded size"):  # (B, T): one column too many
        decide_in_kernel(lm, x, state, "argmax", truth=torch.zeros(4, 6, dtype=torch.bool))
    with pytest.raises(IndexError):
        decide_in_kernel(lm, torch.full((4, 6), 13), state, "argmax")  # a token the model does not have


@needs_kernels
def test_a_broadcast_truth_and_a_strided_gru_bias_decide_as_the_python_loop():
    from rnnlab.feeding import own_inputs

    lm = _lm("gru", layers=2)
    with torch.no_grad():  # b_hh as a stride-2 view of a larger tensor, the same values
        for c in lm.rnn.cells:
            wide = torch.zeros(2 * c.bias_hh.numel(), dtype=c.bias_hh.dtype)
            wide[::2] = c.bias_hh
            c.bias_hh = torch.nn.Parameter(wide[::2])
            assert not c.bias_hh.is_contiguous()
    x = torch.randint(0, 13, (5, 20), generator=torch.Generator().manual_seed(0))
    truth = (torch.arange(19) % 3 == 0).unsqueeze(0)  # (1, T - 1): the same positions for every row
    got = own_inputs(lm, x, lm.initial_state(5), "sample", torch.Generator().manual_seed(1), truth)
    with kernels.disabled():
        want = own_inputs(lm, x, lm.initial_state(5), "sample", torch.Generator().manual_seed(1), truth)
    assert torch.equal(got, want)


@needs_kernels
def test_generating_nothing_streams_nothing():
    from rnnlab import sampling
    from rnnlab.config import SampleConfig
    from rnnlab.data.vocab import Vocab

    pieces: list = []
    out = sampling.generate(_lm("elman"), Vocab(list("abcdefghij\n .")), SampleConfig(prime="ab", length=0),
                            on_text=pieces.append)
    assert out == ["ab"] and pieces == []


@needs_kernels
def test_a_built_kernel_loads_without_a_compiler(tmp_path):
    """Once built, the library is loaded as it is: no compiler needed, nothing written to its folder."""
    code = ("import os, torch\nfrom rnnlab.nn import kernels\n"
            "print(kernels.why_not(), kernels.available())")
    env = {**os.environ, "PATH": str(tmp_path), "CXX": "no-such-compiler"}  # no c++, no ninja on PATH
    where = kernels.build_directory()
    before = sorted(p.name for p in where.iterdir())
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None True" and "building" not in r.stderr
    assert sorted(p.name for p in where.iterdir()) == before


@needs_kernels
@pytest.mark.parametrize("t, b, h", [(1, 1, 1), (5, 3, 7), (4, 64, 128), (3, 2, 19)])
def test_the_lstm_kernel_equals_torch_nn_lstm(t, b, h):
    """Values, final cell state and every gradient (inputs, both initial states, both weights, the bias) against
    torch.nn.LSTM in float64, with a loss on every output and on the final c."""
    from rnnlab.nn.sequence import lstm_sequence

    torch.manual_seed(t * 100 + h)
    ref = torch.nn.LSTM(6, h).double()
    x = torch.randn(t, b, 6, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(b, h, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w_out, w_c = torch.randn(t, b, h, dtype=torch.float64), torch.randn(b, h, dtype=torch.float64)
    params = (x, h0, c0, ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0)

    out, (_, c_n) = ref(x, (h0[None], c0[None]))
    want = (out, c_n[0], *torch.autograd.grad((out * w_out).sum() + (c_n[0] * w_c).sum(), params))
    xp = torch.nn.functional.linear(x, ref.weight_ih_l0, ref.bias_ih_l0 + ref.bias_hh_l0)
    out, cs = lstm_sequence(xp, h0, c0, ref.weight_hh_l0)
    got = (out, cs[-1], *torch.autograd.grad((out * w_out).sum() + (cs[-1] * w_c).sum(), params))
    for a, e, name in zip(got, want, ["out", "c_T", "d x", "d h0", "d c0", "d W_ih", "d W_hh", "d b"]):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12, msg=name)


@needs_kernels
def test_the_lstm_kernel_passes_gradcheck():
    from rnnlab.nn.sequence import lstm_sequence

    g = torch.Generator().manual_seed(8)
    xp, h0, c0 = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                  for s in ((4, 3, 20), (3, 5), (3, 5)))
    w = (torch.randn(20, 5, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: lstm_sequence(*a), (xp, h0, c0, w))


@needs_kernels
def test_small_lstms_train_in_the_kernel_large_ones_on_onednn(monkeypatch):
    from rnnlab.nn.stack import RecurrentStack

    def ops(hidden: int) -> set[str]:
        stack = RecurrentStack("lstm", 4, hidden, num_layers=2)
        x = torch.randn(2, 3, 4)
        with profile() as p:
            stack(x, stack.initial_state(2))[0].sum().backward()
        return {e.name for e in p.events() if e.name.startswith("rnnlab::")}

    from rnnlab import allocator
    from rnnlab.nn.cells import LSTMCell

    limit, threads = LSTMCell.kernel_sequence_max_hidden, torch.get_num_threads()
    kernel = {"rnnlab::lstm_forward", "rnnlab::lstm_backward"}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            monkeypatch.setattr(allocator, "_set", False)  # malloc as glibc has it: the kernel up to the limit
            assert ops(limit) == kernel and ops(limit + 1) == set()
            with kernels.disabled():
                assert ops(8) == set()
            monkeypatch.setattr(allocator, "_set", True)  # freed large blocks reused, as in every rnnlab run
            assert ops(8) == (kernel if n == 1 else set())  # oneDNN on two threads
    finally:
        torch.set_num_threads(threads)
