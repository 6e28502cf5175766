"""Kill anywhere, resume exactly: ``rnnlab train`` killed with SIGKILL again and again, some
kills aimed at the moment a checkpoint is being written, and resumed each time, ends with
the same checkpoints (every tensor, bit for bit) and the same ``metrics.jsonl`` (but for
timing) as the run done in one go.

Every start is the same command line with ``--resume``, as a restart script repeats it: where
the folder holds no checkpoint yet (a kill during start-up) it starts the run.

The harness is ``benchmarks/bench_faults.py`` (part 1, and its loop of kills at random moments),
which runs it with a hundred kills; here a few. Why bit for bit is possible: the run is deterministic on the CPU with a fixed
number of threads (``--threads 1``), and a checkpoint holds everything the next step
depends on: weights, optimiser moments and step counts, the learning-rate schedule's
position, the RNG (dropout), the batch position and the hidden state carried between
batches. A resumed process therefore computes the very same floating-point operations.
(Timing fields differ: ``elapsed``, ``chars_per_sec``, the train state's ``elapsed`` and
``train_time``.)

The contract for the run folder after any kill: ``last.safetensors`` and
``best.safetensors`` both load (a killed write leaves the old file and a temporary
``.<name>.tmp-<pid>``, which the next write removes); ``best`` exists only with ``last``
and holds the best_val that ``last`` records (or is one evaluation ahead of it, when the
kill fell between the two writes; the resumed run redoes that evaluation); ``last`` never
goes back. ``metrics.jsonl`` may hold rows past ``last`` (steps the killed process did
after its checkpoint): resuming truncates it to the checkpoint, so the finished run logs
every step once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_faults as bf  # noqa: E402

from rnnlab.checkpoint import LAST, load_checkpoint, save_checkpoint  # noqa: E402
from rnnlab.cli import main  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="SIGKILL is POSIX")


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[bf.RunSpec]:
    threads = torch.get_num_threads()
    yield bf.RunSpec(corpus=str(bf.make_corpus(tmp_path / "corpus.txt")), max_steps=24)
    torch.set_num_threads(threads)  # the in-process reference run sets one thread


def test_killed_anywhere_the_run_resumes_to_the_uninterrupted_weights(spec, tmp_path):
    ref = tmp_path / "reference"
    assert main(spec.argv(ref)) == 0  # in this process: the same code and threads as the children
    # every start the same command line with --resume: a fresh start killed while it starts (within 0.5 s:
    # Python and torch are still importing, no checkpoint yet), the line again killed in a checkpoint write,
    # while training, while writing best (between it and last), while writing a checkpoint
    aims = ("startup", "write", "training", "best-write", "write")
    # the training kill within 0.5 s of training's start: a 24-step run on a fast machine ends within 2 s
    res = bf.kill_rounds(spec, tmp_path / "kill", kills=len(aims), seed=3, aims=aims, in_order=True, ref=ref,
                         log=lambda _: None, train_s=0.5, startup_s=0.5, same_line=True)
    records = res["records"]
    assert res["kills"] == len(aims)
    assert records[0]["fresh"] and records[0]["landed"] == "startup" and records[0]["last_step"] is None
    assert all(not r["problems"] for r in records), [r["problems"] for r in records]
    # the harness hit the window it aims at: a kill between creating a checkpoint's temporary file and
    # renaming it (the file was still there), and the temporary files left were removed later
    assert res["landed"]["checkpoint write"] >= 1, records
    assert any(t.startswith((".last.", ".best.")) for r in records for t in r["temps"])
    for i, rnd in enumerate(res["rounds"]):  # one round, or two where a run ended before its kill came
        assert rnd["finish_status"] == 0, rnd["finish_stderr"]
        for name in (bf.LAST, bf.BEST):
            assert rnd[name]["tensors_differ"] == [] and rnd[name]["train_state_differs"] == [], rnd[name]
            assert rnd[name]["tensors"] > 20  # model, Adam's moments and steps, carried state, RNG
        assert rnd["metrics"]["equal"] and rnd["metrics"]["duplicated_steps"] == 0
        assert rnd["leftover_temps"] == [] and rnd["equal"]
        final = load_checkpoint(tmp_path / "kill" / f"round{i}" / LAST)
        assert final.train_state["step"] == spec.max_steps


def test_the_same_line_killed_at_random_moments_ends_bit_equal(tmp_path):
    """The benchmark's loop, with a few kills: one command line with --resume, killed at moments drawn
    from 0 s to the length of the whole run, start-up included, checkpointed every 0.1 s besides."""
    spec = bf.RunSpec(corpus=str(bf.make_corpus(tmp_path / "corpus.txt")), max_steps=24, eval_interval=12,
                      checkpoint_interval_s=0.1)
    res = bf.kill_loop(spec, tmp_path / "loop", kills=4, seed=1, log=lambda _: None)
    assert res["kills"] == 4 and res["survived"] == 4, res["records"]
    assert res["all_rounds_equal"], res["rounds"]
    assert all(r["finish_status"] == 0 and r["metrics"]["duplicated_steps"] == 0 for r in res["rounds"])
    assert "--resume" in res["line"] and res["kills_on_a_fresh_folder"] >= 1


def test_the_checks_after_a_kill_can_fail(spec, tmp_path):
    """The folder checks are not vacuous: a torn checkpoint, a best that last does not know of,
    a last that went back, a best without a last are each reported."""
    ref = tmp_path / "ref"
    assert main(spec.argv(ref, "--max-steps", "3")) == 0
    ck = load_checkpoint(ref / LAST)
    model = ck.build_model()

    def folder(name: str, last_state: dict | None, best_state: dict | None) -> Path:
        out = tmp_path / name
        out.mkdir()
        for file, state in ((bf.LAST, last_state), (bf.BEST, best_state)):
            if state is not None:
                save_checkpoint(out / file, model, ck.config, ck.vocab, train_state=state)
        return out

    good = {"step": 6, "best_val": 1.5}
    assert bf.check_folder(folder("ok", good, {"step": 3, "best_val": 1.5}), bf.History())[1] == []
    assert bf.check_folder(folder("ahead", good, {"step": 9, "best_val": 1.2}), bf.History())[1] == []
    stale = bf.check_folder(folder("stale", {"step": 6, "best_val": 1.2}, {"step": 3, "best_val": 1.5}),
                            bf.History())[1]
    assert any("disagrees" in p for p in stale)
    assert any("without last" in p for p in bf.check_folder(folder("orphan", None, good), bf.History())[1])
    assert any("went back" in p for p in bf.check_folder(folder("back", good, None), bf.History(last_step=9))[1])
    torn = folder("torn", good, None)
    data = (torn / bf.LAST).read_bytes()
    (torn / bf.LAST).write_bytes(data[: len(data) // 2])
    assert any("does not load" in p for p in bf.check_folder(torn, bf.History())[1])
