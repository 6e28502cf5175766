"""The training loop: it learns, it is reproducible, it resumes bit for bit, it survives bad steps."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TickClock

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from rnnlab.errors import ConfigError, DataError, TrainingError
from rnnlab.train import lr_multiplier, train


def _cfg(data, out, **train_kw):
    tk = dict(batch_size=4, seq_len=16, max_steps=20, eval_interval=10, log_interval=5, seed=3, out=str(out))
    tk.update(train_kw)
    return RunConfig(data=DataConfig(data=str(data)),
                     model=ModelConfig(cell="gru", hidden_size=24, num_layers=2, dropout=0.1, embedding_size=8),
                     optim=OptimConfig(lr=1e-2), train=TrainConfig(**tk))


def _weights(run):
    return load_checkpoint(run, prefer="last.safetensors").model_state()


def test_the_loss_falls_and_the_run_folder_is_complete(corpus_file, tmp_path):
    out = tmp_path / "run"
    s = train(_cfg(corpus_file, out, max_steps=150, eval_interval=50), progress=False)
    assert s["steps"] == 150 and s["stopped"] == "max_steps"
    vocab_size = s["vocab_size"]
    # far below a uniform guess (log2 V bits) and below the unigram entropy of this text (about 3.5 bits)
    assert s["val_bpc"] < 2.5 < math.log2(vocab_size)
    for f in ("config.json", "vocab.json", "split.json", "metrics.jsonl", "curves.png", "best.safetensors",
              "last.safetensors"):
        assert (out / f).exists(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r["bpc"] for r in rows if r["split"] == "val"]
    assert len(val) == 3 and val[-1] < val[0]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert {"loss", "bpc", "grad_norm", "clipped_frac", "chars_per_sec", "lr"} <= set(train_rows[-1])
    assert json.loads((out / "split.json").read_text())["train_chars"] == round(len(corpus_file.read_text()) * 0.9)


def test_seeded_runs_are_reproducible(corpus_file, tmp_path):
    train(_cfg(corpus_file, tmp_path / "a"), progress=False)
    train(_cfg(corpus_file, tmp_path / "b"), progress=False)
    train(_cfg(corpus_file, tmp_path / "c", seed=4), progress=False)
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


TRAINING_FIELDS = ("step", "epoch", "batch", "tokens", "lr_scale", "plateau_best", "plateau_bad", "skipped", "horizon")


@pytest.mark.parametrize("optim", [
    {"lr_schedule": "constant"},  # adam
    {"optimizer": "sgd", "lr": 0.5, "lr_schedule": "cosine", "decay_steps": 75, "warmup_steps": 5},
    {"optimizer": "rmsprop", "lr": 3e-3, "lr_schedule": "plateau", "plateau_patience": 0, "weight_decay": 1e-4},
    {"weight_decay": 0.01, "clip_value": 0.05, "lr_schedule": "constant"},  # adamw, clipping by value
])
def test_stop_and_resume_equals_an_uninterrupted_run(corpus_file, tmp_path, optim):
    # 4 x 16 tokens per batch over ~3,000 training characters: epochs wrap about every 50 steps
    n, k = 75, 33

    def cfg(out, **kw):
        c = _cfg(corpus_file, tmp_path / out, eval_interval=20, **kw)
        for key, v in optim.items():
            setattr(c.optim, key, v)
        return c

    train(cfg("full", max_steps=n), progress=False)
    train(cfg("cut", max_steps=k), progress=False)
    s = train(cfg("cut", max_steps=n, resume=True), progress=False)
    assert s["steps"] == n and s["epochs"] > 1
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(full[key], cut[key]) for key in full)
    a = load_checkpoint(tmp_path / "full", prefer="last.safetensors")
    b = load_checkpoint(tmp_path / "cut", prefer="last.safetensors")
    assert all(torch.equal(x, y) for la, lb in zip(a.carry(), b.carry()) for x, y in zip(la, lb))
    assert {f: a.train_state[f] for f in TRAINING_FIELDS} == {f: b.train_state[f] for f in TRAINING_FIELDS}
    sa, sb = a.optimizer_state()["state"], b.optimizer_state()["state"]
    assert all(torch.equal(torch.as_tensor(sa[i][key]), torch.as_tensor(sb[i][key])) for i in sa for key in sa[i])
    # the metrics of the resumed run do not repeat steps
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps))


def test_the_hidden_state_is_carried_across_batches(corpus_file, tmp_path):
    """With weights that do not move, the carried state after k batches is the state of the
    model run from zero over each stream's first k*T characters: nothing was reset."""
    from rnnlab.data import StreamBatcher

    k = 5
    cfg = _cfg(corpus_file, tmp_path / "c", max_steps=k, eval_interval=1000)
    cfg.model.dropout = 0.0
    cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum = "sgd", 1e-30, 0.0
    train(cfg, progress=False)
    ck = load_checkpoint(tmp_path / "c", prefer="last.safetensors")
    model = ck.build_model().double()
    b = StreamBatcher(ck.vocab.encode(corpus_file.read_text()[: int(len(corpus_file.read_text()) * 0.9)]), 4, 16)
    x = torch.as_tensor(b.x[:, : k * 16])  # (B, k*T): each stream's first k batches, end to end
    _, state = model(x)
    for la, lb in zip(state, ck.carry()):
        for u, v in zip(la, lb):
            torch.testing.assert_close(u.float(), v, rtol=0, atol=1e-6)
    _, reset = model(x[:, -16:])  # the state a per-batch reset would have left
    assert (reset[0][0].float() - ck.carry()[0][0]).abs().max() > 1e-4


