"""Disk full, file too large, read-only: one line, a non-zero exit, no traceback, and the last
checkpoint left as it was (and loadable), at the start of a run and in the middle of one.

A real full disk is a small tmpfs, mounted for the test (root only; skipped elsewhere). The
portable stand-in is the file-size limit (``RLIMIT_FSIZE``) in a child process: a write past
it fails with EFBIG ("File too large") once SIGXFSZ is ignored, which CPython does at startup
and the child does again. The child (``benchmarks/bench_faults.py``'s ``DRIVER``) lowers the
limit right after a chosen checkpoint, so the write that fails is known: the next checkpoint,
the next line of ``metrics.jsonl`` or the plot. A read-only run folder is a read-only tmpfs
(as root, ``chmod`` does not stop writes) or, for other users, a folder without write
permission.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_faults as bf  # noqa: E402

import rnnlab.train as tr  # noqa: E402
from rnnlab.checkpoint import LAST, load_checkpoint, save_checkpoint  # noqa: E402
from rnnlab.cli import main  # noqa: E402
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from rnnlab.data import Vocab  # noqa: E402
from rnnlab.errors import CheckpointError  # noqa: E402
from rnnlab.nn import RNNLanguageModel  # noqa: E402
from rnnlab.plots import plot_curves  # noqa: E402

posix = pytest.mark.skipif(sys.platform == "win32", reason="file-size limits and mounts are POSIX")


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[bf.RunSpec]:
    threads = torch.get_num_threads()
    yield bf.RunSpec(corpus=str(bf.make_corpus(tmp_path / "corpus.txt")), max_steps=12)
    torch.set_num_threads(threads)  # in-process runs set one thread


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (a checkpoint here is about 145 kB)."""
    try:
        with bf.tmpfs(tmp_path / "disk", size="1m") as d:
            yield d
    except bf.MountError as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the file-size-limit tests stand in for a full disk")


def make_read_only(path: Path) -> None:
    """``path`` (a folder) read-only: a read-only tmpfs remount as root, no write permission otherwise."""
    if os.geteuid() == 0:
        try:
            bf.remount(path, read_only=True)
        except bf.MountError as e:
            pytest.skip(f"cannot remount read-only: {e}")
    else:
        path.chmod(0o555)
        if os.access(path, os.W_OK):
            pytest.skip("this user can write into a folder without write permission")


@pytest.fixture
def writable(tmp_path: Path) -> Iterator[Path]:
    """A folder that :func:`make_read_only` can turn read-only: a tmpfs as root, a plain folder otherwise."""
    if os.geteuid() == 0:
        try:
            with bf.tmpfs(tmp_path / "ro", size="2m") as d:
                yield d
        except bf.MountError as e:
            pytest.skip(f"cannot mount a tmpfs here ({e})")
    else:
        d = tmp_path / "ro"
        d.mkdir()
        yield d
        d.chmod(0o755)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rnnlab: error: "), err
    return lines[0]


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if bf.TEMP.fullmatch(n))


def _model() -> tuple[torch.nn.Module, RunConfig, Vocab]:
    cfg = RunConfig(data=DataConfig(data="x"), model=ModelConfig(cell="gru", hidden_size=64, num_layers=2),
                    train=TrainConfig(max_steps=1))
    vocab = Vocab.from_text("abcdefgh")
    return RNNLanguageModel(cfg.model, len(vocab)), cfg, vocab


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@posix
def test_a_checkpoint_write_on_a_full_disk_keeps_the_previous_checkpoint(disk):
    model, cfg, vocab = _model()
    path = disk / "last.safetensors"
    save_checkpoint(path, model, cfg, vocab, train_state={"step": 1})
    before = path.read_bytes()
    bf.fill(disk)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(CheckpointError, match=r"cannot write .*last\.safetensors: No space left on device") as e:
        save_checkpoint(path, model, cfg, vocab, train_state={"step": 2})
    assert "\n" not in str(e.value)
    assert path.read_bytes() == before and load_checkpoint(path).train_state["step"] == 1
    assert _temps(disk) == []  # the half-written temporary file went with the error


@posix
def test_a_killed_writers_temporary_files_are_removed_and_free_their_space(disk):
    """SIGKILL leaves ``.<name>.tmp-<pid>``; the next write into the folder removes those of dead
    processes (first, so that on a full disk their space is there for it) and keeps a live one's."""
    model, cfg, vocab = _model()
    path = disk / "last.safetensors"
    save_checkpoint(path, model, cfg, vocab, train_state={"step": 1})
    size = path.stat().st_size
    dead = disk / f".last.safetensors.tmp-{_dead_pid()}"
    dead.write_bytes(b"\0" * (size + 8192))  # what a writer killed mid-way left
    alive = disk / f".best.safetensors.tmp-{os.getppid()}"  # a writer still at work
    alive.write_bytes(b"x")
    bf.fill(disk)
    save_checkpoint(path, model, cfg, vocab, train_state={"step": 2})  # fits only in the dead file's space
    assert load_checkpoint(path).train_state["step"] == 2
    assert not dead.exists() and alive.exists()


