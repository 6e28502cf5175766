"""Numerical faults: a NaN or Inf in the loss or in a gradient is skipped, counted and logged,
never reaches the weights or the optimiser's state, and a run that cannot recover stops
with one line that names a checkpoint holding the weights from before the bad steps.

tests/test_train.py already checks the basics (two NaN losses skipped and counted, a run of
Inf losses stops with a TrainingError, the checkpoint is finite). Here: what a skipped step
leaves untouched, bit for bit (weights, Adam's moments and step count), non-finite
gradients behind a finite loss (with clipping by norm and by value), the log after a
resume, and the command line.

Faults are injected in-process by wrapping the language model's job (no hook in the
library): chosen batches give a NaN/Inf loss, or put a NaN/Inf into one element of the
decoder's gradient through a tensor hook, the loss staying finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import rnnlab.engine as engine
import rnnlab.train as tr
from rnnlab.checkpoint import load_checkpoint
from rnnlab.cli import main
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from rnnlab.errors import TrainingError

KINDS = ("nan-loss", "inf-loss", "nan-grad", "inf-grad")
TIMING = ("elapsed", "chars_per_sec")
REAL_LOSS, REAL_OPTIMIZER = tr.LanguageModelJob.train_loss, engine.make_optimizer  # before any test wraps them


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()  # --threads 1 sets it for the whole process
    yield
    torch.set_num_threads(threads)


def _cfg(data: Path, out: Path, **train_kw: Any) -> RunConfig:
    tk: dict[str, Any] = dict(batch_size=4, seq_len=16, max_steps=12, eval_interval=6, log_interval=1, seed=5,
                              out=str(out), threads=1)
    tk.update(train_kw)
    return RunConfig(data=DataConfig(data=str(data)),
                     model=ModelConfig(cell="gru", hidden_size=16, num_layers=1, dropout=0.1, embedding_size=8),
                     optim=OptimConfig(lr=1e-2, lr_schedule="constant"), train=TrainConfig(**tk))


class _Killed(BaseException):
    """Stands for SIGKILL: escapes everything, so nothing after it is written."""


class Injector:
    """Wraps ``LanguageModelJob.train_loss``: batches (epoch, index) in ``bad`` go wrong as their kind says.

    Before every batch it snapshots the weights and the optimiser state, so a test can
    see what a step changed; ``kill_at`` (a batch) raises :class:`_Killed` instead of training it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bad: dict[tuple[int, int], str],
                 kill_at: tuple[int, int] | None = None):
        self.bad, self.kill_at = bad, kill_at
        self.snapshots: list[tuple[tuple[int, int], dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._handles: list[Any] = []
        real_loss, real_opt = REAL_LOSS, REAL_OPTIMIZER

        def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
            self.optimizer = real_opt(model, cfg)
            return self.optimizer

        def train_loss(job: Any, epoch: int, index: int) -> tuple[torch.Tensor, int, dict[str, float]]:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self.model = job.model
            if (epoch, index) == self.kill_at:
                raise _Killed
            self.snapshots.append(((epoch, index), self.weights(), self.optim_state()))
            loss, items, extra = real_loss(job, epoch, index)
            kind = self.bad.get((epoch, index))
            if kind in ("nan-loss", "inf-loss"):
                loss = loss * float("nan" if kind == "nan-loss" else "inf")
            elif kind in ("nan-grad", "inf-grad"):
                bad_value = float("nan" if kind == "nan-grad" else "inf")

                def poison(g: torch.Tensor) -> torch.Tensor:
                    g = g.clone()
                    g.view(-1)[3] = bad_value  # one element of one gradient; the loss stays finite
                    return g

                self._handles.append(job.model.decoder.weight.register_hook(poison))
            return loss, items, extra

        monkeypatch.setattr(tr.LanguageModelJob, "train_loss", train_loss)
        monkeypatch.setattr(engine, "make_optimizer", make_optimizer)  # where every run makes its optimiser

    def weights(self) -> dict[str, torch.Tensor]:
        assert self.model is not None
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def optim_state(self) -> dict[str, torch.Tensor]:
        assert self.optimizer is not None
        return {f"{i}.{k}": torch.as_tensor(v).clone() for i, st in self.optimizer.state_dict()["state"].items()
                for k, v in st.items()}

    def after(self, batch: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Weights and optimiser state once ``batch`` was dealt with (the snapshot before the next one)."""
        i = [b for b, _, _ in self.snapshots].index(batch)
        _, w, o = self.snapshots[i + 1]
        return w, o

    def before(self, batch: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        _, w, o = next(s for s in self.snapshots if s[0] == batch)
        return w, o


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _exp_avgs(state: dict[str, torch.Tensor]) -> Iterator[torch.Tensor]:
    return (v for k, v in state.items() if k.endswith(("exp_avg", "exp_avg_sq")))


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_step_is_skipped_counted_and_leaves_weights_and_adam_untouched(corpus_file, tmp_path, monkeypatch,
                                                                           kind):
    out = tmp_path / kind
    inj = Injector(monkeypatch, {(0, 3): kind, (0, 6): kind})
    s = tr.train(_cfg(corpus_file, out), progress=False)
    assert s["steps"] == 12 and s["skipped_steps"] == 2 and s["stopped"] == "max_steps"
    for batch in ((0, 3), (0, 6)):  # neither the weights nor Adam's moments or step count moved
        w0, o0 = inj.before(batch)
        w1, o1 = inj.after(batch)
        assert _same(w0, w1) and _same(o0, o1), batch
    w0, o0 = inj.before((0, 4))  # ... while a good step moves both (so the comparison above can fail)
    w1, o1 = inj.after((0, 4))
    assert not _same(w0, w1) and not _same(o0, o1)
    assert all(torch.isfinite(v).all() for v in _exp_avgs(inj.optim_state()))
    assert all(torch.isfinite(v).all() for v in inj.weights().values())
    rows = _rows(out)
    skipped = [r for r in rows if r.get("skipped")]
    # batch 3 came after 3 good steps, batch 6 after 5 (3 good, 1 skipped, 2 good)
    assert [r["step"] for r in skipped] == [3, 5]
    key = "loss" if kind.endswith("loss") else "grad_norm"
    assert all(r[key] is None for r in skipped)  # jsonio writes a non-finite number as null
    assert [r["step"] for r in rows if r["split"] == "train" and not r.get("skipped")] == list(range(1, 13))
    ck = load_checkpoint(out, prefer="last.safetensors")
    assert ck.train_state["skipped"] == 2


def test_clipping_by_value_does_not_hide_an_infinite_gradient(corpus_file, tmp_path, monkeypatch):
    """Clamping to [-v, v] turns an Inf into v: judged after it, the step would be taken with a
    made-up gradient. The loop must see the Inf before clipping."""
    out = tmp_path / "clipv"
    inj = Injector(monkeypatch, {(0, 3): "inf-grad"})
    cfg = _cfg(corpus_file, out, max_steps=6)
    cfg.optim.clip_value = 0.5
    s = tr.train(cfg, progress=False)
    assert s["skipped_steps"] == 1 and s["steps"] == 6
    w0, o0 = inj.before((0, 3))
    w1, o1 = inj.after((0, 3))
    assert _same(w0, w1) and _same(o0, o1)
    skipped = [r for r in _rows(out) if r.get("skipped")]
    assert len(skipped) == 1 and skipped[0]["grad_norm"] is None  # the norm logged is the one that was infinite


def test_too_many_bad_steps_stop_on_a_checkpoint_with_the_weights_from_before(corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "stop"
    bad = {(0, i): "inf-grad" for i in range(13, 40)}  # from the batch after the step-12 checkpoint on
    bad[(0, 4)] = "nan-loss"  # one isolated bad step earlier, which the run survives
    inj = Injector(monkeypatch, bad)
    with pytest.raises(TrainingError) as e:
        tr.train(_cfg(corpus_file, out, max_steps=40, max_bad_steps=3), progress=False)
    msg = str(e.value)
    assert "non-finite for 3 steps in a row" in msg and f"last good checkpoint is {out / 'last.safetensors'}" in msg
    assert "\n" not in msg
    ck = load_checkpoint(out / "last.safetensors")
    assert ck.train_state["step"] == 12 and ck.train_state["skipped"] == 1  # 13 batches, one of them skipped
    # the checkpoint holds exactly the weights and optimiser state the bad steps found, and they are finite
    assert _same(ck.model_state(), inj.weights())
    ck_opt = {f"{i}.{k}": torch.as_tensor(v) for i, st in ck.optimizer_state()["state"].items() for k, v in st.items()}
    assert _same(ck_opt, inj.optim_state())
    assert _same(ck.model_state(), inj.before((0, 13))[0])
    assert all(torch.isfinite(v).all() for v in _exp_avgs(ck_opt))
    assert all(torch.isfinite(v).all() for v in ck.model_state().values())
    skipped = [r for r in _rows(out) if r.get("skipped")]
    assert [r["step"] for r in skipped] == [4, 12, 12, 12]
    # the checkpoint it names resumes (and, the run being deterministic, fails again the same way; the log
    # keeps the skips its checkpoint counted and those of this attempt, not those of the one before)
    with pytest.raises(TrainingError):
        tr.train(_cfg(corpus_file, out, max_steps=40, max_bad_steps=3, resume=True), progress=False)
    assert load_checkpoint(out / "last.safetensors").train_state["step"] == 12
    assert [r["step"] for r in _rows(out) if r.get("skipped")] == [4, 12, 12, 12]


def test_a_skipped_step_is_logged_once_across_a_kill_and_resume(corpus_file, tmp_path, monkeypatch):
    """A NaN batch right after a checkpoint, then a kill: the resumed run meets the same batch again
    (it is deterministic) and must not log its skip a second time."""
    bad = {(0, 6): "nan-loss"}  # the batch after the step-6 checkpoint
    Injector(monkeypatch, bad)
    tr.train(_cfg(corpus_file, tmp_path / "whole"), progress=False)
    Injector(monkeypatch, bad, kill_at=(0, 9))
    with pytest.raises(_Killed):
        tr.train(_cfg(corpus_file, tmp_path / "cut"), progress=False)
    assert [r["step"] for r in _rows(tmp_path / "cut") if r.get("skipped")] == [6]
    Injector(monkeypatch, bad)
    s = tr.train(_cfg(corpus_file, tmp_path / "cut", resume=True), progress=False)
    assert s["skipped_steps"] == 1 and s["steps"] == 12

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert strip(_rows(tmp_path / "cut")) == strip(_rows(tmp_path / "whole"))
    a, b = (load_checkpoint(tmp_path / n / "last.safetensors").model_state() for n in ("whole", "cut"))
    assert _same(a, b)


def _argv(corpus: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--data", str(corpus), "--cell", "gru", "--hidden-size", "16", "--num-layers", "1",
            "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16", "--max-steps", str(steps),
            "--eval-interval", "5", "--log-interval", "1", "--lr-schedule", "constant", "--seed", "2",
            "--threads", "1", "--out", str(out), "--quiet", *extra]


def test_the_command_line_reports_skipped_steps_in_its_summary(corpus_file, tmp_path, monkeypatch, capsys):
    Injector(monkeypatch, {(0, 2): "nan-loss", (0, 7): "inf-grad"})
    assert main(_argv(corpus_file, tmp_path / "r", 8)) == 0
    cap = capsys.readouterr()
    assert "skipped_steps: 2" in cap.out
    assert cap.out.count("step skipped") == 2  # one note per skipped step, while it trains
    assert "Traceback" not in cap.err


def test_the_command_line_stops_a_hopeless_run_with_one_line(corpus_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    Injector(monkeypatch, {(0, i): "nan-loss" for i in range(7, 50)})
    code = main(_argv(corpus_file, out, 50, "--max-bad-steps", "4"))
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("rnnlab: error: the loss or gradient was non-finite for 4 steps in a row")
    assert str(out / "last.safetensors") in lines[0]
    ck = load_checkpoint(out / "last.safetensors")
    assert ck.train_state["step"] == 5 and all(torch.isfinite(v).all() for v in ck.model_state().values())
    assert math.isfinite(ck.train_state["best_val"])


def test_a_learning_rate_beyond_float32_is_refused_with_one_line(corpus_file, tmp_path, capsys):
    assert main(_argv(corpus_file, tmp_path / "r", 3, "--lr", "1e39")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "lr" in err
