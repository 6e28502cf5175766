"""The lab's training jobs: one at a time, each an ordinary rnnlab run in a child process with one thread.

A :class:`JobRunner` owns one worker thread and a queue. Each :class:`Job` is a run config (as a
dict); the worker starts ``python -c <train it>`` with ``OMP_NUM_THREADS=1`` (the config says
``threads=1`` too), so the server keeps the machine's other cores, and waits for it. The child
is killed with the server (``PR_SET_PDEATHSIG`` on Linux). A job that makes one of the lab's own
models trains into a temporary folder which is renamed into place only when the run ended well;
a job started from the page trains in place (its folder is an ordinary run that ``rnnlab train
--resume`` continues and ``rnnlab sample`` reads).

Progress is read from the run's ``metrics.jsonl``: the last line's ``elapsed`` (seconds on the
run's clock) over its time budget, and its training loss. Stopping sends SIGTERM, which the
training loop answers by finishing its step, writing its checkpoint and returning.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

State = Literal["queued", "training", "done", "failed", "stopped"]
ACTIVE: tuple[State, ...] = ("queued", "training")

# the child: read the config, run the library's job; its stderr is the job's log
_CHILD = ("import json, sys; from rnnlab.lab.models import run_config; "
          "run_config(sys.argv[1], json.loads(sys.argv[2]), progress=False)")
STALL_S = 600.0  # a child whose log and metrics have not grown for this long is stuck: it is killed
POLL_S = 0.5


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Job:
    """One training run. ``final``: where the finished run is moved by ``on_done`` (the lab's own models);
    ``None``: the run stays in ``out`` (runs started from the page)."""

    name: str
    kind: Literal["language-model", "classifier"]
    config: dict[str, Any]  # the run config as a dict; config["train"]["out"] is the run folder
    source: Literal["lab", "page"]
    on_done: Callable[[Job], None] | None = None  # called in the worker after a successful run
    state: State = "queued"
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    stop_requested: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.config["train"]["out"])

    @property
    def log(self) -> Path:
        return self.out.parent / f".{self.out.name}.log"

    @property
    def budget_s(self) -> float:
        return float(self.config["train"].get("time_budget") or 0.0)

    def last_metrics(self) -> dict[str, Any] | None:
        """The last training line of the run's ``metrics.jsonl`` (None before the first)."""
        return last_train_line(self.out / "metrics.jsonl")

    def progress(self) -> dict[str, Any]:
        """``{"state", "fraction" (0..1 of the time budget, or of max_steps), "step", "loss", "elapsed", "error"}``."""
        line = self.last_metrics() or {}
        step, elapsed = line.get("step"), line.get("elapsed")
        fraction = 0.0
        if self.state in ("done",):
            fraction = 1.0
        elif self.budget_s > 0 and isinstance(elapsed, (int, float)):
            fraction = min(1.0, float(elapsed) / self.budget_s)
        elif (steps := self.config["train"].get("max_steps")) and isinstance(step, int):
            fraction = min(1.0, step / steps)
        return {"state": self.state, "fraction": round(fraction, 4), "step": step, "loss": line.get("loss"),
                "elapsed": elapsed, "budget_s": self.budget_s, "error": self.error}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, **self.progress(),
                "started": self.started, "ended": self.ended}