@posix
def test_a_full_disk_during_training_is_one_line_and_the_run_resumes(spec, disk, tmp_path, monkeypatch, capsys):
    """The disk fills right after the step-6 checkpoint; the plot that follows cannot be written.
    Given its space back, the run resumes and ends where the run done in one go does."""
    assert main(spec.argv(tmp_path / "ref")) == 0
    out = disk / "run"
    real = tr.save_checkpoint
    kept: dict[str, bytes] = {}

    def save(path: Path, *args: object, **kw: object) -> None:
        real(path, *args, **kw)
        if Path(path).name == LAST and kw["train_state"]["step"] == 6:  # type: ignore[index]
            kept["last"] = Path(path).read_bytes()
            bf.fill(disk)

    monkeypatch.setattr(tr, "save_checkpoint", save)
    capsys.readouterr()
    assert main(spec.argv(out)) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert re.fullmatch(r"rnnlab: error: cannot write .*/run/curves\.png: No space left on device", line), line
    assert (out / LAST).read_bytes() == kept["last"] and load_checkpoint(out / LAST).train_state["step"] == 6
    assert _temps(out) == []
    monkeypatch.setattr(tr, "save_checkpoint", real)
    (disk / ".filler").unlink()
    assert main(spec.resume_argv(out)) == 0
    cmp = bf.compare(out, tmp_path / "ref")
    assert cmp["equal"], cmp


@posix
def test_a_run_into_a_read_only_folder_stops_at_once(spec, writable, capsys):
    make_read_only(writable)
    assert main(spec.argv(writable / "run")) == 1  # the run folder cannot be made
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot create run folder" in line and str(writable / "run") in line
    assert re.search(r"Read-only file system|Permission denied", line), line
    assert main(spec.argv(writable)) == 1  # the run folder exists but cannot be written
    line = _one_error_line(capsys.readouterr().err)
    assert line.endswith(f"run folder {writable} is not writable"), line
    assert os.listdir(writable) == []


@posix
def test_resuming_a_run_on_a_read_only_disk_changes_nothing(spec, writable, capsys):
    out = writable / "run"
    assert main(spec.argv(out, "--max-steps", "3")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    make_read_only(out if os.geteuid() else writable)
    capsys.readouterr()
    assert main(spec.resume_argv(out, "--max-steps", "6")) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.endswith(f"run folder {out} is not writable"), line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    if os.geteuid():
        out.chmod(0o755)


@posix
@pytest.mark.parametrize("case,fsize,when,failing", [
    ("checkpoint", 120_000, "plot", r"(best|last)\.safetensors"),  # the next checkpoint, 3 steps later
    ("log line", 1, "plot", r"metrics\.jsonl"),  # the next step's line
    ("plot", 1, "save", r"curves\.png"),  # the plot right after the checkpoint
])
def test_a_file_too_large_mid_run_is_one_line_and_keeps_the_last_checkpoint(spec, tmp_path, case, fsize, when,
                                                                          failing):
    out, copy = tmp_path / "run", tmp_path / "last.copy"
    code, _, err = bf.run_cli(spec.argv(out), driver={"after_step": 6, "copy_to": str(copy), "fsize": fsize,
                                                       "when": when})
    assert code == 1, err
    line = _one_error_line(err)
    assert re.fullmatch(rf"rnnlab: error: cannot write .*/run/{failing}: File too large", line), line
    assert (out / LAST).read_bytes() == copy.read_bytes()
    assert load_checkpoint(out / LAST).train_state["step"] == 6
    assert _temps(out) == []


@posix
def test_a_file_too_large_at_the_start_is_one_line(spec, tmp_path):
    """The very first checkpoint (step 0) cannot be written: nothing is left to resume, nor half a file."""
    out = tmp_path / "run"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    code, _, err = bf.run_cli(spec.argv(out), preexec=limit)
    assert code == 1
    line = _one_error_line(err)
    assert re.fullmatch(r"rnnlab: error: cannot write .*/run/last\.safetensors: File too large", line), line
    assert not (out / LAST).exists() and _temps(out) == []
    assert main(spec.argv(out)) == 0  # nothing blocks a new start in the same folder
    assert load_checkpoint(out / LAST).train_state["step"] == spec.max_steps


@posix
def test_a_plot_that_cannot_be_written_leaves_no_temporary_file(disk):
    metrics = disk / "metrics.jsonl"
    metrics.write_text("".join(f'{{"split": "train", "step": {i}, "bpc": {3 - i / 10}}}\n' for i in range(1, 20)))
    bf.fill(disk)
    with pytest.raises(OSError):
        plot_curves(metrics, disk / "curves.png")
    assert not (disk / ".curves.png.tmp.png").exists()
