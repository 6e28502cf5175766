"""Cells against torch's cells (oracle), unroller against the fused path, the model's contract."""

import pytest
import torch

from rnnlab.config import ModelConfig
from rnnlab.nn import CELL_TYPES, RecurrentStack, RNNLanguageModel

TORCH_CELLS = {
    "elman": lambda i, h: torch.nn.RNNCell(i, h, nonlinearity="tanh"),
    "elman-relu": lambda i, h: torch.nn.RNNCell(i, h, nonlinearity="relu"),
    "lstm": torch.nn.LSTMCell,
    "gru": torch.nn.GRUCell,
}
CELLS = list(CELL_TYPES)


@pytest.mark.parametrize("name", CELLS)
def test_cell_matches_torch_cell_outputs_and_gradients(name):
    torch.manual_seed(1)
    b, i, h, steps = 3, 5, 7, 4
    ours = CELL_TYPES[name](i, h).double()
    ref = TORCH_CELLS[name](i, h).double()
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, p).copy_(getattr(ours, p))
    xs = torch.randn(steps, b, i, dtype=torch.float64)
    s = ours.initial_state(b)
    assert all((t == 0).all() and t.shape == (b, h) for t in s)
    r = None
    loss_o = loss_r = 0
    for x in xs:
        out, s = ours.step(x, s)
        r = ref(x, r) if r is not None else ref(x)
        r_h = r[0] if isinstance(r, tuple) else r
        torch.testing.assert_close(out, r_h, rtol=0, atol=1e-12)
        if name == "lstm":
            torch.testing.assert_close(s[1], r[1], rtol=0, atol=1e-12)
        loss_o = loss_o + (out ** 2).sum()
        loss_r = loss_r + (r_h ** 2).sum()
    loss_o.backward()
    loss_r.backward()
    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(ours, p).grad, getattr(ref, p).grad, rtol=1e-10, atol=1e-12)


def _paths(stack):
    """Every way the stack can run a whole sequence: the unroller, torch's module, the hand-written recurrences
    (in the C++ kernels' loop, and in the Python loop that stands in where the kernels cannot be built)."""
    from rnnlab.nn import kernels

    def python_loops(x, s):
        with kernels.disabled():
            return stack.sequences(x, s)

    paths = {"unroll": stack.unroll, "torch": stack.torch_fused, "fused": lambda x, s: stack(x, s, fused=True)}
    if all(c.has_sequence for c in stack.cells):
        paths["sequences"] = stack.sequences
        paths["python loops"] = python_loops
    elif kernels.available() and all(c.kernel_sequence_max_hidden is not None for c in stack.cells):
        paths["sequences"] = stack.sequences  # the LSTM: C++ only, no Python loop
    return paths


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("chunk_floats", [None, 100])
def test_unroller_and_fused_paths_agree(name, layers, chunk_floats, monkeypatch):
    from rnnlab.nn import sequence

    if chunk_floats is not None:  # the backward's scratch in chunks of 1-4 steps (9 in all: a short first chunk)
        monkeypatch.setattr(sequence, "CHUNK_FLOATS", chunk_floats)
    torch.manual_seed(2)
    stack = RecurrentStack(name, 6, 8, num_layers=layers, dropout=0.3).double().eval()
    x = torch.randn(4, 9, 6, dtype=torch.float64, requires_grad=True)
    s0 = tuple(tuple(torch.randn_like(t).requires_grad_() for t in layer) for layer in stack.initial_state(4))
    w_out = torch.randn(4, 9, 8, dtype=torch.float64)  # a loss that weighs every output differently
    w_state = [[torch.randn_like(t) for t in layer] for layer in s0]
    results = {}
    for path, run in _paths(stack).items():
        stack.zero_grad()
        x.grad = None
        for layer in s0:
            for t in layer:
                t.grad = None
        out, s = run(x, s0)
        assert out.shape == (4, 9, 8) and len(s) == layers
        loss = (out * w_out).sum() + sum((t * w).sum() for layer, wl in zip(s, w_state) for t, w in zip(layer, wl))
        loss.backward()
        grads = [p.grad.clone() for p in stack.parameters()] + [x.grad.clone()]
        grads += [t.grad.clone() for layer in s0 for t in layer]
        results[path] = (out.detach(), [t.detach() for layer in s for t in layer], grads)
    ref_out, ref_state, ref_grads = results.pop("unroll")
    from rnnlab.nn import kernels

    has_sequence = CELL_TYPES[name].has_sequence  # Elman and GRU: the hand-written loops, C++ and Python
    assert len(results) == (4 if has_sequence else 3 if name == "lstm" and kernels.available() else 2)
    for path, (out, state, grads) in results.items():
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12, msg=path)
        for a, b in zip(state, ref_state, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=path)
        for a, b in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=path)


