"""One command line restarts a run, whenever it was killed: ``--resume`` continues a run from its last
checkpoint, or starts it where the folder holds no checkpoint yet (no folder, an empty one, the files a
run writes before its first checkpoint, a checkpoint's temporary file), for ``train``, ``classify train``
and ``tasks run``; a folder whose run has other settings is refused either way. A checkpoint by time
(``--checkpoint-interval-s``) saves ``last`` alone, so a run killed more often than it evaluates still
moves on, and ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rnnlab import loop
from rnnlab.cli import main
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.train import LanguageModelJob, train

STEPS = 6


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    rnd = random.Random(0)
    (d / "c.txt").write_text("".join(rnd.choice("abcdefgh \n") for _ in range(4000)), encoding="utf-8")
    names = d / "names"
    names.mkdir()
    stems = ["ivan", "petr", "boris", "oleg", "igor", "pavel", "yuri", "gleb", "lev", "roman", "ilya", "mark"]
    for label, suffix in (("Russian", "ov"), ("Spanish", "ez")):
        (names / f"{label}.txt").write_text("".join(s + suffix + "\n" for s in stems), encoding="utf-8")
    return {"train": d / "c.txt", "classify": names}


COMMON = ["--cell", "gru", "--hidden-size", "8", "--num-layers", "1", "--max-steps", str(STEPS), "--eval-interval",
          "3", "--seed", "2", "--threads", "1", "--quiet"]


def argv(job: str, data: dict[str, Path], out: Path) -> list[str]:
    """The command line of a small run of ``job`` into ``out``."""
    if job == "train":
        head = ["train", "--data", str(data["train"]), "--batch-size", "4", "--seq-len", "16"]
    elif job == "classify":
        head = ["classify", "train", "--data", str(data["classify"]), "--batch-size", "8", "--val-fraction", "0.2",
                "--test-fraction", "0.2"]
    else:
        head = ["tasks", "run", "adding", "--length", "5", "--train-size", "64", "--val-size", "32",
                "--batch-size", "16"]
    return [*head, *COMMON, "--out", str(out)]


RUN_FILES = ("config.json", "vocab.json", "split.json", "task.json")  # what a run writes before its first checkpoint


@pytest.fixture(scope="module")
def references(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each job's run done in one go (without --resume)."""
    refs = {}
    for job in ("train", "classify", "tasks"):
        out = tmp_path_factory.mktemp("ref") / job
        assert main(argv(job, data, out)) == 0
        refs[job] = out
    return refs