def test_resume_needs_the_same_corpus(corpus_file, tmp_path):
    train(_cfg(corpus_file, tmp_path / "r", max_steps=3), progress=False)
    corpus_file.write_text(corpus_file.read_text().replace("cat", "cow"))
    with pytest.raises(DataError, match="corpus has changed"):
        train(_cfg(corpus_file, tmp_path / "r", max_steps=6, resume=True), progress=False)


def test_resume_refuses_a_changed_model(corpus_file, tmp_path):
    train(_cfg(corpus_file, tmp_path / "r", max_steps=3), progress=False)
    cfg = _cfg(corpus_file, tmp_path / "r", max_steps=6, resume=True)
    cfg.model.hidden_size = 32
    with pytest.raises(ConfigError, match="hidden_size"):
        train(cfg, progress=False)


def test_an_existing_run_is_never_overwritten(corpus_file, tmp_path):
    train(_cfg(corpus_file, tmp_path / "r", max_steps=2), progress=False)
    before = (tmp_path / "r" / "last.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_cfg(corpus_file, tmp_path / "r", max_steps=2), progress=False)
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == before


def test_max_epochs_and_time_budget_stop_the_run(corpus_file, tmp_path, monkeypatch):
    from rnnlab import loop

    s = train(_cfg(corpus_file, tmp_path / "e", max_steps=0, max_epochs=0.5), progress=False)
    assert s["stopped"] == "max_epochs" and abs(s["epochs"] - 0.5) < 0.03
    monkeypatch.setattr(loop, "time", TickClock(0.25))  # a training step measures 0.25 s
    s = train(_cfg(corpus_file, tmp_path / "t", max_steps=0, eval_interval=10_000, time_budget=5.0), progress=False)
    assert s["stopped"] == "time_budget" and s["steps"] == 20 and s["elapsed_s"] == pytest.approx(5.0, abs=0.3)


def test_non_finite_losses_are_skipped_then_stop_the_run(corpus_file, tmp_path, monkeypatch):
    import rnnlab.train as tr

    real = tr.sequence_loss
    calls = {"n": 0}

    def flaky(logits, y):
        calls["n"] += 1
        loss = real(logits, y)
        return loss * float("nan") if calls["n"] in (4, 5) else loss

    monkeypatch.setattr(tr, "sequence_loss", flaky)
    s = train(_cfg(corpus_file, tmp_path / "f", max_steps=10), progress=False)
    assert s["skipped_steps"] == 2 and s["steps"] == 10
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "f").values())

    calls["n"] = 0
    monkeypatch.setattr(tr, "sequence_loss", lambda lg, y: real(lg, y) * (float("inf") if calls.update(
        n=calls["n"] + 1) or calls["n"] > 12 else 1.0))
    with pytest.raises(TrainingError, match="non-finite for 3 steps.*last good checkpoint"):
        train(_cfg(corpus_file, tmp_path / "g", max_steps=100, eval_interval=10, max_bad_steps=3), progress=False)
    ck = load_checkpoint(tmp_path / "g", prefer="last.safetensors")  # the last good checkpoint survives
    assert ck.train_state["step"] == 10
    assert all(torch.isfinite(v).all() for v in ck.model_state().values())