def last_train_line(path: Path) -> dict[str, Any] | None:
    """The last ``"split": "train"`` line of a ``metrics.jsonl`` (reading only its last few kilobytes)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a partial first line, or one being written
        if isinstance(obj, dict) and obj.get("split") == "train":
            return obj
    return None


class JobRunner:
    """Runs :class:`Job` s one at a time, in submission order (``front=True`` jumps the queue), each in a
    child process. Thread-safe."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}  # the latest job of each name
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- asking ---
    def get(self, name: str) -> Job | None:
        with self._cond:
            return self._jobs.get(name)

    def running(self) -> Job | None:
        with self._cond:
            return self._running

    def queued(self) -> list[Job]:
        with self._cond:
            return list(self._queue)

    def active(self, source: str | None = None) -> list[Job]:
        """The running job and the queued ones (of ``source`` only, when given), in the order they run."""
        with self._cond:
            jobs = ([self._running] if self._running else []) + list(self._queue)
        return [j for j in jobs if source is None or j.source == source]

    # --- acting ---
    def submit(self, job: Job, front: bool = False) -> Job:
        """Queue ``job`` (``front``: next to run); a job of the same name already queued or running is returned
        instead (moved to the front of the queue when ``front``)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the job runner is closed")
            old = self._jobs.get(job.name)
            if old is not None and old.state in ACTIVE:
                if front and old.state == "queued":
                    self._queue.remove(old)
                    self._queue.appendleft(old)
                return old
            self._jobs[job.name] = job
            if front:
                self._queue.appendleft(job)
            else:
                self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="rnnlab-lab-jobs", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job

    def stop(self, name: str) -> Job | None:
        """Stop the job ``name``: a queued one leaves the queue, a running one gets SIGTERM (it checkpoints and
        ends). Returns the job (None when there is none of that name)."""
        with self._cond:
            job = self._jobs.get(name)
            if job is None or job.state not in ACTIVE:
                return job
            job.stop_requested = True
            if job.state == "queued":
                self._queue.remove(job)
                job.state, job.ended = "stopped", time.time()
                return job
            proc = job.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return job

    def wait(self, name: str, timeout: float | None = None) -> Job | None:
        """Block until the job ``name`` has ended (or ``timeout`` seconds passed); returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (job := self._jobs.get(name)) is not None and job.state in ACTIVE:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return job

    def close(self) -> None:
        """Stop everything: the queue emptied, a running child killed (the server is going away)."""
        with self._cond:
            self._closed = True
            for job in self._queue:
                job.state, job.ended = "stopped", time.time()
            self._queue.clear()
            running = self._running
            self._cond.notify_all()
        if running is not None and running.proc is not None and running.proc.poll() is None:
            running.proc.kill()

    # --- the worker ---
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                job.state, job.started = "training", time.time()
                self._running = job
            try:
                self._run(job)
            except Exception as e:  # a job's failure never takes the worker down
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            finally:
                with self._cond:
                    job.ended = time.time()
                    self._running = None
                    self._cond.notify_all()

    def _run(self, job: Job) -> None:
        job.out.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with open(job.log, "wb") as log:
            proc = subprocess.Popen([self.python, "-c", _CHILD, job.kind, json.dumps(job.config)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            with self._cond:
                job.proc = proc
                stop_now = job.stop_requested or self._closed  # stopped between the queue and the start
            if stop_now:
                proc.send_signal(signal.SIGTERM)
            rc = self._watch(job, proc)
        job.returncode = rc
        if job.stop_requested:
            if rc not in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
                job.error = job.error or _last_line(job.log)
            job.state = "stopped"
            return
        if rc != 0:
            job.state, job.error = "failed", job.error or _last_line(job.log) or f"the run exited with status {rc}"
            return
        if job.on_done is not None:
            job.on_done(job)
        job.state = "done"


    def _watch(self, job: Job, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the child. No wall-clock cap: a CPU-clock budget on a busy machine takes as long as it takes;
        but a child whose log and metrics stop growing for :data:`STALL_S` seconds is stuck, and killed."""
        seen, since = None, time.monotonic()
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            now = _sizes(job.log, job.out / "metrics.jsonl")
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_S:
                proc.kill()
                job.error = f"the run made no progress for {STALL_S:.0f} s and was killed"
                return proc.wait()


def _sizes(*paths: Path) -> tuple[int, ...]:
    return tuple(p.stat().st_size if p.exists() else -1 for p in paths)


def _last_line(path: Path) -> str | None:
    """The log's last line that says something (a child's error), at most 300 characters."""
    try:
        lines = path.read_bytes()[-8192:].decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    lines = [ln.strip() for ln in lines if ln.strip()]
    return lines[-1][:300] if lines else None


__all__ = ["ACTIVE", "Job", "JobRunner", "last_train_line"]
