"""Everything on a CUDA GPU (``--device cuda``). Skipped on a machine without one, as in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.checkpoint import load_checkpoint, load_model
from rnnlab.config import (
    ClassifyRunConfig,
    DataConfig,
    FeedingConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from rnnlab.evaluate import evaluate_text
from rnnlab.train import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TEXT = ("the quick brown fox jumps over the lazy dog.\n" * 30 + "pack my box with five dozen liquor jugs.\n" * 30)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("gpu") / "c.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _cfg(corpus: Path, out: Path, cell: str = "lstm", feeding: str = "teacher", device: str = "cuda",
         steps: int = 30, resume: bool = False) -> RunConfig:
    return RunConfig(data=DataConfig(data=str(corpus)),
                     model=ModelConfig(cell=cell, hidden_size=48, num_layers=2, dropout=0.0),
                     feeding=FeedingConfig(feeding=feeding), optim=OptimConfig(lr=3e-3, lr_schedule="constant"),
                     train=TrainConfig(batch_size=8, seq_len=32, max_steps=steps, eval_interval=10, seed=0,
                                       out=str(out), device=device, resume=resume))


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_every_cell_trains_on_the_gpu_and_its_checkpoint_scores_the_same_on_the_cpu(corpus, tmp_path, cell):
    s = train(_cfg(corpus, tmp_path / cell, cell), progress=False)
    assert s["val_bpc"] < np.log2(s["vocab_size"]) - 1.0  # learning, not just running (uniform: log2 V bits)
    ckpt = load_checkpoint(tmp_path / cell / "last.safetensors")
    assert all(t.device.type == "cpu" for t in ckpt.model_state().values())  # checkpoints are device-free
    model, vocab, _ = load_model(tmp_path / cell / "last.safetensors")
    cpu = evaluate_text(model, vocab, TEXT[-400:])["loss"]
    gpu = evaluate_text(model.to("cuda"), vocab, TEXT[-400:])["loss"]
    assert gpu == pytest.approx(cpu, rel=1e-4)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_the_graphed_step_replays_exactly_the_eager_step(cell, batch):
    """The CUDA graph holds the same kernels on the same data: logits and state equal the eager Stepper's,
    step after step, with the state carried in the graph's buffers and, midway, a state from elsewhere."""
    from rnnlab.nn.graphs import GraphedStep
    from rnnlab.nn.models import RNNLanguageModel

    torch.manual_seed(0)
    m = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=64, num_layers=2), 11).cuda().eval()
    eager, graphed = m.stepper(batch), GraphedStep(m.stepper(batch))
    s1 = s2 = tuple(tuple(torch.randn_like(t) for t in layer) for layer in m.initial_state(batch))
    for t in range(12):
        tok = torch.randint(0, 11, (batch,), device="cuda")
        if t == 6:  # a state that is not the graph's own: copied in
            s1 = s2 = tuple(tuple(torch.randn_like(x) for x in layer) for layer in s1)
        a, s1 = eager(tok, s1)
        b, s2 = graphed(tok, s2)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        for x, y in zip(sum(s1, ()), sum(s2, ())):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)
    assert not graphed.eager and list(graphed._graphs) == [batch]


@pytest.mark.parametrize("strategy", ["sample", "argmax", "beam"])
def test_sampling_on_the_gpu_with_graphs_writes_what_the_eager_step_writes(strategy, monkeypatch):
    from rnnlab import sampling
    from rnnlab.config import SampleConfig
    from rnnlab.data.vocab import Vocab
    from rnnlab.nn.models import RNNLanguageModel

    torch.manual_seed(0)
    vocab = Vocab(list("abcdefgh "))
    m = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=64, num_layers=2), len(vocab.symbols)).cuda()
    cfg = SampleConfig(prime="abc", length=60, num_samples=3 if strategy != "beam" else 1, seed=4,
                       strategy=strategy, beam_width=4)
    graphed = sampling.generate(m, vocab, cfg)
    monkeypatch.setattr(sampling, "_stepper", lambda model, streams, steps=0: model.stepper(streams))
    assert sampling.generate(m, vocab, cfg) == graphed


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("mode", ["sample", "argmax"])
def test_decisions_from_the_kept_graph_follow_the_changing_weights(cell, mode):
    """own_inputs through DecisionSteps (a CUDA graph kept across batches, its weights refreshed) decides
    what a fresh eager Stepper (no ``steps``) decides, batch after batch, while the weights change."""
    from rnnlab.feeding import DecisionSteps, own_inputs
    from rnnlab.nn.models import RNNLanguageModel

    torch.manual_seed(0)
    m = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=32, num_layers=2), 9).cuda()
    steps = DecisionSteps()
    for batch in range(3):
        x = torch.randint(0, 9, (5, 12), device="cuda")
        state = tuple(tuple(torch.randn_like(t) for t in layer) for layer in m.initial_state(5))
        truth = torch.rand(5, 11, device="cuda") < 0.3
        kept = own_inputs(m, x, state, mode, torch.Generator("cuda").manual_seed(batch), truth, steps=steps)
        fresh = own_inputs(m, x, state, mode, torch.Generator("cuda").manual_seed(batch), truth)
        assert torch.equal(kept, fresh)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
    assert len(steps._steps) == 1  # one graph, refreshed twice