def step_of(out: Path) -> int:
    """The step of ``out``'s last checkpoint (any kind of run)."""
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        return json.loads(f.metadata()["train_state"])["step"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert set(wa) == set(wb)
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, differ


def killed_before_its_first_checkpoint(ref: Path, out: Path, state: str) -> None:
    """``out`` as a kill at that moment leaves it."""
    if state == "missing":
        return
    out.mkdir(parents=True)
    if state == "empty":
        return
    for name in RUN_FILES:
        if (ref / name).exists():
            shutil.copyfile(ref / name, out / name)
    if state == "checkpoint write killed":  # the temporary file of a process that is gone
        data = (ref / "last.safetensors").read_bytes()
        (out / ".last.safetensors.tmp-999999999").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("job", ["train", "classify", "tasks"])
@pytest.mark.parametrize("state", ["missing", "empty", "run files only", "checkpoint write killed"])
def test_resume_starts_a_run_that_has_no_checkpoint_yet(job, state, data, references, tmp_path, capsys):
    out = tmp_path / "run"
    killed_before_its_first_checkpoint(references[job], out, state)
    assert main([*argv(job, data, out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"rnnlab: warning: --resume: {out} holds no checkpoint yet; the run starts from the beginning" in err
    assert_same_weights(references[job], out)
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    # the same line again continues the run it started (no warning now), here by three more steps
    assert main([*argv(job, data, out), "--resume", "--max-steps", str(STEPS + 3)]) == 0
    assert "no checkpoint yet" not in capsys.readouterr().err
    assert step_of(out) == STEPS + 3


@pytest.mark.parametrize("job", ["train", "classify", "tasks"])
def test_resume_refuses_a_run_without_checkpoint_whose_settings_differ(job, data, references, tmp_path, capsys):
    out = tmp_path / "run"
    killed_before_its_first_checkpoint(references[job], out, "run files only")
    before = (out / "config.json").read_bytes()
    assert main([*argv(job, data, out), "--resume", "--hidden-size", "12"]) == 2
    err = capsys.readouterr().err
    assert "--resume continues the run with its own settings" in err and "hidden_size: the run has 8" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "config.json").read_bytes() == before and not (out / "last.safetensors").exists()
    # without the option that differs, the same folder starts
    assert main([*argv(job, data, out), "--resume"]) == 0


def test_resume_refuses_another_programs_files_and_another_kind_of_run(data, references, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"editor": "vim"}')
    assert main([*argv("train", data, foreign), "--resume"]) == 2
    assert "not written by a run" in capsys.readouterr().err
    assert (foreign / "config.json").read_text() == '{"editor": "vim"}'
    other = tmp_path / "other"
    killed_before_its_first_checkpoint(references["classify"], other, "run files only")
    assert main([*argv("train", data, other), "--resume"]) == 2
    assert "holds a run of another kind" in capsys.readouterr().err


def test_resume_of_a_folder_holding_best_but_not_last_is_refused(data, references, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(references["train"], out)
    (out / "last.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds best.safetensors but not last.safetensors"):
        loop.resume_point(out)


def test_the_ranks_take_rank_0s_decision_and_its_errors(monkeypatch, tmp_path):
    """A rank other than 0 does not look at the folder: it takes what rank 0 broadcasts."""

    class Rank1(loop.Dist):
        def broadcast(self, obj):
            assert obj == ("", None)  # this rank decided nothing itself
            return answer

    tc = TrainConfig(out=str(tmp_path / "absent"), resume=True, max_steps=1)
    rank1 = Rank1(world=2, rank=1)
    answer = ("checkpoint", str(tmp_path / "r0" / "last.safetensors"))
    assert loop.resume_from(tc, {}, rank1) == tmp_path / "r0" / "last.safetensors"
    answer = ("start", None)
    assert loop.resume_from(tc, {}, rank1) is None
    answer = ("error", ConfigError("--resume continues the run with its own settings"))
    with pytest.raises(ConfigError, match="its own settings"):
        loop.resume_from(tc, {}, rank1)


# checkpoints by time -------------------------------------------------------------------------------

def _cfg(corpus: Path, out: Path, **train_kw) -> RunConfig:
    tk = dict(batch_size=4, seq_len=16, max_steps=14, eval_interval=4, log_interval=1, seed=3, out=str(out), threads=1)
    tk.update(train_kw)
    return RunConfig(data=DataConfig(data=str(corpus)),
                     model=ModelConfig(cell="gru", hidden_size=16, num_layers=1, dropout=0.2, embedding_size=8),
                     optim=OptimConfig(lr=0.02, lr_schedule="plateau", plateau_patience=0, plateau_factor=0.5),
                     train=TrainConfig(**tk))


def _val_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows if r["split"] == "val"]


def test_a_checkpoint_by_time_saves_last_alone_and_changes_nothing_learned(data, tmp_path, monkeypatch):
    """Every step checkpointed by time, with a plateau schedule that halves the rate at every evaluation that
    does not improve: the same weights and the same evaluations (no extra one) as without."""
    saves: list[tuple[str, int]] = []
    real = LanguageModelJob.save

    def save(job, path, train_state, **kw):
        saves.append((Path(path).name, train_state["step"]))
        real(job, path, train_state=train_state, **kw)

    monkeypatch.setattr(LanguageModelJob, "save", save)
    train(_cfg(data["train"], tmp_path / "plain"), progress=False)
    plain = list(saves)
    saves.clear()
    train(_cfg(data["train"], tmp_path / "timed", checkpoint_interval_s=1e-9), progress=False)
    assert_same_weights(tmp_path / "plain", tmp_path / "timed")
    assert _val_rows(tmp_path / "plain") == _val_rows(tmp_path / "timed")
    timed_last = sorted({s for name, s in saves if name == "last.safetensors"})
    assert timed_last == list(range(15))  # after every step (and the first at step 0)
    assert [x for x in saves if x[0] == "best.safetensors"] == [x for x in plain if x[0] == "best.safetensors"]


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the loop catches it."""


@pytest.mark.parametrize("interval, progress", [(0.0, 0), (1e-9, 6)])
def test_a_run_killed_between_evaluations_moves_on_with_checkpoints_by_time(data, tmp_path, monkeypatch,
                                                                            interval, progress):
    ref = tmp_path / "ref"
    train(_cfg(data["train"], ref, eval_interval=10), progress=False)
    real = LanguageModelJob.train_loss
    calls = {"n": 0}

    def train_loss(job, epoch, index):
        calls["n"] += 1
        if calls["n"] == 7:  # killed in the 7th step, before evaluating at step 10
            raise Killed
        return real(job, epoch, index)

    out = tmp_path / "run"
    monkeypatch.setattr(LanguageModelJob, "train_loss", train_loss)
    with pytest.raises(Killed):
        train(_cfg(data["train"], out, eval_interval=10, checkpoint_interval_s=interval), progress=False)
    assert step_of(out) == progress
    monkeypatch.setattr(LanguageModelJob, "train_loss", real)
    train(_cfg(data["train"], out, eval_interval=10, checkpoint_interval_s=interval, resume=True), progress=False)
    assert_same_weights(ref, out)