def test_explicit_splits_report_test_bits_per_character(tmp_path):
    from conftest import TEXT

    for name, part in (("tr", TEXT), ("va", TEXT[:500]), ("te", TEXT[500:1200])):
        (tmp_path / name).write_text(part)
    cfg = _cfg(tmp_path / "tr", tmp_path / "run", max_steps=10)
    cfg.data = DataConfig(train=str(tmp_path / "tr"), val=str(tmp_path / "va"), test=str(tmp_path / "te"))
    s = train(cfg, progress=False)
    assert 0 < s["test_bpc"] < 8 and 0 < s["val_bpc"] < 8


def test_word_level_model_reports_bits_per_word(corpus_file, tmp_path):
    cfg = _cfg(corpus_file, tmp_path / "w", max_steps=10, seq_len=8)
    cfg.data.level = "word"
    s = train(cfg, progress=False)
    assert "val_bpw" in s and s["vocab_size"] < 30


def test_cosine_schedule_is_a_pure_function_of_the_step():
    o = OptimConfig(lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, o, 110) == pytest.approx(0.1)  # horizon 110 steps
    assert lr_multiplier(9, o, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, o, 110) == pytest.approx(0.55)
    assert lr_multiplier(110, o, 110) == pytest.approx(0.1)
    assert lr_multiplier(500, o, 110) == pytest.approx(0.1)
    assert lr_multiplier(50, OptimConfig(lr_schedule="constant"), 110) == 1.0
    # a run limited by time alone follows the fraction of its budget spent
    c = OptimConfig(lr_schedule="cosine", min_lr_ratio=0.0)
    assert lr_multiplier(10**6, c, 0, time_frac=0.5) == pytest.approx(0.5)
    assert lr_multiplier(3, c, 0, time_frac=1.2) == pytest.approx(0.0)


def test_sigint_saves_a_checkpoint_that_resumes(corpus_file, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rnnlab", "train", "--data", str(corpus_file), "--cell", "lstm", "--hidden-size", "16",
           "--num-layers", "1", "--batch-size", "4", "--seq-len", "16", "--max-steps", "1000000", "--eval-interval",
           "1000000", "--log-interval", "1", "--lr-schedule", "constant", "--out", str(out), "--quiet",
           "--threads", "1"]  # the same thread count in the child and here: float sums differ between counts
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline:
        m = out / "metrics.jsonl"
        if m.exists() and m.read_text().count("\n") >= 5:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"--resume" in err
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # no half-written file left
    ck = load_checkpoint(out, prefer="last.safetensors")
    k = ck.train_state["step"]
    assert k >= 5
    # resuming the interrupted run lands exactly where an uninterrupted run of the same length does
    from rnnlab.cli import main

    assert main(["train", "--out", str(out), "--resume", "--max-steps", str(k + 3), "--quiet"]) == 0
    args = cmd[cmd.index("train"):]
    args[args.index("--max-steps") + 1] = str(k + 3)
    args[args.index("--out") + 1] = str(tmp_path / "straight")
    assert main(args) == 0
    a, b = _weights(out), _weights(tmp_path / "straight")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_sigterm_also_saves(corpus_file, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rnnlab", "train", "--data", str(corpus_file), "--hidden-size", "8",
           "--num-layers", "1", "--batch-size", "4", "--seq-len", "16", "--max-steps", "1000000",
           "--eval-interval", "1000000", "--log-interval", "1", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()}, cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and
                                          (out / "metrics.jsonl").read_text().count("\n") >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert load_checkpoint(out, prefer="last.safetensors").train_state["step"] >= 3


def test_orthogonal_and_identity_recurrent_init_as_train_options(corpus_file, tmp_path):
    from rnnlab.config import CuresConfig

    for scheme in ("orthogonal", "identity"):
        cfg = _cfg(corpus_file, tmp_path / scheme, max_steps=1, eval_interval=1)
        cfg.cures = CuresConfig(recurrent_init=scheme)
        cfg.optim = OptimConfig(optimizer="sgd", lr=1e-9, momentum=0.0, lr_schedule="constant")
        train(cfg, progress=False)
        w = _weights(tmp_path / scheme)
        for k in (0, 1):
            whh = w[f"rnn.layers.{k}.weight_hh"].double()  # (3H, H): three gate blocks
            for block in whh.chunk(3):
                target = torch.eye(24, dtype=torch.float64)
                got = block.T @ block if scheme == "orthogonal" else block
                assert torch.allclose(got, target, atol=1e-5), (scheme, k)