@pytest.mark.parametrize("feeding", ["free-raw", "free-sample", "scheduled", "professor"])
def test_every_feeding_strategy_runs_on_the_gpu(corpus, tmp_path, feeding):
    s = train(_cfg(corpus, tmp_path / feeding, "gru", feeding, steps=6), progress=False)
    assert s["steps"] == 6 and s["skipped_steps"] == 0 and np.isfinite(s["val_loss"])


def test_a_gpu_run_resumes_on_the_cpu(corpus, tmp_path):
    run = tmp_path / "run"
    train(_cfg(corpus, run, steps=10), progress=False)
    s = train(_cfg(corpus, run, device="cpu", steps=20, resume=True), progress=False)
    assert s["steps"] == 20 and np.isfinite(s["val_loss"])


def test_the_fused_path_on_the_gpu_equals_the_unroller():
    from rnnlab.nn.stack import RecurrentStack

    torch.manual_seed(0)
    for cell in ("elman", "lstm", "gru"):
        stack = RecurrentStack(cell, 16, 32, 2).cuda().double()
        x = torch.randn(4, 17, 16, device="cuda", dtype=torch.float64)  # (B, T, I)
        state = stack.initial_state(4, x.device, x.dtype)
        runs = []
        for fused in (True, False):
            stack.zero_grad()
            out, st = stack(x, state, fused=fused)
            out.square().sum().backward()  # the gradients too (cuDNN's backward)
            runs.append([out.detach(), *(t.detach() for layer in st for t in layer),
                         *(p.grad.clone() for p in stack.parameters())])
        for a, b in zip(*runs):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_the_classifier_trains_on_the_gpu(tmp_path):
    from rnnlab.classify import train_classifier

    cfg = ClassifyRunConfig()
    cfg.data.builtin = "digits"
    cfg.model = ModelConfig(cell="gru", hidden_size=64, num_layers=1, dropout=0.0)
    cfg.train.max_steps, cfg.train.eval_interval, cfg.train.device = 150, 150, "cuda"
    cfg.train.out = str(tmp_path / "digits")
    s = train_classifier(cfg, progress=False)
    assert s["test_acc"] > 0.8


def test_the_command_line_samples_on_the_gpu(corpus, tmp_path):
    train(_cfg(corpus, tmp_path / "run", steps=40), progress=False)
    env = {**os.environ}
    out = {}
    for device in ("cpu", "cuda"):
        r = subprocess.run([sys.executable, "-m", "rnnlab", "sample", str(tmp_path / "run"), "--device", device,
                            "--prime", "the ", "--length", "40", "--strategy", "argmax"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        out[device] = r.stdout
    assert out["cuda"].startswith("the ") and len(out["cuda"]) > 40
    # greedy decoding of a trained model: the same text on both devices unless two logits tie to 1e-6
    assert out["cuda"][:20] == out["cpu"][:20]


def test_batched_streams_on_the_gpu_write_what_generate_writes():
    """The server's scheduler on a GPU (a CUDA graph per batch size): streams joining and leaving, each the text
    rnnlab.sampling.generate writes with its seed there (at most one draw within rounding of a boundary)."""
    from rnnlab.config import SampleConfig
    from rnnlab.data.vocab import Vocab
    from rnnlab.nn.models import RNNLanguageModel
    from rnnlab.sampling import encode_prime, generate
    from rnnlab.scheduler import Scheduler, Stream

    vocab = Vocab.from_text(TEXT)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=64, num_layers=2, dropout=0.0), len(vocab)).cuda()
    model.eval()

    class Kept(Stream):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.tokens: list[int] = []

        def deliver(self, token: int, probs: np.ndarray) -> None:
            self.tokens.append(token)

    sch = Scheduler(model, start=False)
    specs = [("the ", 40 + 9 * k, k, {"temperature": 0.7 + 0.1 * k}) for k in range(6)]
    streams = [Kept(encode_prime(vocab, p), n, seed=s, **kw) for p, n, s, kw in specs]
    for r in range(200):
        if r < len(streams):
            sch.add(streams[r])  # one joins each round, while the others advance
        sch.round()
    assert all(len(s.tokens) == n for s, (_, n, _, _) in zip(streams, specs))
    differ = sum("the " + vocab.decode(s.tokens) != generate(model, vocab, SampleConfig(prime=p, length=n, seed=sd,
                                                                                          **kw))[0]
                 for s, (p, n, sd, kw) in zip(streams, specs))
    assert differ <= 1
