"""Shared fixtures: small seeded corpora in tmp_path; the shared datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\n"
    "a cat and a dog met on a mat by a log.\n"
) * 40


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _allocator_flag_per_test(monkeypatch):
    """A run started earlier (rnnlab.loop.start_run, in a test or a module-scoped fixture) sets rnnlab.allocator for
    the process, which moves small LSTMs from the C++ kernel to nn.LSTM; each test starts with the flag unset,
    whatever ran before, and sets it only by starting a run itself."""
    from rnnlab import allocator

    monkeypatch.setattr(allocator, "_set", False)


def lab_screenshot(page, name: str) -> None:
    """Save the page as ``<name>.png`` in ``$RNNLAB_SCREENSHOTS`` when that is set (for a reviewer to look at)."""
    shots = os.environ.get("RNNLAB_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)


@pytest.fixture
def slow_streams(monkeypatch):
    """The server's scheduler taking one step a round and pausing 2 ms before each: a stream of n tokens
    then lasts at least 2n ms however fast the model is, so a test can act while streams are open."""
    import time

    from rnnlab.scheduler import Scheduler

    real = Scheduler.round

    def round_(self):
        time.sleep(0.002)
        return real(self)

    monkeypatch.setattr(Scheduler, "_round_steps", lambda self, rows, need: 1)
    monkeypatch.setattr(Scheduler, "round", round_)


class TickClock:
    """A stand-in for the training loop's ``time`` module (``monkeypatch.setattr(rnnlab.loop, "time", ...)``):
    every reading of ``perf_counter`` is ``tick`` seconds after the one before."""

    def __init__(self, tick: float):
        import time

        self.tick, self.now, self.monotonic, self.time = tick, 0.0, time.monotonic, time.time

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now

    def process_time(self) -> float:  # one process alone on the machine: its CPU time is the wall time
        return self.perf_counter()


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def shared(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test (as on a user's machine without it)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared dataset {p} not present")
    return p


NAME_STEMS = ["ivan", "petr", "boris", "oleg", "igor", "pavel", "yuri", "gleb", "lev", "roman", "ilya", "mark"]
NAME_SUFFIXES = {"Russian": "ov", "Spanish": "ez", "Italian": "ini"}


def tiny_names_classifier(folder: Path, steps: int = 20) -> Path:
    """A real classifier checkpoint in a few seconds: a 12-unit bidirectional GRU trained ``steps``
    steps on three classes of names told apart by their endings (-ov, -ez, -ini). Returns the
    run folder (``folder / "names"``); the data lie in ``folder / "names-data"``."""
    from rnnlab.classify import train_classifier
    from rnnlab.config import ClassifyRunConfig, ModelConfig

    data = folder / "names-data"
    data.mkdir(parents=True)
    for label, suffix in NAME_SUFFIXES.items():
        (data / f"{label}.txt").write_text("\n".join(s + suffix for s in NAME_STEMS) + "\n", encoding="utf-8")
    cfg = ClassifyRunConfig()
    cfg.data.data = str(data)
    cfg.data.val_fraction, cfg.data.test_fraction = 0.2, 0.2
    cfg.model = ModelConfig(cell="gru", hidden_size=12, num_layers=1, dropout=0.0, embedding_size=8)
    cfg.classifier.ensemble, cfg.classifier.input_dropout = 1, 0.0  # one small RNN, quick to train
    cfg.optim.lr, cfg.optim.weight_decay = 0.02, 0.0
    cfg.train.batch_size, cfg.train.max_steps, cfg.train.eval_interval = 8, steps, steps
    cfg.train.threads = 1  # tiny matrices: one thread is faster on a shared machine
    cfg.train.out = str(folder / "names")
    threads = torch.get_num_threads()
    try:
        train_classifier(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)  # train_classifier set it for the whole process
    return folder / "names"


# --- the lab (rnnlab.lab): its own models, tiny, trained once per pytest run -------------------------

@pytest.fixture(scope="session")
def lab_cache(tmp_path_factory) -> Path:
    """A lab cache folder holding tiny versions of every one of the lab's own models (rnnlab.lab.models.RECIPES:
    a few units, a few steps each, trained in this process), so a server on it has every model ready. Shared by
    every test of the run: copy it (shutil.copytree) before changing it."""
    from rnnlab.lab.models import RECIPES, train_now

    cache = tmp_path_factory.mktemp("lab-cache")
    for name in RECIPES:
        train_now(cache, name, tiny=True)
    return cache


def lab_app(cache: Path, checkpoints: list[str] | None = None, **options):
    """The FastAPI application of a server on this lab cache (``rnnlab serve --lab-cache CACHE``), which trains no
    lab model of its own (``train_lab_models=False``, so a missing one is reported, not trained for minutes);
    ``options`` go to :func:`rnnlab.serve.build_app` (``data_dir``, ``runs_dir``, ``token``, ...)."""
    from rnnlab.serve import build_app

    options.setdefault("runs_dir", cache / "runs")
    options.setdefault("train_lab_models", False)
    return build_app([str(c) for c in checkpoints or []], lab_cache=cache, **options)


class LabServer:
    """``rnnlab serve --lab-cache CACHE ...`` in a subprocess on a free loopback port; ``url`` once it answers.
    Use as a context manager (the server is stopped on exit); ``log`` holds its output."""

    def __init__(self, cache: Path, *args: str, log: Path | None = None):
        import os
        import socket
        import subprocess
        import sys
        import tempfile

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or Path(tempfile.mkstemp(prefix="rnnlab-lab-", suffix=".log")[1])
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rnnlab", "serve", "--lab-cache", str(cache), "--port", str(self.port),
             "--log-level", "warning", *args], stdout=self._out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def __enter__(self) -> LabServer:
        import time

        import httpx

        deadline = time.monotonic() + 180  # a bound on a hang: a loaded machine takes a while to import torch
        while True:
            try:
                if httpx.get(f"{self.url}/api/lab/sections", timeout=1).status_code in (200, 401):
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the lab's server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._out.close()