def test_chrono_gate_biases_as_a_train_option(corpus_file, tmp_path):
    """T_max defaults to the truncation length: the GRU's update-gate bias log u, u in [1, seq_len - 1]."""
    from rnnlab.config import CuresConfig

    cfg = _cfg(corpus_file, tmp_path / "chrono", max_steps=1, eval_interval=1)
    cfg.cures = CuresConfig(gate_init="chrono")
    cfg.optim = OptimConfig(optimizer="sgd", lr=1e-9, momentum=0.0, lr_schedule="constant")
    train(cfg, progress=False)
    w = _weights(tmp_path / "chrono")
    for k in (0, 1):
        z = w[f"rnn.layers.{k}.bias_ih"].double().view(3, 24)[1]  # r, z, n: z keeps h
        assert (w[f"rnn.layers.{k}.bias_hh"].view(3, 24)[1].abs() < 1e-6).all()
        assert z.min() >= -1e-6 and z.max() <= math.log(16 - 1) + 1e-6 and z.std() > 0.3


def test_the_norm_preserving_regulariser_as_a_train_option(corpus_file, tmp_path):
    from rnnlab.config import CuresConfig

    cfg = _cfg(corpus_file, tmp_path / "reg", max_steps=10, eval_interval=10, log_interval=1)
    cfg.cures = CuresConfig(norm_reg=0.1)
    s = train(cfg, progress=False)
    assert s["steps"] == 10 and math.isfinite(s["val_loss"])
    rows = [json.loads(line) for line in (tmp_path / "reg" / "metrics.jsonl").read_text().splitlines()]
    tr = [r for r in rows if r["split"] == "train"]
    assert all(r["norm_penalty"] >= 0 for r in tr)
    for r in tr:  # the objective is the cross entropy plus the weighted penalty; bpc reports the fit alone
        assert r["objective"] == pytest.approx(r["loss"] + 0.1 * r["norm_penalty"], rel=1e-5)
        assert r["bpc"] == pytest.approx(r["loss"] / math.log(2))
    # the penalty's gradient moves the weights: the same run without it ends elsewhere
    plain = _cfg(corpus_file, tmp_path / "plain", max_steps=10, eval_interval=10, log_interval=1)
    train(plain, progress=False)
    assert not torch.equal(_weights(tmp_path / "reg")["rnn.layers.1.weight_hh"],
                           _weights(tmp_path / "plain")["rnn.layers.1.weight_hh"])


@pytest.mark.parametrize("kind", ["norm", "value"])
def test_clipping_by_norm_and_by_value_bound_the_step(corpus_file, tmp_path, kind):
    from rnnlab.nn.models import RNNLanguageModel

    out = tmp_path / kind
    cfg = _cfg(corpus_file, out, max_steps=1, eval_interval=1)
    cfg.optim = OptimConfig(optimizer="sgd", lr=1.0, momentum=0.0, lr_schedule="constant",
                            clip_norm=1e-3 if kind == "norm" else 0.0, clip_value=1e-5 if kind == "value" else 0.0)
    train(cfg, progress=False)
    torch.manual_seed(cfg.train.seed)  # the weights the run started from
    vocab_size = len(json.loads((out / "vocab.json").read_text())["symbols"])
    before = RNNLanguageModel(cfg.model, vocab_size).state_dict()
    after = _weights(out)
    step = torch.cat([(before[k] - after[k]).flatten().double() for k in before])  # lr 1: the clipped gradient
    if kind == "norm":
        assert step.norm().item() == pytest.approx(1e-3, rel=1e-4)  # the gradient's norm was far above 1e-3
    else:
        # (float32 weights near 0.1 resolve a change of 1e-5 to about 1e-8)
        assert step.abs().max().item() == pytest.approx(1e-5, rel=1e-2)  # some element was clipped ...
        assert (step.abs() <= 1e-5 * (1 + 1e-2)).all()  # ... and none moved further
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["split"] == "train")
    assert first["clipped_frac"] == 1.0  # clipped by norm or by value, the step counts as clipped
    # the pre-clip norm is what is logged, far above the (lr 1) step's own norm: the gradient after clipping
    assert first["grad_norm"] > 2 * step.norm().item()


