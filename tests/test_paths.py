"""rnnlab.nn.paths: the one chooser of fast paths, its reasons, and every caller following it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rnnlab.config import ModelConfig, SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.nn import kernels, paths
from rnnlab.nn.cells import CELL_TYPES, ElmanCell, ElmanReLUCell, GRUCell, LSTMCell
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.nn.paths import Choice, Machine, Network


class ToyCell(ElmanCell):
    """A cell the fast paths know nothing of: no hand-written recurrence, no code in the C++ loop."""

    has_sequence = False
    kernel_code = None


def cpu(dtype: torch.dtype = torch.float32, kernels: bool = True, onednn: bool = True, large_blocks: bool = True,
        threads: int = 2) -> Machine:
    return Machine("cpu", dtype, kernels, onednn, threads, large_blocks)


GPU = Machine("cuda", torch.float32, kernels=False, onednn=False)


@pytest.mark.parametrize("cell, hidden, machine, path, says", [
    (ElmanCell, 512, cpu(), "sequences", "its loop: kernel"),
    (GRUCell, 64, cpu(kernels=False), "sequences", "its loop: python"),  # the Python loop stands in
    (GRUCell, 64, cpu(torch.float16), "sequences", "its loop: python"),
    (LSTMCell, 128, cpu(large_blocks=False), "sequences", "malloc maps large blocks afresh: up to 128"),
    (LSTMCell, 128, cpu(threads=1), "sequences", "one thread: up to 128"),
    (LSTMCell, 128, cpu(), "torch-fused", "large blocks kept (rnnlab.allocator) and 2 threads"),  # every command's
    (LSTMCell, 129, cpu(large_blocks=False), "torch-fused", "above 128"),
    (LSTMCell, 129, cpu(threads=1), "torch-fused", "above 128"),
    (LSTMCell, 32, cpu(kernels=False, threads=1), "torch-fused", "C++ only"),
    (LSTMCell, 32, cpu(torch.float16, threads=1), "torch-fused", "C++ only"),
    (ElmanReLUCell, 32, cpu(), "torch-fused", "no hand-written recurrence"),
    (ToyCell, 32, cpu(), "torch-fused", "no hand-written recurrence"),
    (ElmanCell, 32, GPU, "torch-fused", "cuDNN"),
    (LSTMCell, 32, GPU, "torch-fused", "cuDNN"),
])
def test_the_training_path_for_each_situation(cell, hidden, machine, path, says):
    choice = paths.training(machine, Network(cell, hidden, 2))
    assert choice.path == path and says in choice.reason, choice


def test_an_empty_sequence_takes_torch_fused():
    assert paths.training(cpu(), Network(ElmanCell, 8), steps=0) == Choice("torch-fused", "an empty sequence")


@pytest.mark.parametrize("cell, machine, path, says", [
    (ElmanCell, cpu(), "kernel", "C++ decision loop"),
    (GRUCell, cpu(torch.float64), "kernel", "C++ decision loop"),
    (LSTMCell, cpu(kernels=False), "stepper", "not built"),
    (LSTMCell, cpu(torch.bfloat16), "stepper", "float32 and float64"),
    (LSTMCell, GPU, "stepper", "this is cuda"),
    (ElmanReLUCell, cpu(), "stepper", "ElmanReLUCell has no code in the C++ decision loop"),
    (ToyCell, cpu(), "stepper", "ToyCell has no code"),
])
def test_the_decision_path_for_each_situation(cell, machine, path, says):
    choice = paths.decision(machine, Network(cell, 64))
    assert choice.path == path and says in choice.reason, choice


def test_graphs_only_on_a_gpu_for_enough_steps_or_a_kept_step():
    assert paths.stepping(cpu(), 1000).path == "eager"
    assert paths.stepping(cpu(), 1000, kept=True).path == "eager"
    assert paths.stepping(GPU, paths.GRAPH_FROM).path == "graph"
    assert paths.stepping(GPU, paths.GRAPH_FROM - 1) == Choice("eager", "31 steps: a capture costs a few; graphs from 32")
    assert paths.stepping(GPU, 1, kept=True).path == "graph"


def test_sampling_takes_the_kernel_for_argmax_and_plain_draws_only():
    net = Network(LSTMCell, 64, 2, streams=3)
    assert paths.sampling(cpu(), net, "argmax", 100).path == "kernel"
    assert paths.sampling(cpu(), net, "sample", 100).path == "kernel"
    filtered = paths.sampling(cpu(), net, "filtered", 100)
    assert filtered.path == "eager" and "not top-k or top-p" in filtered.reason
    assert paths.sampling(cpu(kernels=False), net, "sample", 100).path == "eager"
    assert paths.sampling(GPU, net, "sample", 100).path == "graph"
    assert paths.sampling(cpu(), Network(ToyCell, 8), "argmax", 100).path == "eager"
    with pytest.raises(ValueError, match="sampler must be one of"):
        paths.sampling(cpu(), net, "nucleus", 100)


@pytest.mark.parametrize("machine, rows, numel, onednn, path", [
    (cpu(), 4, 1 << 19, None, "onednn"),
    (cpu(), 3, 1 << 19, None, "addmm-halves"),  # too few rows for oneDNN's fixed cost
    (cpu(), 64, (1 << 19) - 1, None, "addmm"),  # too small a matrix
    (cpu(), 1, 16, True, "onednn"),  # asked for
    (cpu(), 64, 1 << 22, False, "addmm"),
    (cpu(onednn=False), 64, 1 << 22, None, "addmm"),  # the guard failed or oneDNN is off
    (cpu(onednn=False), 8, 1 << 22, None, "addmm-halves"),
    (cpu(torch.float64), 64, 1 << 22, True, "addmm"),
    (GPU, 1, 1 << 22, True, "addmm"),  # a GPU runs one product on all its cores: never halves
])
def test_the_linear_product_for_each_situation(machine, rows, numel, onednn, path):
    assert paths.linear(machine, rows, numel, onednn).path == path


def test_the_reasons_name_the_cause():
    assert "float32 on the CPU, not torch.float64 on cpu" in paths.linear(cpu(torch.float64), 64, 1 << 22).reason
    assert "unusable here" in paths.linear(cpu(onednn=False), 64, 1 << 22).reason
    assert "addmm measured faster below 4 rows" in paths.linear(cpu(), 1, 1 << 22).reason
    assert "two column halves" in paths.linear(cpu(), 1, 1 << 22).reason


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags, 2.13
def test_the_machine_is_read_from_the_process():
    from rnnlab import allocator

    m = Machine.of("cpu", torch.float64)
    assert (m.device, m.dtype, m.kernels) == ("cpu", torch.float64, kernels.available())
    assert m.threads == torch.get_num_threads() and m.large_blocks == allocator.large_blocks_kept()
    with kernels.disabled():
        assert not Machine.of("cpu", torch.float32).kernels
    with torch.backends.mkldnn.flags(enabled=False):
        assert not Machine.of("cpu", torch.float32).onednn
    assert not Machine.of("cuda", torch.float32).kernels  # the C++ loops are for the CPU


def test_explain_gives_every_choice_and_a_first_choice_is_logged(monkeypatch, caplog):
    monkeypatch.setattr(paths, "_said", set())
    with caplog.at_level(logging.DEBUG, logger="rnnlab.nn.paths"):
        out = paths.explain(cpu(), Network(LSTMCell, 512, 2, streams=64))
        paths.explain(cpu(), Network(LSTMCell, 512, 2, streams=64))  # the same choices again: not logged again
    assert out["training (fused path)"].path == "torch-fused"
    assert out["stepper: later layers [W_ih, W_hh]"].path == "onednn"
    lines = [r.getMessage() for r in caplog.records if r.name == "rnnlab.nn.paths"]
    assert "training: torch-fused (512 units: above 128 torch's fused module (oneDNN) measured faster than " \
           "LSTMCell's C++ loop)" in lines
    assert len(lines) == len(set(lines))
    gru = paths.explain(cpu(), Network(GRUCell, 8))  # no packed step: the GRU's reset gate needs W_hn h apart
    assert not any(k.startswith("stepper") for k in gru)


def test_the_command_prints_the_choices_and_refuses_a_bad_size(capsys):
    from rnnlab.cli import main

    assert main(["paths", "--cell", "lstm", "--hidden-size", "512", "--streams", "64"]) == 0
    out = capsys.readouterr().out
    assert "training (fused path): torch-fused (512 units: above 128" in out
    assert out.startswith("machine: cpu, float32, kernels ")
    from rnnlab import allocator

    assert ("large blocks kept" in out) == allocator.large_blocks_kept()  # described as the training commands run
    assert main(["paths", "--cell", "gru", "--hidden-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "rnnlab: error: hidden_size must be >= 1, got 0"


# every caller follows the chooser ------------------------------------------------------------------------------

def _lm(cell: str = "lstm", hidden: int = 8, layers: int = 2) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers, embedding_size=4), 7).eval()


@pytest.mark.parametrize("told", ["sequences", "torch-fused"])
def test_the_stack_takes_the_training_path_it_is_told(told, monkeypatch):
    if told == "sequences" and not kernels.available():
        pytest.skip("the LSTM's recurrence is C++ only")
    stack = _lm("lstm", hidden=200).rnn  # above 128: the chooser alone would say torch-fused
    asked = []
    monkeypatch.setattr(paths, "training", lambda m, n, steps=1: asked.append((m, n, steps)) or Choice(told, "test"))
    taken = []
    for path in ("sequences", "torch_fused"):
        real = getattr(stack, path)
        monkeypatch.setattr(stack, path, lambda x, s, real=real, path=path: taken.append(path) or real(x, s))
    stack(torch.randn(3, 5, 4))
    assert taken == [told.replace("-", "_")]
    (m, n, steps), = asked
    assert (m.device, m.dtype, n.cell, n.hidden_size, n.num_layers, n.streams, steps) == \
        ("cpu", torch.float32, LSTMCell, 200, 2, 3, 5)


def test_the_recurrences_take_the_loop_they_are_told(monkeypatch):
    if not kernels.available():
        pytest.skip("no C++ kernels to decline")
    from torch.profiler import profile

    stack = _lm("gru").rnn

    def ops() -> set[str]:
        with profile() as p:
            stack(torch.randn(2, 3, 4))[0].sum().backward()
        return {e.name for e in p.events() if e.name.startswith("rnnlab::")}

    assert ops() == {"rnnlab::gru_forward", "rnnlab::gru_backward"}
    monkeypatch.setattr(paths, "recurrence_loop", lambda m: Choice("python", "test"))
    assert ops() == set()


def test_self_fed_inputs_and_generate_follow_the_decision(monkeypatch):
    from rnnlab import sampling
    from rnnlab.feeding import own_inputs
    from rnnlab.nn import models

    lm = _lm("lstm")
    x = torch.randint(0, 7, (3, 6))
    deciders = []
    real = models.Decider
    monkeypatch.setattr(models, "Decider", lambda *a: deciders.append(1) or real(*a))
    monkeypatch.setattr(sampling, "Decider", models.Decider)
    monkeypatch.setattr(paths, "decision", lambda m, n: Choice("stepper", "test"))
    assert models.decide_in_kernel(lm, x, lm.initial_state(3), "argmax") is None
    own_inputs(lm, x, lm.initial_state(3), "argmax")
    assert deciders == []
    vocab = Vocab(list("abcdefg"))
    cfg = SampleConfig(prime="ab", length=5, num_samples=2, strategy="argmax", seed=1)
    monkeypatch.setattr(paths, "sampling", lambda m, n, sampler, steps: Choice("eager", "test"))
    stepped = sampling.generate(lm, vocab, cfg)
    assert deciders == []
    if kernels.available():
        monkeypatch.setattr(paths, "sampling", lambda m, n, sampler, steps: Choice("kernel", "test"))
        assert sampling.generate(lm, vocab, cfg) == stepped and deciders == [1]


def test_the_sampler_kind_handed_to_the_chooser(monkeypatch):
    from rnnlab import sampling

    lm = _lm("gru")
    seen = []
    monkeypatch.setattr(paths, "sampling", lambda m, n, sampler, steps: seen.append((sampler, steps, n.streams))
                        or Choice("eager", "test"))
    for strategy, top_k, top_p in (("argmax", 3, 1.0), ("sample", 0, 1.0), ("sample", 3, 1.0), ("sample", 7, 0.9)):
        sampling._kernel_applies(lm, SampleConfig(strategy=strategy, top_k=top_k, top_p=top_p, length=9,
                                                  num_samples=2))
    assert seen == [("argmax", 9, 2), ("sample", 9, 2), ("filtered", 9, 2), ("filtered", 9, 2)]


def test_the_steppers_follow_stepping(monkeypatch):
    from rnnlab import sampling
    from rnnlab.feeding import DecisionSteps
    from rnnlab.nn.graphs import GraphedStep
    from rnnlab.nn.models import Stepper

    lm = _lm("elman")
    assert isinstance(sampling._stepper(lm, 2, 100), Stepper) and isinstance(DecisionSteps().get(lm, 2), Stepper)
    asked = []
    monkeypatch.setattr(paths, "stepping", lambda m, steps=32, kept=False: asked.append((steps, kept))
                        or Choice("graph", "test"))
    assert isinstance(sampling._stepper(lm, 2, 100), GraphedStep)
    assert isinstance(DecisionSteps().get(lm, 2), GraphedStep)
    assert asked == [(100, False), (32, True)]


def test_packed_linear_follows_the_linear_choice(monkeypatch):
    from rnnlab.nn.linear import PackedLinear, onednn_usable

    w, b, x = torch.randn(1024, 512), torch.randn(1024), torch.randn(64, 512)
    monkeypatch.setattr(paths, "linear", lambda m, rows, numel, onednn=None: Choice("addmm", "test"))
    lin = PackedLinear(w, b, 64)
    assert not lin.onednn and lin.weight.shape == (512, 1024)
    assert torch.equal(lin(x), torch.addmm(b, x, w.t().contiguous()))
    monkeypatch.setattr(paths, "linear", lambda m, rows, numel, onednn=None: Choice("addmm-halves", "test"))
    assert PackedLinear(w, b, 64).weight.shape == (2, 512, 512)
    if onednn_usable(w):
        monkeypatch.setattr(paths, "linear", lambda m, rows, numel, onednn=None: Choice("onednn", "test"))
        assert PackedLinear(w[:4, :4], None, 1).onednn  # tiny and one row: the default would not


def test_a_cell_unknown_to_the_fast_paths_trains_and_samples_on_the_reference_paths(monkeypatch):
    """A cell with no hand-written recurrence and no C++ code: torch's module trains it, the packed step samples."""
    from rnnlab import sampling

    monkeypatch.setitem(CELL_TYPES, "toy", ToyCell)
    lm = RNNLanguageModel(ModelConfig(cell="toy", hidden_size=8, num_layers=2, embedding_size=4), 7).eval()
    x = torch.randint(0, 7, (2, 5))
    fused, _ = lm(x)
    unrolled, _ = lm(x, fused=False)
    torch.testing.assert_close(fused, unrolled)
    texts = sampling.generate(lm, Vocab(list("abcdefg")), SampleConfig(prime="a", length=6, strategy="argmax"))
    assert len(texts[0]) == 7 and np.all([c in "abcdefg" for c in texts[0]])
