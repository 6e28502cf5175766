"""Faults and abuse: a training run that cannot be lost.

1. **Kill anywhere, resume exactly.** A small ``rnnlab train`` run (a generated corpus, a
   2x32 GRU with dropout, a cosine schedule, a checkpoint every 3 steps) is started as a
   subprocess and killed with SIGKILL again and again, then resumed with ``--resume``
   (or started afresh while it has no checkpoint). Each kill is aimed at one of three
   moments: ``startup`` (a random time after the process starts, mostly while it imports
   and restores), ``training`` (a random time once it trains) or ``write`` (the moment the
   n-th checkpoint's temporary file ``.<name>.tmp-<pid>`` appears in the run folder: seen
   through inotify, or by polling the folder where there is none; the run is stopped
   (SIGSTOP) at once or up to 1 ms later, so at some point of the data or the fsync, and
   killed there while the file is still there; where the write had ended first it goes on,
   and the next write is aimed at). A kill *landed inside a checkpoint write* when that
   temporary file is still there after the process died: it was killed between creating
   the file and renaming it.
   After every kill: both checkpoints load, ``last`` never goes back, ``best`` exists
   only with ``last`` and agrees with it (see :func:`check_folder`), ``metrics.jsonl``
   parses (but for a partly written last line). When a run completes, its ``last`` and
   ``best`` checkpoints (weights, optimiser, RNG, carried state, every tensor) must equal
   those of the same run done without a kill, bit for bit, and its ``metrics.jsonl`` the
   same rows but for the timing fields. Then a fresh run folder starts the next round.
   **The same command line, killed at random moments.** What a preemptible job or a
   scheduler does: one command line with ``--resume``, repeated after every kill. Each
   kill falls at a moment drawn uniformly from 0 s to the length of the whole run (start-up
   included: before the run folder exists, while Python imports, between ``config.json``
   and the first checkpoint, during a checkpoint write), and the run checkpoints every
   ``checkpoint_interval_s`` seconds besides every ``eval_interval`` steps, so it moves on
   although it is killed more often than it evaluates. When the line runs to its end its
   checkpoints must equal the uninterrupted run's bit for bit (:func:`kill_loop`).
2. **Disk full, file too large, read-only.** The same run through the command line when
   the disk fills after a checkpoint (a small tmpfs, root only), when the file-size limit
   (``RLIMIT_FSIZE``, portable) is lowered mid-run so that the next checkpoint or the
   next ``metrics.jsonl`` line cannot be written, and with the run folder on a read-only
   file system (at the start of a run and on resume): exit status, the message, whether
   the last checkpoint still loads, and whether the run, given its space back, resumes
   to the uninterrupted run's weights.
3. **NaN and Inf.** Chosen batches give a NaN loss or an Inf in one gradient element
   (injected by a wrapper in the child process, not by a hook in rnnlab): skipped steps
   in the summary, and the one-line stop after ``--max-bad-steps`` in a row.

Every child runs with ``OMP_NUM_THREADS=1`` and ``--threads 1``.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_faults.py               # ~10 minutes
    .venv/bin/python benchmarks/bench_faults.py --kills 20 --parts kill
    .venv/bin/python benchmarks/bench_faults.py --kills 300 --time-limit 900
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_faults.py --parts loop --loop-kills 20 \
        --out benchmarks/results/faults_loop.json                                            # ~3 minutes

Writes ``benchmarks/results/faults.json`` and ``faults.md``. ``tests/test_kill_resume.py``
runs part 1 with a few kills.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import errno
import json
import os
import platform
import random
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnlab.checkpoint import BEST, LAST, load_checkpoint
from rnnlab.errors import CheckpointError
from rnnlab.plots import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TEMP = re.compile(r"\.(.+)\.tmp-(\d+)")  # rnnlab.checkpoint.atomic_write's temporary files
TIMING = ("elapsed", "train_time")  # train-state fields that measure time, not what was learned
WORDS = ("the cat sat on the mat the dog sat on the log a cat and a dog met on a mat by a log "
         "then the dog ran to the cat and the cat ran up a tree").split()


# the run ---------------------------------------------------------------------------------------------

def make_corpus(path: Path, chars: int = 6000, seed: int = 0) -> Path:
    """A seeded text of short sentences over a small vocabulary (about ``chars`` characters)."""
    rng = random.Random(seed)
    lines: list[str] = []
    n = 0
    while n < chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + ".\n"
        lines.append(line)
        n += len(line)
    path.write_text("".join(lines), encoding="utf-8")
    return path


@dataclass(frozen=True)
class RunSpec:
    """The small run every fault is tried on (``rnnlab train`` options)."""

    corpus: str
    max_steps: int = 36
    eval_interval: int = 3  # a checkpoint every 3 steps: many moments to be killed in
    hidden_size: int = 32  # 2x32 GRU: a checkpoint of about 145 kB
    seed: int = 3
    checkpoint_interval_s: float = 0.0  # also a checkpoint every this many seconds (0: only every eval_interval)

    def argv(self, out: Path, *extra: str) -> list[str]:
        """The ``rnnlab`` arguments of a fresh run into ``out``."""
        timed = ["--checkpoint-interval-s", str(self.checkpoint_interval_s)] if self.checkpoint_interval_s else []
        return ["train", "--data", self.corpus, "--cell", "gru", "--hidden-size", str(self.hidden_size),
                "--num-layers", "2", "--embedding-size", "8", "--dropout", "0.1", "--batch-size", "4",
                "--seq-len", "16", "--lr", "0.01", "--lr-schedule", "cosine", "--warmup-steps", "4",
                "--max-steps", str(self.max_steps), "--eval-interval", str(self.eval_interval), *timed,
                "--log-interval", "1", "--plot-interval-s", "0", "--seed", str(self.seed), "--threads", "1",
                "--out", str(out), "--quiet",
                *extra]

    def line(self, out: Path) -> list[str]:
        """The one command line a restart script repeats: the run's, with ``--resume`` (it starts the run
        where ``out`` holds no checkpoint yet)."""
        return self.argv(out, "--resume")

    @staticmethod
    def resume_argv(out: Path, *extra: str) -> list[str]:
        return ["train", "--out", str(out), "--resume", "--quiet", *extra]


def child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def rnnlab_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rnnlab", *args]


def run_cli(args: list[str], timeout: float = 300, driver: dict[str, Any] | None = None,
            preexec: Callable[[], None] | None = None) -> tuple[int, str, str]:
    """Run ``rnnlab ARGS`` (through :data:`DRIVER` when ``driver`` is given) to its end: (status, stdout, stderr)."""
    cmd = rnnlab_cmd(args) if driver is None else [sys.executable, "-c", DRIVER, json.dumps(driver), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=ROOT,
                       preexec_fn=preexec)
    return p.returncode, p.stdout, p.stderr


# A child that runs the command line with a fault injected from outside the library. Its first
# argument is a JSON object: "bad" lists batches [epoch, index, kind] that give a NaN loss ("nan-loss")
# or an Inf in one gradient element ("inf-grad"); once the last checkpoint has reached "after_step",
# right after it is saved ("when": "save") or after the plot that follows ("when": "plot"), a copy of
# it goes to "copy_to" and the fault comes: RLIMIT_FSIZE lowered to "fsize", or the disk filled
# through the file "fill".
DRIVER = r'''
import json, resource, shutil, signal, sys
from pathlib import Path
spec, argv = json.loads(sys.argv[1]), sys.argv[2:]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # CPython ignores it already; a write past RLIMIT_FSIZE fails with EFBIG
import rnnlab.loop as lp
import rnnlab.train as tr
real_save, real_plot, real_loss = tr.save_checkpoint, lp.plot_curves, tr.LanguageModelJob.train_loss
saved = {"step": -1, "path": None}

def fault():
    if saved["step"] < spec.get("after_step", 1 << 60):
        return
    spec["after_step"] = 1 << 60
    shutil.copyfile(saved["path"], spec["copy_to"])  # the last checkpoint when the fault came
    if "fsize" in spec:  # from now on a write past this size fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    if "fill" in spec:  # the disk is full, to the last byte
        with open(spec["fill"], "wb", buffering=0) as f:
            for size in (1 << 16, 1 << 12, 1 << 8, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass

def save(path, *args, **kw):
    real_save(path, *args, **kw)
    if Path(path).name == "last.safetensors":
        saved["step"], saved["path"] = kw["train_state"]["step"], path
        if spec.get("when", "plot") == "save":
            fault()

def plot(*args, **kw):
    real_plot(*args, **kw)
    if spec.get("when", "plot") == "plot":
        fault()

bad = {(e, i): kind for e, i, kind in spec.get("bad", [])}

def train_loss(job, epoch, index):
    loss, items, extra = real_loss(job, epoch, index)
    kind = bad.get((epoch, index))
    if kind == "nan-loss":
        loss = loss * float("nan")
    elif kind == "inf-grad":
        def poison(g):
            g = g.clone()
            g.view(-1)[0] = float("inf")
            handle.remove()
            return g
        handle = job.model.decoder.weight.register_hook(poison)
    return loss, items, extra

tr.save_checkpoint, lp.plot_curves, tr.LanguageModelJob.train_loss = save, plot, train_loss
from rnnlab.cli import main
sys.exit(main(argv))
'''


# watching the run folder ------------------------------------------------------------------------------

IN_CREATE, IN_MOVED_TO = 0x100, 0x80


class DirWatch:
    """Names created in a folder, as they appear: inotify on Linux (microseconds), else polling."""

    def __init__(self, folder: Path):
        self.folder, self.fd = folder, -1
        self.seen = set(os.listdir(folder))
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
                if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(folder), IN_CREATE | IN_MOVED_TO) >= 0:
                    self.fd = fd
                elif fd >= 0:
                    os.close(fd)
            except (OSError, AttributeError):
                self.fd = -1

    @property
    def kind(self) -> str:
        return "inotify" if self.fd >= 0 else "polling"

    def created(self, timeout: float) -> list[str]:
        """The names created since the last call, waiting up to ``timeout`` seconds for one."""
        if self.fd >= 0:
            ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
            if not ready:
                return []
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return []
            names, i = [], 0
            while i + 16 <= len(buf):
                _, _, _, n = struct.unpack_from("iIII", buf, i)
                names.append(buf[i + 16:i + 16 + n].rstrip(b"\0").decode(errors="replace"))
                i += 16 + n
            return names
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:  # polling: a short-lived file can be missed
            now = set(os.listdir(self.folder))
            new = sorted(now - self.seen)
            self.seen = now
            if new or time.monotonic() >= deadline:
                return new

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# one kill --------------------------------------------------------------------------------------------

@dataclass
class Kill:
    n: int
    aimed: str  # startup, training, write (the 1st, 2nd or 3rd checkpoint write) or best-write
    landed: str  # startup, training, checkpoint write, other write
    after_s: float  # seconds from the start of the process to the kill
    fresh: bool  # the process killed was a fresh start (the folder had no checkpoint), else a resume
    last_step: int | None  # the last checkpoint's step after the kill
    temps: list[str] = field(default_factory=list)  # temporary files left behind
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return not self.problems


@dataclass
class History:
    """What the checks carry from one kill to the next."""

    last_step: int = -1


def check_folder(out: Path, history: History) -> tuple[int | None, list[str]]:
    """Everything that must hold in a run folder whatever moment the run was killed at."""
    problems: list[str] = []
    ck: dict[str, Any] = {}
    for name in (LAST, BEST):
        if (out / name).exists():
            try:
                ck[name] = load_checkpoint(out / name)
            except CheckpointError as e:
                problems.append(f"{name} does not load: {e}")
    if (out / BEST).exists() and not (out / LAST).exists():
        problems.append("best.safetensors without last.safetensors: the run could not be resumed")
    step = ck[LAST].train_state["step"] if LAST in ck else None
    if step is not None:
        if step < history.last_step:
            problems.append(f"last.safetensors went back from step {history.last_step} to {step}")
        history.last_step = step
    if LAST in ck and BEST in ck:
        last, best = ck[LAST].train_state, ck[BEST].train_state
        if best["step"] <= last["step"] and best["best_val"] != last["best_val"]:
            # last records a best that best.safetensors does not hold
            problems.append(f"best.safetensors (step {best['step']}, {best['best_val']}) disagrees with "
                            f"last.safetensors's best_val {last['best_val']} (step {last['step']})")
        if best["step"] > last["step"] and best["best_val"] > last["best_val"]:
            problems.append("best.safetensors is ahead of last.safetensors but not better")
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text(encoding="utf-8").splitlines()
        if len(read_metrics(metrics)) < len(lines) - 1:
            problems.append("metrics.jsonl has an unreadable line before its last")
    return step, problems


def _landed(out: Path, pid: int, started: bool) -> tuple[str, list[str]]:
    temps = sorted(n for n in os.listdir(out) if TEMP.fullmatch(n))
    own = [n for n in temps if TEMP.fullmatch(n)[2] == str(pid)]  # type: ignore[index]
    if any(n.startswith((f".{LAST}.", f".{BEST}.")) for n in own):
        return "checkpoint write", temps
    if own:
        return "other write", temps
    return ("training" if started else "startup"), temps


def _stopped_inside(pid: int, temp: Path) -> bool:
    """Stop process ``pid`` and say whether it stopped inside the write of ``temp`` (the temporary file
    still there): then it stays stopped for the kill; else it goes on, to be stopped at a later write."""
    os.kill(pid, signal.SIGSTOP)
    info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)  # stopped, or ended first
    if info is None or info.si_code != os.CLD_STOPPED:
        return False  # it ended: Popen reaps it
    os.waitid(os.P_PID, pid, os.WSTOPPED)  # take the stop's report, so the next stop is waited for anew
    if temp.exists():
        return True
    os.kill(pid, signal.SIGCONT)
    return False


def attempt(spec: RunSpec, out: Path, aimed: str, rng: random.Random, n: int, history: History,
            startup_s: float = 4.0, train_s: float = 2.0, timeout: float = 120.0, same_line: bool = False
            ) -> Kill | None:
    """Start the run (resume it when it has a checkpoint; with ``same_line`` always the same line,
    :meth:`RunSpec.line`), kill it at a moment of kind ``aimed``, check the folder. None when the run
    ended by itself first (it is complete)."""
    fresh = not (out / LAST).exists()
    watch = DirWatch(out)
    args = spec.line(out) if same_line else spec.argv(out) if fresh else spec.resume_argv(out)
    proc = subprocess.Popen(rnnlab_cmd(args), env=child_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    t0 = time.monotonic()
    pid = proc.pid
    started = False  # it has written config.json: from there on it trains
    writes = 0
    target = rng.randint(1, 3)
    deadline = t0 + rng.uniform(0.0, startup_s) if aimed == "startup" else t0 + timeout
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                break
            for name in watch.created(min(deadline - now, 0.05)):
                if name == f".config.json.tmp-{pid}" and not started:
                    started = True
                    if aimed == "training":
                        deadline = time.monotonic() + rng.uniform(0.0, train_s)
                if name in (f".{LAST}.tmp-{pid}", f".{BEST}.tmp-{pid}"):
                    writes += 1
                    if (aimed == "write" and writes >= target) or (aimed == "best-write" and LAST not in name):
                        # a write takes 1-2 ms here (the fsync): stop the run at once or up to 1 ms into it
                        spin = time.perf_counter() + rng.choice((0.0, rng.uniform(0.0, 0.001)))
                        while time.perf_counter() < spin:
                            pass
                        if _stopped_inside(pid, out / name):
                            deadline = 0.0  # the kill below lands inside this write
            if not started and (out / "config.json").exists() and (out / "config.json").stat().st_mtime >= \
                    time.time() - (time.monotonic() - t0):
                started = True  # polling may miss the temporary file itself
                if aimed == "training" and deadline == t0 + timeout:
                    deadline = time.monotonic() + rng.uniform(0.0, train_s)
        after = time.monotonic() - t0
        if proc.poll() is not None:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the run failed by itself (status {proc.returncode}): {err.decode()[-2000:]}")
            return None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        watch.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    landed, temps = _landed(out, pid, started)
    step, problems = check_folder(out, history)
    return Kill(n, aimed, landed, round(after, 3), fresh, step, temps, problems)


def finish(spec: RunSpec, out: Path, timeout: float = 300.0, same_line: bool = False) -> tuple[int, str]:
    """Run to the end without a kill (resume, or start when there is nothing to resume)."""
    args = spec.line(out) if same_line else spec.argv(out) if not (out / LAST).exists() else spec.resume_argv(out)
    code, _, err = run_cli(args, timeout=timeout)
    return code, err


def reference(spec: RunSpec, out: Path) -> Path:
    """The same run without a kill."""
    code, _, err = run_cli(spec.argv(out))
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed: {err[-2000:]}")
    return out


def compare(run: Path, ref: Path) -> dict[str, Any]:
    """Every checkpoint tensor bit for bit, the training state but for timing, the log but for timing."""
    res: dict[str, Any] = {}
    for name in (LAST, BEST):
        a, b = load_checkpoint(run / name), load_checkpoint(ref / name)
        differ = sorted(k for k in a.tensors.keys() | b.tensors.keys()
                        if k not in a.tensors or k not in b.tensors or not torch.equal(a.tensors[k], b.tensors[k]))
        max_diff = max((float((a.tensors[k].double() - b.tensors[k].double()).abs().max()) for k in differ
                        if k in a.tensors and k in b.tensors and k.startswith("model.")
                        and a.tensors[k].shape == b.tensors[k].shape), default=0.0)
        state = sorted(k for k in a.train_state.keys() | b.train_state.keys()
                       if k not in TIMING and a.train_state.get(k) != b.train_state.get(k))
        res[name] = {"tensors": len(b.tensors), "tensors_differ": differ, "max_weight_diff": max_diff,
                     "train_state_differs": state, "step": a.train_state["step"]}

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "elapsed" and not k.endswith("_per_sec")} for r in rows]

    ra, rb = read_metrics(run / "metrics.jsonl"), read_metrics(ref / "metrics.jsonl")
    train_steps = [r["step"] for r in ra if r["split"] == "train" and not r.get("skipped")]
    res["metrics"] = {"rows": len(ra), "reference_rows": len(rb), "equal": strip(ra) == strip(rb),
                      "duplicated_steps": len(train_steps) - len(set(train_steps))}
    res["leftover_temps"] = sorted(n for n in os.listdir(run) if TEMP.fullmatch(n))
    res["equal"] = (not any(res[n]["tensors_differ"] or res[n]["train_state_differs"] for n in (LAST, BEST))
                    and res["metrics"]["equal"] and not res["leftover_temps"])
    return res


def kill_rounds(spec: RunSpec, work: Path, kills: int, seed: int = 0,
                aims: tuple[str, ...] = ("startup", "training", "training", "write", "write", "best-write"),
                in_order: bool = False, time_limit: float = 1e9, log: Callable[[str], None] = print,
                ref: Path | None = None, train_s: float = 2.0, startup_s: float = 4.0,
                same_line: bool = False) -> dict[str, Any]:
    """Kill runs of ``spec`` ``kills`` times in all (several rounds: a round ends when its run
    completes and is compared with the uninterrupted run ``ref``, made here if not given). Each
    kill's aim is drawn from ``aims`` (taken in turn with ``in_order``); a kill aimed at start-up
    lands within ``startup_s`` seconds of the process's start, one aimed at training within
    ``train_s`` seconds of the run's start of training. ``same_line``: every start is the same
    command line with ``--resume``, a fresh start too."""
    rng = random.Random(seed)
    t_start = time.monotonic()
    if ref is None:
        ref = reference(spec, work / "reference")
    records: list[Kill] = []
    rounds: list[dict[str, Any]] = []
    work.mkdir(parents=True, exist_ok=True)
    probe = DirWatch(work)
    watch_kind = probe.kind
    probe.close()
    while len(records) < kills and time.monotonic() - t_start < time_limit:
        out = work / f"round{len(rounds)}"
        out.mkdir(parents=True)
        history = History()
        first = len(records)
        while len(records) < kills and time.monotonic() - t_start < time_limit:
            aim = aims[len(records) % len(aims)] if in_order else rng.choice(aims)
            k = attempt(spec, out, aim, rng, len(records) + 1, history, train_s=train_s, startup_s=startup_s,
                        same_line=same_line)
            if k is None:
                break
            records.append(k)
            log(f"kill {k.n:3d} aimed at {k.aimed:8s} landed in {k.landed:16s} after {k.after_s:5.2f} s: "
                f"last step {k.last_step}, temps {k.temps}" + (f" PROBLEMS {k.problems}" if k.problems else ""))
        code, err = finish(spec, out, same_line=same_line)
        cmp = compare(out, ref) if code == 0 else {"equal": False}
        rounds.append({"round": len(rounds), "kills": len(records) - first, "finish_status": code,
                       "finish_stderr": err.strip()[-500:], **cmp})
        log(f"round {len(rounds) - 1}: {len(records) - first} kills, finished with status {code}, "
            f"equal to the uninterrupted run: {cmp['equal']}")
    landed = {k: sum(r.landed == k for r in records) for k in ("startup", "training", "checkpoint write",
                                                                 "other write")}
    in_write = ("write", "best-write")
    return {"spec": asdict(spec), "watch": watch_kind, "kills": len(records),
            "survived": sum(r.survived for r in records), "landed": landed,
            "aimed": {a: sum(r.aimed == a for r in records) for a in sorted(set(aims))},
            "write_aimed": sum(r.aimed in in_write for r in records),
            "write_aimed_landed_inside": sum(r.aimed in in_write and r.landed == "checkpoint write" for r in records),
            "rounds": rounds, "all_rounds_equal": bool(rounds) and all(r["equal"] for r in rounds),
            "seconds": round(time.monotonic() - t_start, 1), "records": [asdict(r) for r in records]}


def _moment(out: Path, pid: int, t_wall: float) -> str:
    """Where a kill of process ``pid`` (started at wall time ``t_wall``) fell, judged from the run folder."""
    if not out.is_dir():
        return "before the folder"
    cfg = out / "config.json"
    wrote_config = cfg.exists() and cfg.stat().st_mtime >= t_wall
    landed, _ = _landed(out, pid, wrote_config)
    if landed == "training" and not (out / LAST).exists():
        return "before the first checkpoint"
    return landed


def kill_loop(spec: RunSpec, work: Path, kills: int = 20, seed: int = 0, time_limit: float = 1e9,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """The same command line (:meth:`RunSpec.line`) killed ``kills`` times, each time at a moment drawn
    uniformly from 0 s to the wall time of the whole uninterrupted run (start-up included), and repeated
    after every kill. A round ends when the line runs to its end; its checkpoints and log are then compared
    with the uninterrupted run's (the same line, timed here), and the next round starts in a folder that
    does not exist yet."""
    rng = random.Random(seed)
    t_start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    ref_out = work / "reference"
    code, _, err = run_cli(spec.line(ref_out))
    whole_s = time.monotonic() - t_start
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed: {err[-2000:]}")
    records: list[Kill] = []
    rounds: list[dict[str, Any]] = []
    moments: list[str] = []
    while len(records) < kills and time.monotonic() - t_start < time_limit:
        out = work / f"round{len(rounds)}"  # not made here: the first start finds no folder
        history = History()
        first, starts = len(records), 0
        finished = False
        while len(records) < kills and time.monotonic() - t_start < time_limit:
            at = rng.uniform(0.0, whole_s)
            fresh = not (out / LAST).exists()
            t_wall = time.time() - 0.01  # file times are coarser than the clock
            proc = subprocess.Popen(rnnlab_cmd(spec.line(out)), env=child_env(), cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            starts += 1
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is not None:  # it ran to its end before the moment drawn
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"the line failed by itself (status {proc.returncode}): "
                                       f"{err.decode()[-2000:]}")
                finished = True
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            moment = _moment(out, proc.pid, t_wall)
            temps = sorted(n for n in os.listdir(out) if TEMP.fullmatch(n)) if out.is_dir() else []
            step, problems = check_folder(out, history) if out.is_dir() else (None, [])
            k = Kill(len(records) + 1, "random", moment, round(at, 3), fresh, step, temps, problems)
            records.append(k)
            moments.append(moment)
            log(f"kill {k.n:3d} at {at:5.2f} s of {whole_s:.2f}: {moment:27s} last step {step}"
                + (f" PROBLEMS {problems}" if problems else ""))
        if not finished:
            code, err = finish(spec, out, same_line=True)
            starts += 1
            if code != 0:
                rounds.append({"round": len(rounds), "kills": len(records) - first, "starts": starts,
                               "finish_status": code, "finish_stderr": err.strip()[-500:], "equal": False})
                continue
        cmp = compare(out, ref_out)
        rounds.append({"round": len(rounds), "kills": len(records) - first, "starts": starts, "finish_status": 0,
                       **cmp})
        log(f"round {len(rounds) - 1}: {len(records) - first} kills, {starts} starts of the same line, "
            f"equal to the uninterrupted run: {cmp['equal']}")
    kinds = ("before the folder", "startup", "before the first checkpoint", "training", "checkpoint write",
             "other write")
    return {"spec": asdict(spec), "line": " ".join(spec.line(Path("RUN"))), "whole_run_s": round(whole_s, 2),
            "kills": len(records), "survived": sum(r.survived for r in records),
            "moments": {k: moments.count(k) for k in kinds},
            "kills_on_a_fresh_folder": sum(r.fresh for r in records),
            "rounds": rounds, "all_rounds_equal": bool(rounds) and all(r["equal"] for r in rounds),
            "seconds": round(time.monotonic() - t_start, 1), "records": [asdict(r) for r in records]}


# disks -------------------------------------------------------------------------------------------------

class MountError(RuntimeError):
    pass


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only: else :class:`MountError`)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    except OSError as e:
        raise MountError(str(e)) from None
    if r.returncode != 0:
        raise MountError(r.stderr.strip() or f"mount failed with status {r.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, read_only: bool) -> None:
    r = subprocess.run(["mount", "-o", "remount," + ("ro" if read_only else "rw"), str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise MountError(r.stderr.strip())


def fill(folder: Path, name: str = ".filler") -> Path:
    """Fill the file system of ``folder`` to the last byte; the file that does it."""
    p = folder / name
    with open(p, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EFBIG):
                    raise
    return p


def _int(x: str | None) -> int | None:
    return int(x) if x is not None and x.strip().isdigit() else None


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    return lines[-1] if lines else ""


def disk_faults(spec: RunSpec, work: Path, ref: Path) -> list[dict[str, Any]]:
    """Each disk fault through the command line: status, message, what is left, and whether it resumes."""
    res: list[dict[str, Any]] = []

    def record(name: str, code: int, err: str, out: Path, copy: Path | None = None, **more: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"case": name, "status": code, "message": _one_line(err),
                               "stderr_lines": len(err.strip().splitlines()), "traceback": "Traceback" in err}
        try:
            ck = load_checkpoint(out / LAST)
            row["last_step"], row["last_loads"] = ck.train_state["step"], True
        except CheckpointError as e:
            row["last_loads"], row["last_error"] = False, str(e)
        if copy is not None:
            row["last_unchanged"] = copy.exists() and (out / LAST).exists() and \
                (out / LAST).read_bytes() == copy.read_bytes()
        row["temps_left"] = sorted(n for n in os.listdir(out) if TEMP.fullmatch(n)) if out.is_dir() else []
        row.update(more)
        print(json.dumps(row), flush=True)
        res.append(row)
        return row

    # the file-size limit (portable): the next checkpoint, plot or line of the log cannot be written
    for case, size, when in (("file too large: next checkpoint", 120_000, "plot"),
                             ("file too large: next metrics.jsonl line", 1, "plot"),
                             ("file too large: next curves.png", 1, "save")):
        out = work / re.sub(r"\W+", "-", case)
        copy = work / f"{out.name}.last-copy"
        code, _, err = run_cli(spec.argv(out), driver={"after_step": 6, "copy_to": str(copy), "fsize": size,
                                                       "when": when})
        row = record(case, code, err, out, copy)
        code2, _, err2 = run_cli(spec.resume_argv(out))
        row["resumed_status"] = code2
        row["resumed_equal"] = code2 == 0 and compare(out, ref)["equal"]
    out = work / "fsize-start"
    code, _, err = run_cli(spec.argv(out), preexec=lambda: resource.setrlimit(
        resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1])))
    record("file too large: the first checkpoint", code, err, out)

    # a real full disk and a read-only file system: a tmpfs (root only)
    try:
        with tmpfs(work / "disk", size="1m") as disk:
            out, copy = disk / "run", work / "full.last-copy"
            code, _, err = run_cli(spec.argv(out), driver={"after_step": 6, "copy_to": str(copy),
                                                           "fill": str(disk / ".filler")})
            row = record("disk full during training", code, err, out, copy)
            (disk / ".filler").unlink()
            code2, _, err2 = run_cli(spec.resume_argv(out))
            row["resumed_status"], row["resumed_equal"] = code2, code2 == 0 and compare(out, ref)["equal"]
            before = {p.name: p.read_bytes() for p in out.iterdir()}
            remount(disk, read_only=True)
            code, _, err = run_cli(spec.resume_argv(out, "--max-steps", str(spec.max_steps + 3)))
            row = record("read-only file system on resume", code, err, out)
            row["files_unchanged"] = before == {p.name: p.read_bytes() for p in out.iterdir()}
            code, _, err = run_cli(spec.argv(disk / "new"))
            record("read-only file system at the start", code, err, disk / "new", created=(disk / "new").exists())
    except MountError as e:
        res.append({"case": "tmpfs cases", "skipped": f"cannot mount a tmpfs: {e}"})
    return res


def numeric_faults(spec: RunSpec, work: Path) -> list[dict[str, Any]]:
    res = []
    for case, bad, extra in (
            ("2 NaN losses and 1 Inf gradient", [[0, 2, "nan-loss"], [0, 5, "nan-loss"], [0, 9, "inf-grad"]], []),
            ("Inf gradient behind clipping by value", [[0, 4, "inf-grad"]], ["--clip-value", "0.5"]),
            ("NaN from batch 8 on, --max-bad-steps 4", [[0, i, "nan-loss"] for i in range(8, 60)],
             ["--max-bad-steps", "4"])):
        out = work / re.sub(r"\W+", "-", case)
        code, stdout, err = run_cli(spec.argv(out, *extra), driver={"bad": bad})
        summary = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
        row: dict[str, Any] = {"case": case, "status": code, "skipped_steps": _int(summary.get("skipped_steps")),
                               "steps": _int(summary.get("steps")), "message": _one_line(err) if code else "",
                               "stderr_lines": len(err.strip().splitlines()), "traceback": "Traceback" in err}
        ck = load_checkpoint(out / LAST)
        row["last_step"] = ck.train_state["step"]
        row["last_finite"] = all(bool(torch.isfinite(t).all()) for k, t in ck.tensors.items()
                                 if k.startswith(("model.", "optim.")))
        print(json.dumps(row), flush=True)
        res.append(row)
    return res


# report ------------------------------------------------------------------------------------------------

def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    md = [f"Faults benchmark, {c['date']} on {c['machine']}, torch {c['torch']}, "
          f"load average {c['load_average_at_start'][0]:.1f} at the start\n",
          "Messages are quoted as printed, with the benchmark's temporary folder written `$TMP`.\n"]
    if "kill" in res:
        k = res["kill"]
        s = k["spec"]
        md += ["## Kill anywhere, resume exactly\n",
               f"`rnnlab train`, 2x{s['hidden_size']} GRU, {s['max_steps']} steps, a checkpoint every "
               f"{s['eval_interval']} steps, killed with SIGKILL and resumed; temporary files watched by "
               f"{k['watch']}. {k['seconds']:.0f} s.\n",
               "| kills | survived (all checks held) | landed inside a checkpoint write | aimed at a write, landed "
               "inside | startup | training | other atomic write | rounds | final checkpoints and log equal |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
               f"| {k['kills']} | {k['survived']} | {k['landed']['checkpoint write']} | "
               f"{k['write_aimed_landed_inside']} of {k['write_aimed']} | {k['landed']['startup']} | "
               f"{k['landed']['training']} | {k['landed']['other write']} | {len(k['rounds'])} | "
               f"{'yes, bit for bit' if k['all_rounds_equal'] else 'NO'} |",
               "\n| round | kills | finished | last/best tensors differing | max weight diff | log rows equal | "
               "temps left |", "|---:|---:|---:|---:|---:|---|---|"]
        for r in k["rounds"]:
            if "metrics" in r:
                nd = len(r[LAST]["tensors_differ"]) + len(r[BEST]["tensors_differ"])
                md.append(f"| {r['round']} | {r['kills']} | {r['finish_status']} | {nd} | "
                          f"{max(r[LAST]['max_weight_diff'], r[BEST]['max_weight_diff']):.3g} | "
                          f"{r['metrics']['equal']} ({r['metrics']['rows']} rows) | {r['leftover_temps'] or '-'} |")
            else:
                md.append(f"| {r['round']} | {r['kills']} | {r['finish_status']} | | | | |")
        problems = [p for r in k["records"] for p in r["problems"]]
        md.append("\nProblems found after kills: " + ("; ".join(problems[:10]) if problems else "none") + ".")
        md.append("\nAfter every kill: `last` and `best` load, `last` never goes back, `best` exists only with "
                  "`last` and holds the best_val `last` records (or is one evaluation ahead, killed between the "
                  "two writes), `metrics.jsonl` parses. At the end of a round: every tensor of `last` and `best` "
                  "(weights, Adam's moments and steps, RNG, carried state) equal to the uninterrupted run's "
                  "(`torch.equal`), the training state equal but for `elapsed`/`train_time`, `metrics.jsonl` the "
                  "same rows but for `elapsed` and `chars_per_sec`, no temporary file left.")
    if "loop" in res:
        k = res["loop"]
        s = k["spec"]
        mo = k["moments"]
        md += ["## The same command line, killed at random moments\n",
               f"`rnnlab train`, 2x{s['hidden_size']} GRU, {s['max_steps']} steps, evaluated every "
               f"{s['eval_interval']} steps and checkpointed every {s['checkpoint_interval_s']:g} s besides; "
               f"each kill at a moment drawn uniformly from 0 s to {k['whole_run_s']:.1f} s (the uninterrupted "
               f"run, start-up included), then the same line again:\n",
               f"`rnnlab {k['line'].replace(s['corpus'], 'corpus.txt')}`\n",
               "| kills | survived (all checks held) | before the folder existed | start-up | between config.json "
               "and the first checkpoint | training | inside a checkpoint write | rounds | final checkpoints and log "
               "equal |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
               f"| {k['kills']} | {k['survived']} | {mo['before the folder']} | {mo['startup']} | "
               f"{mo['before the first checkpoint']} | {mo['training']} | {mo['checkpoint write']} | "
               f"{len(k['rounds'])} | {'yes, bit for bit' if k['all_rounds_equal'] else 'NO'} |",
               "\n| round | kills | starts of the line | last/best tensors differing | log rows equal | temps left |",
               "|---:|---:|---:|---:|---|---|"]
        for r in k["rounds"]:
            if "metrics" in r:
                nd = len(r[LAST]["tensors_differ"]) + len(r[BEST]["tensors_differ"])
                md.append(f"| {r['round']} | {r['kills']} | {r['starts']} | {nd} | {r['metrics']['equal']} "
                          f"({r['metrics']['rows']} rows) | {r['leftover_temps'] or '-'} |")
            else:
                md.append(f"| {r['round']} | {r['kills']} | {r['starts']} | finished with status "
                          f"{r['finish_status']} | | |")
        problems = [p for r in k["records"] for p in r["problems"]]
        md.append("\nProblems found after kills: " + ("; ".join(problems[:10]) if problems else "none") + ". "
                  f"{k['seconds']:.0f} s in all.")
    if "disk" in res:
        md += ["\n## Disk full, file too large, read-only\n",
               "| case | exit | message (stderr, one line) | last checkpoint loads | last unchanged | "
               "temps left | resumed to the uninterrupted run |", "|---|---:|---|---|---|---|---|"]
        for r in res["disk"]:
            if "skipped" in r:
                md.append(f"| {r['case']} | | skipped: {r['skipped']} | | | | |")
                continue
            lines = "" if r["stderr_lines"] == 1 else f" ({r['stderr_lines']} lines)"
            md.append(f"| {r['case']} | {r['status']} | `{r['message']}`{lines} | "
                      f"{r.get('last_loads')} (step {r.get('last_step', '-')}) | {r.get('last_unchanged', '')}"
                      f"{'' if 'files_unchanged' not in r else ('all files' if r['files_unchanged'] else 'NO')} | "
                      f"{r['temps_left'] or '-'} | {r.get('resumed_equal', '')} |")
    if "numeric" in res:
        md += ["\n## NaN and Inf\n", "| case | exit | skipped steps | steps | message | last checkpoint step, "
               "finite |", "|---|---:|---:|---:|---|---|"]
        md += [f"| {r['case']} | {r['status']} | {r['skipped_steps'] or ''} | {r['steps'] or ''} | "
               f"{('`' + r['message'] + '`') if r['message'] else ''} | {r['last_step']}, {r['last_finite']} |"
               for r in res["numeric"]]
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["kill", "loop", "disk", "numeric"],
                    choices=["kill", "loop", "disk", "numeric"])
    ap.add_argument("--loop-kills", type=int, default=20, help="SIGKILLs of the same command line at random moments")
    ap.add_argument("--loop-steps", type=int, default=300,
                    help="steps of the line's run (training long enough beside a start-up of seconds)")
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs in all (several rounds)")
    ap.add_argument("--time-limit", type=float, default=600.0, help="stop killing after this many seconds")
    ap.add_argument("--steps", type=int, default=60, help="steps of each round's run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "faults.json")
    args = ap.parse_args()
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"),
                                      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                                      "torch": torch.__version__, "python": platform.python_version(),
                                      "load_average_at_start": os.getloadavg(), "root": os.geteuid() == 0,
                                      "args": {k: str(v) for k, v in vars(args).items()}}}
    print(json.dumps(res["config"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="rnnlab-faults-") as tmp:
        res["config"]["tmp"] = tmp
        work = Path(tmp)
        spec = RunSpec(corpus=str(make_corpus(work / "corpus.txt")), max_steps=args.steps)
        ref = reference(spec, work / "reference") if {"kill", "disk"} & set(args.parts) else work / "reference"
        if "kill" in args.parts:
            res["kill"] = kill_rounds(spec, work / "kill", args.kills, seed=args.seed, time_limit=args.time_limit,
                                      ref=ref)
        if "loop" in args.parts:
            loop_spec = RunSpec(corpus=spec.corpus, max_steps=args.loop_steps, eval_interval=50,
                                checkpoint_interval_s=0.25)
            res["loop"] = kill_loop(loop_spec, work / "loop", args.loop_kills, seed=args.seed,
                                    time_limit=args.time_limit)
        if "disk" in args.parts:
            res["disk"] = disk_faults(spec, work / "disk-faults", ref)
        if "numeric" in args.parts:
            res["numeric"] = numeric_faults(RunSpec(corpus=spec.corpus, max_steps=12, eval_interval=5),
                                            work / "numeric")
    res["config"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res).replace(res["config"]["tmp"], "$TMP")
    args.out.with_suffix(".md").write_text(md)
    print(md)
    print(f"written to {args.out}")
    return 0 if all(res.get(part, {}).get("all_rounds_equal", True) for part in ("kill", "loop")) else 1


if __name__ == "__main__":
    sys.exit(main())