@pytest.mark.parametrize("feeding", ["free-raw", "free-sample", "free-argmax", "scheduled", "professor"])
def test_every_feeding_strategy_trains_through_the_same_loop(corpus_file, tmp_path, feeding):
    from rnnlab.config import FeedingConfig

    cfg = _cfg(corpus_file, tmp_path / feeding, max_steps=6, eval_interval=6, log_interval=1)
    cfg.feeding = FeedingConfig(feeding=feeding, band_low=0.0, disc_hidden=8)  # professor: adversarial term always on
    s = train(cfg, progress=False)
    assert s["steps"] == 6 and math.isfinite(s["val_loss"])
    rows = [json.loads(line) for line in (tmp_path / feeding / "metrics.jsonl").read_text().splitlines()]
    tr = [r for r in rows if r["split"] == "train"]
    assert len(tr) == 6 and all(math.isfinite(r["bpc"]) for r in tr)
    if feeding == "scheduled":
        assert all(0.0 <= r["eps"] <= 1.0 for r in tr)
    if feeding == "professor":
        assert all("d_acc" in r and r["adv_on"] == 1.0 for r in tr)
        assert load_checkpoint(tmp_path / feeding / "last.safetensors").feeding_state() is not None


def test_professor_forcing_resumes_with_its_discriminator(corpus_file, tmp_path):
    from rnnlab.config import FeedingConfig

    def cfg(out, steps):
        c = _cfg(corpus_file, tmp_path / out, max_steps=steps, eval_interval=4)
        c.optim.decay_steps = 10
        c.feeding = FeedingConfig(feeding="professor", band_low=0.0, disc_hidden=8)
        return c

    train(cfg("whole", 10), progress=False)
    part = cfg("part", 5)
    train(part, progress=False)
    part.train.max_steps, part.train.resume = 10, True
    train(part, progress=False)
    a, b = load_checkpoint(tmp_path / "whole" / "last.safetensors"), load_checkpoint(tmp_path / "part" / "last.safetensors")
    for k, v in a.model_state().items():
        assert torch.equal(v, b.model_state()[k]), k
    fa, fb = a.feeding_state(), b.feeding_state()
    assert fa["meta"] == fb["meta"] and all(torch.equal(t, fb["tensors"][k]) for k, t in fa["tensors"].items())


def test_feeding_options_are_checked_with_the_rest(corpus_file, tmp_path):
    from rnnlab.config import CuresConfig, FeedingConfig

    cfg = _cfg(corpus_file, tmp_path / "x")
    cfg.feeding = FeedingConfig(feeding="scheduled", band_low=0.9, band_high=0.5)
    cfg.cures = CuresConfig(norm_reg=0.1)
    with pytest.raises(ConfigError) as e:
        train(cfg, progress=False)
    assert any("band_low" in p for p in e.value.problems) and any("norm_reg works with teacher" in p for p in e.value.problems)


def test_a_resumed_run_says_when_its_new_stop_changes_the_cosine_schedule():
    import warnings as w

    from rnnlab.config import TrainConfig
    from rnnlab.loop import TrainState, warn_schedule_change

    o = OptimConfig(lr_schedule="cosine", lr=1e-2, warmup_steps=0, min_lr_ratio=0.0)
    by_time = TrainState(step=100, elapsed=3.0, horizon=0)
    with pytest.warns(UserWarning, match=r"with --time-budget 6 instead of 3 the learning rate moves from 0 to 0\.005"):
        warn_schedule_change(o, TrainConfig(time_budget=6), TrainConfig(time_budget=3), by_time)
    with pytest.warns(UserWarning, match="keeps the horizon of 50 steps"):
        warn_schedule_change(o, TrainConfig(max_steps=80), TrainConfig(max_steps=50), TrainState(step=50, horizon=50))
    with w.catch_warnings():
        w.simplefilter("error")  # nothing to say: the same budget, a constant schedule, or a horizon set by hand
        warn_schedule_change(o, TrainConfig(time_budget=3), TrainConfig(time_budget=3), by_time)
        warn_schedule_change(OptimConfig(lr_schedule="constant"), TrainConfig(time_budget=6),
                             TrainConfig(time_budget=3), by_time)
        warn_schedule_change(OptimConfig(lr_schedule="cosine", decay_steps=500), TrainConfig(time_budget=6),
                             TrainConfig(time_budget=3), by_time)
