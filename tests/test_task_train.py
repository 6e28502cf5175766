"""Long-memory tasks trained with the shared loop: the model's outputs and losses, the data, solving
the adding problem, learning temporal order, the cures, exact resume, checkpoints and bad configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TickClock

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import ModelConfig
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.task_train import (TaskJob, TaskModel, TaskRunConfig, build_task_model, load_task_checkpoint,
                               resume_task_config, train_task)
from rnnlab.tasks import make_task


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second intra-op thread only adds synchronisation (and stalls on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(tmp_path, name: str = "adding", length: int = 10, cell: str = "lstm", hidden: int = 16, **train) -> TaskRunConfig:
    cfg = TaskRunConfig()
    cfg.task.name, cfg.task.length, cfg.task.val_size, cfg.task.train_size = name, length, 200, 1000
    cfg.model = ModelConfig(cell=cell, hidden_size=hidden, num_layers=1, dropout=0.0, input="onehot")
    cfg.optim.lr = 1e-2
    cfg.task.stop_on_success = False  # the tests below that want it turn it on
    cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.out = 32, 100, str(tmp_path / "run")
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _rows(cfg: TaskRunConfig, split: str) -> list[dict]:
    lines = (json.loads(line) for line in open(f"{cfg.train.out}/metrics.jsonl", encoding="utf-8"))
    return [r for r in lines if r["split"] == split]


# the model --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["adding", "copy", "temporal-order"])
@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_outputs_have_the_task_shapes_and_both_paths_agree(name, cell):
    task = make_task(name, 10, **({"copy_len": 3, "symbols": 4} if name == "copy" else {}))
    torch.manual_seed(0)
    model = TaskModel(ModelConfig(cell=cell, hidden_size=6, num_layers=2, dropout=0.0, input="onehot"), task).double()
    x, y = task.generate(5, 1)
    out = model(torch.from_numpy(x))
    expected = {"adding": (5,), "temporal-order": (5, 4), "copy": (5, 10 + 2 * 3, 5)}[name]
    assert tuple(out.shape) == expected
    stepped, hs = model.forward_steps(torch.from_numpy(x))
    assert len(hs) == x.shape[1] and tuple(hs[0].shape) == (5, 6)
    assert torch.allclose(stepped, out, atol=1e-12)  # the unrolled path computes the fused path's function
    # the training loss is the task's own metric (its numpy oracle) on the same outputs
    loss = model.loss(out, torch.from_numpy(y))
    assert loss.item() == pytest.approx(task.score(out.detach().numpy(), y), rel=1e-10)


def test_an_embedding_input_for_ids():
    task = make_task("copy", 5)
    model = TaskModel(ModelConfig(cell="gru", hidden_size=4, num_layers=1, dropout=0.0, input="embedding",
                                  embedding_size=3), task)
    assert model.embedding is not None and model.rnn.cells[0].input_size == 3
    assert tuple(model(torch.from_numpy(task.generate(2, 0)[0])).shape) == (2, 5 + 20, 9)


# the data -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fresh", [True, False])
def test_batches_are_a_pure_function_of_data_seed_epoch_and_index(tmp_path, fresh):
    cfg = _cfg(tmp_path, "temporal-order", 12)
    cfg.task.fresh, cfg.task.train_size = fresh, 96
    task = cfg.task.make()
    one, two = (TaskJob(cfg, TaskModel(cfg.model, task), task, torch.device("cpu")) for _ in range(2))
    two.start_epoch(0)
    two.batch(0, 1)  # another history: the batch does not depend on it
    a, b = one.batch(1, 2), two.batch(1, 2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(one.batch(1, 1)[0], a[0]) and not np.array_equal(one.batch(0, 2)[0], a[0])
    assert one.batches_per_epoch == 3 and a[0].shape == (32, 12)
    assert not np.array_equal(one.val_x[:32], a[0])
    cfg.task.data_seed = 1
    other = TaskJob(cfg, TaskModel(cfg.model, task), task, torch.device("cpu"))
    assert not np.array_equal(other.batch(1, 2)[0], a[0]) and not np.array_equal(other.val_x, one.val_x)
    if not fresh:  # a fixed set: each epoch is a permutation of the same training sequences
        epoch = np.concatenate([one.batch(4, i)[0] for i in range(3)])
        assert sorted(map(bytes, epoch)) == sorted(map(bytes, one.train_x))


# learning ---------------------------------------------------------------------------------------

def test_an_lstm_solves_the_adding_problem_at_t10(tmp_path):
    cfg = _cfg(tmp_path, "adding", 10, hidden=32, max_steps=400, eval_interval=400)
    cfg.train.batch_size, cfg.task.val_size = 50, 500
    s = train_task(cfg, progress=False)
    assert s["stopped"] == "max_steps" and s["steps"] == 400
    assert s["baseline"] == pytest.approx(1 / 6) and s["success_threshold"] == pytest.approx(1 / 60)
    assert s["val_loss"] < s["success_threshold"] and s["val_ratio"] < 0.1  # about 0.002 in practice
    assert s["success"] is True and s["val_success"] == 1.0 and s["best_success"] is True
    assert (tmp_path / "run" / "curves.png").exists() and json.loads((tmp_path / "run" / "task.json").read_text())["name"] == "adding"


def test_stop_on_success_stops_at_the_first_evaluation_past_the_threshold(tmp_path):
    cfg = _cfg(tmp_path, "adding", 10, hidden=32, max_steps=2000, eval_interval=25)
    cfg.train.batch_size, cfg.task.val_size, cfg.task.stop_on_success = 50, 500, True
    s = train_task(cfg, progress=False)
    rows = _rows(cfg, "val")
    solved = [r for r in rows if r["success"] == 1.0]
    assert s["stopped"] == "success" and s["success"] is True
    assert len(solved) == 1 and rows[-1] is solved[0]  # the first success is the last evaluation
    assert all(r["loss"] >= s["success_threshold"] for r in rows[:-1]) and rows[-1]["loss"] < s["success_threshold"]
    assert s["steps"] == s["steps_to_success"] == rows[-1]["step"] < 2000 and s["steps"] % 25 == 0
    assert s["time_to_success_s"] == pytest.approx(rows[-1]["elapsed"], abs=0.01)
    # without it the same run trains on to its step limit, past its first success
    cfg.task.stop_on_success, cfg.train.max_steps, cfg.train.out = False, s["steps"] + 50, str(tmp_path / "on")
    on = train_task(cfg, progress=False)
    assert on["stopped"] == "max_steps" and on["steps"] == s["steps"] + 50
    assert on["steps_to_success"] == s["steps_to_success"]  # the same first success, recorded all the same


def test_a_resumed_stop_on_success_run_ends_where_an_uninterrupted_one_does(tmp_path):
    def cfg(out: str, steps: int) -> TaskRunConfig:
        c = _cfg(tmp_path, "adding", 6, hidden=16, max_steps=steps, eval_interval=10, out=str(tmp_path / out))
        c.task.stop_on_success = True
        return c

    whole = train_task(cfg("whole", 1000), progress=False)
    assert whole["stopped"] == "success" and whole["steps"] > 20
    part = cfg("part", whole["steps"] - 13)  # stopped mid-way between two evaluations, before the success
    assert train_task(part, progress=False)["stopped"] == "max_steps"
    s = train_task(resume_task_config(part.train.out, {"train": {"max_steps": 1000}}), progress=False)
    assert s["stopped"] == "success" and s["steps"] == s["steps_to_success"] == whole["steps"]
    a = load_task_checkpoint(tmp_path / "whole" / "last.safetensors")
    b = load_task_checkpoint(tmp_path / "part" / "last.safetensors")
    for k, v in a.model_state().items():
        assert torch.equal(v, b.model_state()[k]), k
    # resumed once more, a solved run stops at once, where it was
    again = train_task(resume_task_config(part.train.out, {"train": {"max_steps": 1000}}), progress=False)
    assert again["stopped"] == "success" and again["steps"] == whole["steps"]


def test_a_time_budget_alone_trains_to_the_budget(tmp_path, monkeypatch):
    """No hidden step cap: a run given only --time-budget trains until that much (fake) time has passed."""
    from rnnlab import loop

    clock = TickClock(0.5)  # every step measures 0.5 s (no evaluation before the end: they would take 0.5 s too)
    monkeypatch.setattr(loop, "time", clock)
    cfg = _cfg(tmp_path, "adding", 5, hidden=4, eval_interval=10_000)
    cfg.train.max_steps, cfg.train.time_budget = 0, 1500.0  # 3,000 steps: past any old default cap
    s = train_task(cfg, progress=False)
    assert s["stopped"] == "time_budget" and s["steps"] == 3000 and s["elapsed_s"] == pytest.approx(1500.0, abs=1.5)


def test_a_cpu_clock_budget_counts_the_process_cpu_time_not_the_wall_clock(tmp_path, monkeypatch):
    """On a shared machine the wall clock runs on while the process waits: --clock cpu counts what it got."""
    from rnnlab import loop

    class Shared(TickClock):
        def perf_counter(self) -> float:  # the wall clock: 4 s pass for every second of this process's CPU
            self.now += 4 * self.tick
            return self.now

        def process_time(self) -> float:
            self.cpu = getattr(self, "cpu", 0.0) + self.tick
            return self.cpu

    for clock, steps in (("wall", 50), ("cpu", 200)):  # a step measures 2 s of wall time, 0.5 s of CPU time
        monkeypatch.setattr(loop, "time", Shared(0.5))
        cfg = _cfg(tmp_path, "adding", 5, hidden=4, eval_interval=10_000, out=str(tmp_path / clock))
        cfg.train.max_steps, cfg.train.time_budget, cfg.train.clock = 0, 100.0, clock
        s = train_task(cfg, progress=False)
        assert s["stopped"] == "time_budget" and s["steps"] == steps, clock
    bad = _cfg(tmp_path, "adding", 5, max_steps=1, out=str(tmp_path / "bad"))
    bad.train.clock = "sundial"
    with pytest.raises(ConfigError, match="clock must be wall or cpu"):
        train_task(bad, progress=False)


def test_no_stop_condition_trains_for_the_default_budget_and_says_so(tmp_path, monkeypatch):
    from rnnlab import loop
    from rnnlab.task_train import DEFAULT_TIME_BUDGET

    monkeypatch.setattr(loop, "time", TickClock(1.0))
    cfg = _cfg(tmp_path, "adding", 5, hidden=4, eval_interval=1000)
    assert TaskRunConfig().train.max_steps == 0 and TaskRunConfig().train.time_budget == 0  # nothing by default
    cfg.train.max_steps = 0
    with pytest.warns(UserWarning, match=f"no stop condition given: training for at most {DEFAULT_TIME_BUDGET:g} s"):
        s = train_task(cfg, progress=False)
    assert s["stopped"] == "time_budget" and s["steps"] == DEFAULT_TIME_BUDGET
    assert load_task_checkpoint(cfg.train.out).config.train.time_budget == DEFAULT_TIME_BUDGET  # resumes alike


def test_chrono_and_relu_rows_are_task_options(tmp_path):
    cfg = _cfg(tmp_path, "copy", 5, cell="gru", hidden=6)
    cfg.cures.gate_init = "chrono"
    gru = build_task_model(cfg).rnn.cells[0]
    z = gru.bias_ih.detach().view(3, 6)[1]
    assert torch.all((z >= 0) & (z <= math.log(cfg.task.make().sequence_length - 1) + 1e-6))  # T_max = T + 2K = 25
    cfg.cures.chrono_max = 1000
    assert build_task_model(cfg).rnn.cells[0].bias_ih.detach().view(3, 6)[1].max() > math.log(25)
    relu = _cfg(tmp_path, "adding", 8, cell="elman-relu", hidden=6, max_steps=5, eval_interval=5)
    relu.cures.recurrent_init = "identity"  # the IRNN
    relu.optim.lr = 1e-4
    s = train_task(relu, progress=False)
    assert s["cell"] == "elman-relu" and s["steps"] == 5 and math.isfinite(s["val_loss"])
    bad = _cfg(tmp_path, "adding", 8, cell="elman", out=str(tmp_path / "bad"), max_steps=5)
    bad.cures.gate_init = "chrono"
    with pytest.raises(ConfigError, match="an Elman RNN has no gate"):
        train_task(bad, progress=False)
    assert not (tmp_path / "bad").exists()


def test_temporal_order_is_learned_above_chance(tmp_path):
    cfg = _cfg(tmp_path, "temporal-order", 20, cell="gru", max_steps=100, eval_interval=100)
    s = train_task(cfg, progress=False)
    assert s["val_baseline"] == pytest.approx(math.log(4))
    assert s["val_loss"] < 0.5 * math.log(4) and s["val_acc"] > 0.5  # chance: ln 4 nats, 25%


# the cures ----------------------------------------------------------------------------------------

def test_norm_reg_adds_the_logged_penalty_and_the_penalty_falls(tmp_path):
    cfg = _cfg(tmp_path, "adding", 20, cell="elman", max_steps=60, eval_interval=60, log_interval=1)
    cfg.cures.norm_reg = 1.0
    s = train_task(cfg, progress=False)
    rows = _rows(cfg, "train")
    assert s["steps"] == 60 and len(rows) == 60
    for r in rows:  # the logged loss is the task's metric; the objective adds norm_reg times the penalty
        assert r["norm_penalty"] >= 0 and r["objective"] == pytest.approx(r["loss"] + 1.0 * r["norm_penalty"], rel=1e-5)
        assert r["ratio"] == pytest.approx(r["loss"] * 6)
    first, last = rows[0]["norm_penalty"], np.mean([r["norm_penalty"] for r in rows[-10:]])
    assert first > 0.5 and last < first / 5  # the regulariser does its job on the Elman RNN
    plain = _cfg(tmp_path, "adding", 20, cell="elman", max_steps=2, eval_interval=2, out=str(tmp_path / "plain"))
    train_task(plain, progress=False)
    assert all("norm_penalty" not in r and "objective" not in r for r in _rows(plain, "train"))


@pytest.mark.parametrize("scheme", ["orthogonal", "identity"])
def test_recurrent_init_is_applied(tmp_path, scheme):
    cfg = _cfg(tmp_path, "copy", 5, cell="lstm", hidden=6)
    cfg.cures.recurrent_init = scheme
    blocks = build_task_model(cfg).rnn.cells[0].weight_hh.detach().view(4, 6, 6)
    for w in blocks:
        target = torch.eye(6) if scheme == "identity" else w.T @ w
        assert torch.allclose(target, torch.eye(6), atol=1e-5)
    if scheme == "identity":  # and the run trains from it: one step of a tiny learning rate barely moves it
        cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum, cfg.optim.clip_norm = "sgd", 1e-9, 0.0, 0.0
        cfg.train.max_steps, cfg.train.eval_interval = 1, 1
        train_task(cfg, progress=False)
        w = load_task_checkpoint(cfg.train.out).model_state()["rnn.layers.0.weight_hh"].view(4, 6, 6)
        assert torch.allclose(w, torch.eye(6).expand(4, 6, 6), atol=1e-6)
        assert not torch.equal(w, torch.eye(6).expand(4, 6, 6))  # it did train


# resume and checkpoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["fresh-dropout-cosine", "fixed-norm-reg"])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, variant):
    def cfg(out: str, steps: int) -> TaskRunConfig:
        c = _cfg(tmp_path, "temporal-order", 10, cell="gru", hidden=8, max_steps=steps, eval_interval=10,
                 out=str(tmp_path / out))
        c.task.train_size, c.train.batch_size = 64, 16  # 4 batches an epoch: the stop falls mid-epoch
        if variant == "fresh-dropout-cosine":
            c.model.num_layers, c.model.dropout = 2, 0.2  # the RNG state must be restored too
            c.optim.lr_schedule, c.optim.decay_steps = "cosine", 30
        else:
            c.task.fresh, c.cures.norm_reg, c.cures.recurrent_init = False, 0.1, "orthogonal"
        return c

    train_task(cfg("whole", 30), progress=False)
    part = cfg("part", 13)
    train_task(part, progress=False)
    s = train_task(resume_task_config(part.train.out, {"train": {"max_steps": 30}}), progress=False)
    assert s["steps"] == 30
    a, b = load_task_checkpoint(tmp_path / "whole" / "last.safetensors"), load_task_checkpoint(tmp_path / "part" / "last.safetensors")
    for key in ("step", "epoch", "batch", "tokens", "lr_scale", "skipped", "horizon"):
        assert a.train_state[key] == b.train_state[key], key
    for k, v in a.model_state().items():
        assert torch.equal(v, b.model_state()[k]), k
    # the same validation rows, steps 10, 20, 30 (metrics.jsonl was cut back to the checkpoint and continued)
    assert [r["loss"] for r in _rows(a.config, "val")] == [r["loss"] for r in _rows(b.config, "val") if r["step"] != 13]


def test_checkpoints_are_refused_where_they_do_not_belong(tmp_path):
    cfg = _cfg(tmp_path, "adding", 5, hidden=4, max_steps=3, eval_interval=3)
    train_task(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_task(cfg, progress=False)
    with pytest.raises(CheckpointError, match="holds a long-memory task run, not a language model or a classifier; "
                                              "it is read by rnnlab tasks"):
        load_checkpoint(cfg.train.out)  # the language model's and the classifier's loader
    changed = resume_task_config(cfg.train.out, {"optim": {"lr": 0.5}, "train": {"max_steps": 5}})
    with pytest.raises(ConfigError, match="lr: the run has 0.01"):
        train_task(changed, progress=False)
    model = load_task_checkpoint(cfg.train.out).build_model()
    assert isinstance(model, TaskModel) and model.kind == "regression"
    (tmp_path / "lm.safetensors").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="pickle"):
        load_task_checkpoint(tmp_path / "lm.safetensors")


# bad configs --------------------------------------------------------------------------------------

def test_a_bad_config_lists_every_problem(tmp_path):
    cfg = _cfg(tmp_path, "copy", 0, max_steps=10)
    cfg.task.symbols, cfg.task.val_size, cfg.task.train_size = 1, 0, 8
    cfg.cures.norm_reg, cfg.cures.recurrent_init = -1.0, "zeros"
    cfg.model.hidden_size = 0
    with pytest.raises(ConfigError) as e:
        train_task(cfg, progress=False)
    text = "\n".join(e.value.problems)
    for needle in ("copy: length must be an integer >= 1", "symbols must be an integer >= 2", "val_size must be",
                   "norm_reg must be a number >= 0", "recurrent_init must be one of", "hidden_size must be >= 1",
                   "train_size (8) must be at least batch_size (32)"):
        assert needle in text, needle
    bad = TaskRunConfig()
    bad.task.name = "parity"
    with pytest.raises(ConfigError, match="task must be one of adding, copy, temporal-order"):
        bad.validate()
    with pytest.raises(ConfigError, match="unknown key task.'seed'"):
        TaskRunConfig.from_dict({"task": {"seed": 3}})
    assert TaskRunConfig.from_dict(TaskRunConfig().to_dict()) == TaskRunConfig()  # the JSON form round-trips


def test_a_resumed_run_that_stops_at_once_reports_its_last_evaluation(tmp_path):
    cfg = _cfg(tmp_path, "adding", 5, hidden=4, max_steps=4, eval_interval=2)
    first = train_task(cfg, progress=False)
    again = train_task(resume_task_config(cfg.train.out, {"train": {"max_steps": 4}}), progress=False)
    assert again["steps"] == 4 and again["val_loss"] == first["val_loss"] and again["success"] == first["success"]
    bad = _cfg(tmp_path, "adding", 5, hidden=4, max_steps=4, out=str(tmp_path / "bad"))
    bad.task.data_seed = -1
    with pytest.raises(ConfigError, match="data_seed must be a whole number from 0"):
        train_task(bad, progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_validation_set_that_cannot_be_built_leaves_no_run_folder(tmp_path, capsys):
    """The validation sequences are made before the run folder: too many to hold is one line, and no empty folder."""
    from rnnlab.cli import main

    out = tmp_path / "run"
    assert main(["tasks", "run", "adding", "--length", "50", "--val-size", str(10**11), "--max-steps", "1",
                 "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error: not enough memory") and len(err.strip().splitlines()) == 1
    assert not out.exists()
