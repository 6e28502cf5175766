"""Many processes with torchrun: 2 CPU ranks (gloo) train as 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.errors import ConfigError

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")

ARGS = ["--cell", "lstm", "--hidden-size", "32", "--num-layers", "2", "--batch-size", "8", "--seq-len", "16",
        "--eval-interval", "10", "--dropout", "0", "--seed", "3", "--quiet",
        "--lr-schedule", "constant"]  # a cosine horizon is fixed when a run starts: a resumed run would differ


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rnd = random.Random(0)
    p = tmp_path_factory.mktemp("ddp") / "c.txt"
    p.write_text("".join(rnd.choice("abcdefgh \n") for _ in range(40_000)), encoding="utf-8")
    return p


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(corpus: Path, out: Path, steps: int, nproc: int = 1, resume: bool = False, cell: str = "lstm",
           extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    args = [cell if a == "lstm" else a for a in ARGS]
    cmd = [sys.executable, "-m", "rnnlab", "train", "--data", str(corpus), "--out", str(out),
           "--max-steps", str(steps), *args, *extra, *(["--resume"] if resume else [])]
    if nproc > 1:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "rnnlab"]
    else:
        cmd += ["--threads", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def train(corpus: Path, out: Path, steps: int, nproc: int = 1, resume: bool = False, cell: str = "lstm",
          extra: tuple[str, ...] = ()) -> None:
    r = launch(corpus, out, steps, nproc, resume, cell, extra)
    assert r.returncode == 0, r.stderr[-3000:]


def train_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def assert_same_run(a: Path, b: Path, atol: float = 2e-5) -> None:
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.allclose(wa[k].double(), wb[k].double(), atol=atol, rtol=1e-4), k
    assert train_losses(a) == pytest.approx(train_losses(b), rel=1e-5)


@pytest.fixture(scope="module")
def one_process(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    train(corpus, out, 40)
    return out


def test_two_processes_train_as_one_with_the_same_global_batch(corpus, one_process, tmp_path):
    two = tmp_path / "two"
    train(corpus, two, 40, nproc=2)
    assert_same_run(one_process, two)
    # rank 0 alone logs: one row per step and evaluation, as in one process
    assert len((two / "metrics.jsonl").read_text().splitlines()) == \
        len((one_process / "metrics.jsonl").read_text().splitlines())
    # the carried state of all 8 streams is in the checkpoint, not just rank 0's 4
    assert load_file(str(two / "last.safetensors"))["carry.0.0"].shape == (8, 32)


def test_two_processes_train_as_one_through_the_hand_written_gru(corpus, tmp_path):
    """DistributedDataParallel's gradient hooks see the hand-written recurrence's gradients as any other."""
    one, two = tmp_path / "one", tmp_path / "two"
    train(corpus, one, 20, cell="gru")
    train(corpus, two, 20, nproc=2, cell="gru")
    assert json.loads((one / "config.json").read_text())["model"]["cell"] == "gru"
    assert_same_run(one, two)


PROFESSOR = ("--feeding", "professor", "--model-token", "argmax", "--band-low", "0", "--band-high", "1",
             "--disc-hidden", "16", "--log-interval", "1")


def test_professor_forcing_in_two_processes_trains_as_one(corpus, tmp_path):
    """The discriminator is a second network with its own optimiser, trained inside the language model's
    forward: it starts from rank 0's weights and its gradients, loss and accuracy are averaged over ranks, so
    the language model, the discriminator, its Adam state, the gate (always on here: band 0..1) and the logged
    numbers all equal one process's with the same global batch (argmax tokens: no draws to differ)."""
    one, two = tmp_path / "one", tmp_path / "two"
    train(corpus, one, 12, extra=PROFESSOR)
    train(corpus, two, 12, nproc=2, extra=PROFESSOR)
    weights = load_file(str(two / "last.safetensors"))
    assert any(k.startswith("feeding.discriminator.") for k in weights)  # D and its optimiser: compared too
    assert_same_run(one, two)
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two)]
    for a, b in zip(*rows):
        if a["split"] == "train":
            for key in ("d_acc", "d_batch_acc", "d_loss", "adv", "free_nll", "adv_on"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert rows[1][-2]["adv_on"] == 1.0 and 0.0 < rows[1][-2]["d_acc"] < 1.0


def test_a_two_process_run_resumes_in_one_process(corpus, one_process, tmp_path):
    run = tmp_path / "run"
    train(corpus, run, 20, nproc=2)
    train(corpus, run, 40, resume=True)
    assert_same_run(one_process, run)


def test_two_processes_with_resume_start_a_run_that_has_no_checkpoint_yet(corpus, one_process, tmp_path):
    """An elastic restart repeats the line with --resume: in a folder holding only the config.json of a run
    killed before its first checkpoint, rank 0 decides to start, says so once, and both ranks start."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((one_process / "config.json").read_bytes())
    r = launch(corpus, run, 40, nproc=2, resume=True, extra=("--checkpoint-interval-s", "0.000001"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("holds no checkpoint yet; the run starts from the beginning") == 1
    assert_same_run(one_process, run)  # checkpoints by time every step, agreed on: the same run


def test_two_processes_with_resume_refuse_a_run_without_checkpoint_whose_settings_differ(corpus, one_process,
                                                                                        tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((one_process / "config.json").read_bytes())
    r = launch(corpus, run, 40, nproc=2, resume=True, extra=("--lr", "0.5"))
    assert r.returncode != 0
    assert "--resume continues the run with its own settings" in r.stderr and "lr: the run has" in r.stderr
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_world_size_must_divide_the_batch(monkeypatch, tmp_path, corpus):
    from rnnlab.train import train as train_lm

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    cfg = RunConfig(data=DataConfig(data=str(corpus)), model=ModelConfig(hidden_size=8),
                    train=TrainConfig(batch_size=8, seq_len=8, max_steps=1, out=str(tmp_path / "r")))
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        train_lm(cfg)
    assert not (tmp_path / "r").exists()


def test_one_process_jobs_refuse_torchrun(monkeypatch, tmp_path):
    from rnnlab.classify import train_classifier
    from rnnlab.config import ClassifyDataConfig, ClassifyRunConfig

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = ClassifyRunConfig(data=ClassifyDataConfig(builtin="digits"))
    cfg.train.out, cfg.train.max_steps = str(tmp_path / "c"), 1
    with pytest.raises(ConfigError, match="trains in one process"):
        train_classifier(cfg)