@pytest.mark.parametrize("name", ["elman", "gru"])
@pytest.mark.parametrize("loop", ["kernel", "python", "python, one step per chunk"])
def test_the_hand_written_backward_passes_gradcheck(name, loop, monkeypatch):
    """Finite differences against the analytic backward of each whole-sequence recurrence: the C++ kernel's, and
    the Python loop's with its scratch holding every step at once and one step at a time (CHUNK_FLOATS=1)."""
    from rnnlab.nn import kernels, sequence
    from rnnlab.nn.sequence import elman_sequence, gru_sequence

    if loop == "kernel":
        assert kernels.available() or kernels.why_not() is not None
    else:
        monkeypatch.setattr(kernels, "available", lambda: False)
    if loop.endswith("chunk"):
        monkeypatch.setattr(sequence, "CHUNK_FLOATS", 1)
    torch.manual_seed(3)
    t, b, h = 5, 3, 4
    g = 1 if name == "elman" else 3
    xp = torch.randn(t, b, g * h, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(b, h, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(g * h, h, dtype=torch.float64) * 0.7).requires_grad_()
    if name == "elman":
        assert torch.autograd.gradcheck(elman_sequence, (xp, h0, w))
    else:
        bias = torch.randn(g * h, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(gru_sequence, (xp, h0, w, bias))
        assert torch.autograd.gradcheck(lambda a, b_: gru_sequence(a, b_, w.detach(), bias.detach()), (xp, h0))


@pytest.mark.parametrize("name", ["elman", "gru"])
def test_frozen_weights_still_pass_gradients_to_the_inputs(name):
    """Professor forcing's discriminator is run with its weights frozen: the inputs' gradient is unchanged."""
    torch.manual_seed(4)
    stack = RecurrentStack(name, 5, 6, num_layers=2).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    w_out = torch.randn(3, 7, 6, dtype=torch.float64)
    (stack.unroll(x, stack.initial_state(3))[0] * w_out).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    for p in stack.parameters():
        p.requires_grad_(False)
    (stack.sequences(x, stack.initial_state(3))[0] * w_out).sum().backward()
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-12)


def test_the_fused_template_adds_no_parameters():
    stack = RecurrentStack("lstm", 3, 4, num_layers=2)
    names = {n for n, _ in stack.named_parameters()}
    assert names == {f"layers.{k}.{p}" for k in range(2) for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("inp", ["embedding", "onehot"])
def test_step_by_step_equals_the_whole_sequence(name, inp):
    torch.manual_seed(3)
    m = RNNLanguageModel(ModelConfig(cell=name, hidden_size=10, num_layers=2, input=inp, embedding_size=5), 11)
    m = m.double().eval()
    tokens = torch.randint(0, 11, (2, 6))
    logits, state = m(tokens)
    s = m.initial_state(2)
    for t in range(6):
        lt, s = m.step(tokens[:, t], s)
        torch.testing.assert_close(lt, logits[:, t], rtol=0, atol=1e-12)
    for la, lb in zip(state, s):
        for a, b in zip(la, lb):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_soft_one_hot_input_equals_the_hard_token():
    m = RNNLanguageModel(ModelConfig(hidden_size=8, num_layers=1), 7).double().eval()
    tokens = torch.randint(0, 7, (3, 5))
    soft = torch.nn.functional.one_hot(tokens, 7).double()
    torch.testing.assert_close(m(tokens)[0], m(soft)[0])


def test_dropout_is_active_in_training_and_off_in_eval():
    m = RNNLanguageModel(ModelConfig(hidden_size=16, num_layers=2, dropout=0.5), 5)
    tokens = torch.randint(0, 5, (2, 8))
    m.train()
    a, _ = m(tokens)
    b, _ = m(tokens)
    assert not torch.allclose(a, b)
    m.eval()
    torch.testing.assert_close(m(tokens)[0], m(tokens)[0])


def test_elman_initial_state_is_zero_and_initialisation_is_bounded():
    cell = CELL_TYPES["elman"](4, 100)
    assert all(p.abs().max() <= 0.1 + 1e-7 for p in cell.parameters())  # U(-1/sqrt(H), 1/sqrt(H))
    assert (cell.initial_state(3)[0] == 0).all()


@pytest.mark.parametrize("name", CELLS)
def test_the_one_call_step_equals_the_projected_step_values_and_gradients(name):
    """``Cell.step`` calls torch's cell function; the written-out equations are the oracle."""
    from rnnlab.nn.cells import CELL_TYPES

    torch.manual_seed(1)
    cell = CELL_TYPES[name](5, 7).double()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(3, 7, dtype=torch.float64, requires_grad=True) for _ in range(cell.state_tensors))
    outs = []
    for fn in (lambda: cell.step(x, state), lambda: cell.step_projected(cell.project_input(x), state)):
        h, new = fn()
        loss = sum((t * torch.linspace(-1, 1, 7, dtype=torch.float64)).sum() ** 2 for t in new)
        grads = torch.autograd.grad(loss, [x, *state, *cell.parameters()])
        outs.append((new, grads))
        assert h is new[0]
    for a, b in zip(outs[0][0] + outs[0][1], outs[1][0] + outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("inp", ["embedding", "onehot"])
@pytest.mark.parametrize("hidden, batch", [(9, 4), (10, 1), (9, 8), (10, 16)])  # odd G*H: one block; even: two column
def test_the_inference_stepper_equals_the_model_step(name, inp, hidden, batch):  # halves; 16 streams: whole
    """The packed weights (the first layer's projection folded into a table, [W_ih, W_hh] joined, kept as
    column halves for few streams and whole for many) compute exactly ``model.step`` in eval mode, step after
    step."""
    torch.manual_seed(2)
    m = RNNLanguageModel(ModelConfig(cell=name, hidden_size=hidden, num_layers=3, embedding_size=5, input=inp,
                                     dropout=0.3), 11).double().eval()
    stepper = m.stepper(batch)
    if name != "gru":  # the GRU steps by its own cell (it cannot pack); float64 takes addmm, not oneDNN
        whole = [lin.weight.dim() == 2 for lin in filter(None, stepper.packed)] + [stepper.hh0.weight.dim() == 2]
        assert len(whole) == 3 and all(whole) == (batch >= 16) and any(whole) == (batch >= 16)
    state = tuple(tuple(torch.randn_like(t) for t in layer) for layer in m.initial_state(batch))
    _follows_the_model_step(m, stepper, state, steps=5, rtol=1e-12, atol=1e-12, states=True)


def _follows_the_model_step(m: RNNLanguageModel, stepper, state, steps: int, rtol: float, atol: float,
                            states: bool) -> None:
    """``stepper`` and ``m.step`` fed the same random tokens from ``state``: the same logits (and states)."""
    s1 = s2 = state
    batch = state[0][0].shape[0]
    for _ in range(steps):
        tok = torch.randint(0, m.vocab_size, (batch,))
        with torch.no_grad():
            a, s1 = m.step(tok, s1)
        b, s2 = stepper(tok, s2)
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        for x, y in zip(sum(s1, ()), sum(s2, ()) if states else ()):
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["elman", "lstm"])
@pytest.mark.parametrize("batch", [1, 64])
def test_the_float32_stepper_on_onednn_follows_the_model_step(name, batch):
    """The packed float32 step (oneDNN) stays within float32 rounding of ``model.step`` over 20 steps."""
    from rnnlab.nn.linear import onednn_usable

    if not onednn_usable(torch.zeros(1)):
        pytest.skip("this PyTorch build has no oneDNN")
    torch.manual_seed(3)
    m = RNNLanguageModel(ModelConfig(cell=name, hidden_size=512, num_layers=2, embedding_size=8), 11).eval()
    assert m.stepper(batch).hh0.onednn == (batch >= 4 and name == "lstm")  # the Elman's 512 x 512: addmm
    stepper = m.stepper(batch, onednn=True)  # forced, to test it at one row too
    assert stepper.hh0.onednn and stepper.packed[1].onednn
    _follows_the_model_step(m, stepper, m.initial_state(batch), steps=20, rtol=1e-4, atol=1e-5, states=False)


@pytest.mark.parametrize("name, hidden, expected", [("elman", 4, "sequences"), ("gru", 4, "sequences"),
                                                     ("lstm", 4, "sequences"), ("lstm", 129, "torch_fused")])
def test_the_fused_path_on_the_cpu_takes_the_fastest_kernel(name, hidden, expected, monkeypatch):
    """The training default on the CPU: the hand-written recurrences for the Elman RNN and the GRU, the LSTM's C++
    loop up to 128 units and oneDNN's LSTM through ``torch.nn.LSTM`` above (benchmarks/results/speed.md): a silent
    fall-back would only show as lost speed."""
    from rnnlab.nn import kernels

    if name == "lstm" and not kernels.available():
        expected = "torch_fused"
    stack = RecurrentStack(name, 3, hidden, num_layers=2)
    taken = []
    for path in ("sequences", "torch_fused"):
        real = getattr(stack, path)
        monkeypatch.setattr(stack, path, lambda x, s, real=real, path=path: taken.append(path) or real(x, s))
    stack(torch.randn(2, 5, 3))
    assert taken == [expected]


def test_the_graphed_step_is_for_cuda_and_cpu_sampling_steps_eagerly():
    from rnnlab import sampling
    from rnnlab.nn.graphs import GraphedStep
    from rnnlab.nn.models import Stepper

    m = RNNLanguageModel(ModelConfig(hidden_size=8), 5)
    assert isinstance(sampling._stepper(m, 2), Stepper)  # no graph on the CPU
    with pytest.raises(ValueError, match="CUDA"):
        GraphedStep(m.stepper(1))(torch.zeros(1, dtype=torch.int64), m.initial_state(1))


@pytest.mark.parametrize("name", CELLS)
def test_a_refreshed_stepper_steps_with_the_new_weights_in_its_own_tensors(name):
    """refresh() copies changed weights into the very tensors the step reads (a CUDA graph recorded over
    them keeps reading the same memory): afterwards it equals model.step with the new weights."""
    torch.manual_seed(4)
    m = RNNLanguageModel(ModelConfig(cell=name, hidden_size=6, num_layers=2, embedding_size=3), 7).double().eval()
    stepper = m.stepper(3, onednn=False)
    before = [t.data_ptr() for t in stepper.tensors()]
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    tok, s = torch.randint(0, 7, (3,)), m.initial_state(3)
    with torch.no_grad():
        expect = m.step(tok, s)[0]
    assert not torch.allclose(stepper(tok, s)[0], expect)  # stale until refreshed
    stepper.refresh()
    assert [t.data_ptr() for t in stepper.tensors()] == before
    torch.testing.assert_close(stepper(tok, s)[0], expect, rtol=1e-12, atol=1e-12)


def test_onednn_packed_weights_are_rebuilt_not_refreshed():
    from rnnlab.nn.linear import onednn_usable

    if not onednn_usable(torch.zeros(1)):
        pytest.skip("this PyTorch build has no oneDNN")
    m = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=8), 5)
    with pytest.raises(ValueError, match="rebuilt"):
        m.stepper(4, onednn=True).refresh()


def test_decision_steps_on_the_cpu_pack_afresh_every_batch():
    from rnnlab.feeding import DecisionSteps
    from rnnlab.nn.models import Stepper

    m = RNNLanguageModel(ModelConfig(hidden_size=8), 5)
    steps = DecisionSteps()
    a, b = steps.get(m, 2), steps.get(m, 2)
    assert isinstance(a, Stepper) and a is not b


def test_importing_the_stack_silences_only_cudnns_weight_layout_warning():
    """cuDNN warns (once a process, from C++) that the cells' weights are not one buffer; rnnlab packs them
    on purpose, so ``rnnlab.nn.stack`` filters that message at import, under Python's default filters, and
    nothing else. (Under pytest the filters are its own, hence a fresh interpreter.)"""
    import subprocess
    import sys

    code = ("import warnings, rnnlab.nn.stack\n"
            "warnings.warn('RNN module weights are not part of single contiguous chunk of memory. This means')\n"
            "warnings.warn('another warning')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "another warning" in r.stderr and "contiguous chunk" not in r.stderr


def test_the_configs_cells_are_the_registered_cells():
    """The config names no cell: its choices (the CLI's --cell) and its checks ask CELL_TYPES."""
    from rnnlab.config import cell_choices

    assert tuple(cell_choices()) == tuple(CELL_TYPES) and all(cell_choices().values())
    assert ModelConfig.__dataclass_fields__["cell"].metadata["choices"] is cell_choices
    assert ModelConfig(cell="nope").problems() == [f"cell must be one of {', '.join(CELL_TYPES)}, got 'nope'"]
