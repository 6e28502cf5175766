"""The lab: a page with one section per part of the lecture, driven by real models through the JSON API.

One :class:`Lab` per server holds what every section asks for: the lab's own small models (see
:mod:`rnnlab.lab.models`), trained on first use, one at a time, by the :class:`~rnnlab.lab.jobs.JobRunner`;
the models given on the command line; the runs trained from the page; and the texts the page may
read (the built-in corpus and the ``*.txt`` files of ``--data-dir``, by name, never by path).

Each section is a module ``rnnlab/lab/sections/<id>.py`` with ``router(lab) -> fastapi.APIRouter``
(endpoints under ``/api/lab/<id>/``) and a script ``rnnlab/web/lab/<id>.js``; :func:`mount` adds
every section of :data:`SECTIONS` whose module exists, the lab's own endpoints and the page:

=======  ===================================  ==========================================================
GET      ``/lab``                             the page (``rnnlab/web/lab/index.html``)
GET      ``/lab/assets/{file}``               its scripts and style sheet
GET      ``/api/lab/models``                  every model the lab knows, ready or not, with progress
GET      ``/api/lab/models/{name}``           one of them
POST     ``/api/lab/models/{name}/prepare``   queue its training next if it is not ready; its progress
POST     ``/api/lab/prepare``                 queue every lab model that is not ready (the page, when opened)
GET      ``/api/lab/texts``                   the texts the page may read, by name
GET      ``/api/lab/jobs``                    the running and queued training jobs
GET      ``/api/lab/warm-up``                 the background warm-up: its state and each step's seconds
=======  ===================================  ==========================================================

A model that is not trained yet raises :class:`ModelNotReady`, answered with HTTP 503
``{"error", "model", "progress": {"state", "fraction"}}``; asking for it also queues its training.

Every section's handlers compute on :data:`SECTION_THREADS` torch thread(s): the lab's models are small, so a
second thread gains little, and on a loaded machine (a training child on the other core, or other processes)
an OpenMP team waits for descheduled threads at every operation (the gradient curves were measured at 0.4 s on
one thread, 20 s on two, with the load average at 14 on two cores).

The server (:func:`rnnlab.serve.serve`, what ``rnnlab serve`` runs) warms the lab up as it starts, in one
background thread (:meth:`Lab.start_warm_up`): it loads every ready model and runs the steps the sections register
(:meth:`Lab.add_warm_up`: the n-gram counts of the built-in corpus, the exposure reports, the classifier's
scores, with the libraries they import), so that a section's first render does not pay for them; it runs again
when a lab model finishes training.

This package belongs to the web shell: it imports :mod:`rnnlab.serve` (the loaded-model entries) and
the library, and nothing in the library imports it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from rnnlab.checkpoint import CLASSIFIER, resolve
from rnnlab.errors import RnnlabError
from rnnlab.lab import models as lab_models
from rnnlab.lab.jobs import ACTIVE, Job, JobRunner

if TYPE_CHECKING:
    from rnnlab.serve import ClassifierEntry, LanguageModelEntry, Registry, ServedModel

log = logging.getLogger(__name__)

SECTIONS = ("elman", "ngrams", "sampling", "feeding", "gradients", "classify", "train")  # the lecture's order
TEXT_MAX_CHARS = 2_000_000  # characters of a text the lab reads (the built-in corpus is this long)
DEFAULT_RUNS_MAX_MB = 1024.0  # the page's runs folder: a new run is refused while it holds more than this
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")  # a run started from the page (it is also its folder's name)
ASSET = re.compile(r"[a-z0-9_-]{1,40}\.(js|css)")
SECTION_THREADS = 1  # torch threads of a section's computation (see the module docstring)


class ModelNotReady(RnnlabError):
    """A lab model that is not trained yet (its training is queued): the app answers 503 with its progress."""

    def __init__(self, name: str, progress: dict[str, Any]):
        state = progress.get("state")
        why = (f"its training failed: {progress.get('error')}" if state == "failed" else
               f"it is training ({100 * float(progress.get('fraction') or 0):.0f}%)" if state == "training" else
               "its training is queued")
        super().__init__(f"the lab's model {name!r} is not ready: {why}")
        self.name, self.progress = name, progress


class LabError(RnnlabError):
    """A request the lab refuses: ``status`` (4xx) and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Loaded:
    entry: Any  # a LanguageModelEntry or ClassifierEntry
    stamp: tuple[str, float]  # the checkpoint file and its mtime: a newer checkpoint is loaded afresh


class Lab:
    """The lab of one server.

    ``cache``: the lab's own models (default :func:`rnnlab.lab.models.default_cache`); ``registry`` and
    ``checkpoint_paths``: the models given on the command line (the server's registry, in the same order);
    ``data_dir``: a folder whose ``*.txt`` files the page may read and train on; ``runs_dir``: where runs
    started from the page go (default ``cache/runs``), refused while it holds over ``runs_max_mb``;
    ``train_models``: queue a lab model's training when it is asked for and not ready (off: only say so).
    """

    def __init__(self, cache: str | Path | None = None, registry: Registry | None = None,
                 checkpoint_paths: list[str] | None = None, data_dir: str | Path | None = None,
                 runs_dir: str | Path | None = None, runs_max_mb: float = DEFAULT_RUNS_MAX_MB,
                 train_models: bool = True, runner: JobRunner | None = None):
        from rnnlab.errors import ConfigError

        self.cache = Path(cache).expanduser() if cache is not None else lab_models.default_cache()
        self.runs_dir = Path(runs_dir).expanduser() if runs_dir is not None else self.cache / "runs"
        if runs_max_mb <= 0:
            raise ConfigError(f"the runs folder's cap must be > 0 MB, got {runs_max_mb}")
        self.runs_max_mb = runs_max_mb
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ConfigError(f"--data-dir must be a folder of text files, got {str(data_dir)!r}")
        self.train_models = train_models
        self.jobs = runner or JobRunner()
        self.registry = registry
        self._given: dict[str, tuple[ServedModel, Path]] = {}  # command line: lab name -> (entry, checkpoint)
        if registry is not None:
            for entry, given in zip(registry.entries, checkpoint_paths or [], strict=False):
                name = entry.name if entry.name not in lab_models.RECIPES else f"{entry.name}-given"
                self._given[name] = (entry, resolve(given))
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.RLock()
        self._texts: dict[str, str] = {}
        self._warm_steps: list[tuple[str, Callable[[], Any]]] = []
        self._warm_thread: threading.Thread | None = None
        self._warm_again = False
        self._warm_report: dict[str, Any] = {"state": "not started", "steps": {}}
        self._closed = threading.Event()
        lab_models.clean_stale(self.cache)

    # --- models ---------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Every model the lab can use: ``{name, kind, cell, feeding, ready, progress, source, about}``, the lab's own
        first (in :data:`~rnnlab.lab.models.RECIPES`' order), then the command line's, then the page's runs."""
        out = []
        for r in lab_models.RECIPES.values():
            ready = lab_models.is_ready(self.cache, r.name)
            out.append({"name": r.name, "kind": r.kind, "cell": r.cell, "feeding": r.feeding or None, "ready": ready,
                        "progress": self._progress(r.name, ready), "source": "lab", "about": r.about})
        for name, (entry, _) in self._given.items():
            cfg = entry.config  # type: ignore[attr-defined]
            feeding = getattr(getattr(cfg, "feeding", None), "feeding", None)
            out.append({"name": name, "kind": entry.kind, "cell": cfg.model.cell, "feeding": feeding, "ready": True,
                        "progress": {"state": "done", "fraction": 1.0}, "source": "command line",
                        "about": f"{entry.file}, given on the command line"})
        for folder in self._page_runs():
            info = _run_info(folder)
            job = self.jobs.get(folder.name)
            progress = job.progress() if job is not None else {"state": "done", "fraction": 1.0}
            out.append({"name": folder.name, "kind": info.get("kind", "language-model"), "cell": info.get("cell"),
                        "feeding": info.get("feeding"), "ready": _checkpoint(folder) is not None,
                        "progress": progress, "source": "trained here", "about": info.get("about", "")})
        return out

    def model_info(self, name: str) -> dict[str, Any]:
        for m in self.models():
            if m["name"] == name:
                return m
        raise LabError(404, f"no model {name!r} in the lab; the models are {', '.join(self._names())}")

    def language_model(self, name: str) -> LanguageModelEntry:
        """The language model ``name`` (the lab's own, one from the command line, or a run trained here), loaded.
        :class:`ModelNotReady` for a lab model not trained yet (its training is queued); a 404 for an unknown
        name, a 422 for a classifier."""
        from rnnlab.serve import LanguageModelEntry

        entry = self._entry(name)
        if not isinstance(entry, LanguageModelEntry):
            raise LabError(422, f"model {name!r} is a {entry.kind}, not a language model")
        return entry

    def classifier(self, name: str) -> ClassifierEntry:
        """The classifier ``name`` (``digits``, or one from the command line), loaded; as :meth:`language_model`."""
        from rnnlab.serve import ClassifierEntry

        entry = self._entry(name)
        if not isinstance(entry, ClassifierEntry):
            raise LabError(422, f"model {name!r} is a {entry.kind}, not a classifier; the classifiers are "
                                f"{', '.join(m['name'] for m in self.models() if m['kind'] == CLASSIFIER)} (train "
                                "one on your own texts with: rnnlab classify train --data names/, then serve it)")
        return entry

    def run_dir(self, name: str) -> Path:
        """The run folder of model ``name`` (its ``config.json``, ``metrics.jsonl``, checkpoints); the same errors
        as :meth:`language_model`. A checkpoint file given on its own has its folder as run folder."""
        with self._lock:
            if name in lab_models.RECIPES:
                self._ensure_ready(name)
                return lab_models.model_dir(self.cache, name)
            if name in self._given:
                return self._given[name][1].parent
            folder = self._page_run(name)
            if folder is not None:
                return folder
        raise LabError(404, f"no model {name!r} in the lab; the models are {', '.join(self._names())}")

    def prepare(self, name: str) -> dict[str, Any]:
        """Queue the training of lab model ``name`` next if it is not ready (a section needs it now); its entry of
        :meth:`models`."""
        if name in lab_models.RECIPES and not lab_models.is_ready(self.cache, name):
            self._queue(name, front=True)
        return self.model_info(name)

    def prepare_all(self) -> list[str]:
        """Queue every lab model that is not ready, in the lecture's order, behind what is queued (the page does
        this when it is opened, so the tabs' models are trained while the first is looked at). Nothing when this
        lab does not train its models. Returns the names queued."""
        if not self.train_models:
            return []
        missing = [n for n in lab_models.RECIPES if not lab_models.is_ready(self.cache, n)]
        for name in missing:
            job = self.jobs.get(name)
            if job is None or job.state != "failed":  # a failed one waits for an explicit prepare
                self._queue(name)
        return missing

    def _names(self) -> list[str]:
        return [m["name"] for m in self.models()]

    def _progress(self, name: str, ready: bool) -> dict[str, Any]:
        job = self.jobs.get(name)
        if ready and (job is None or job.state not in ACTIVE):
            return {"state": "done", "fraction": 1.0}
        if job is None:
            return {"state": "absent", "fraction": 0.0}
        return job.progress()

    def _queue(self, name: str, front: bool = False) -> Job:
        recipe = lab_models.RECIPES[name]
        trained = lab_models.training_dir(self.cache, name)
        job = self.jobs.get(name)
        if job is not None and job.state in ACTIVE:
            return self.jobs.submit(job, front=front)  # already queued: moved up when asked for now
        shutil.rmtree(trained, ignore_errors=True)
        self.cache.mkdir(parents=True, exist_ok=True)

        def done(job: Job) -> None:
            lab_models.finish(self.cache, name, job.out)
            job.log.unlink(missing_ok=True)
            if self._warm_thread is not None:
                self.start_warm_up()  # the new model loaded, its sections' caches filled

        return self.jobs.submit(Job(name, recipe.kind, recipe.config(trained).to_dict(), "lab", on_done=done),
                                front=front)

    def _ensure_ready(self, name: str) -> None:
        if lab_models.is_ready(self.cache, name):
            return
        job = self.jobs.get(name)
        if self.train_models and (job is None or job.state != "failed"):  # a failed one: prepare() tries again
            job = self._queue(name, front=True)
        progress = job.progress() if job is not None else {"state": "absent", "fraction": 0.0}
        if not self.train_models and job is None:
            progress["error"] = "this server does not train the lab's models"
        raise ModelNotReady(name, progress)

    def _entry(self, name: str) -> Any:
        from rnnlab.serve import LOADERS, _header_kind

        with self._lock:
            if name in self._given:
                return self._given[name][0]
            if name in lab_models.RECIPES:
                self._ensure_ready(name)
                ckpt = _checkpoint(lab_models.model_dir(self.cache, name))
            else:
                folder = self._page_run(name)
                if folder is None:
                    raise LabError(404, f"no model {name!r} in the lab; the models are {', '.join(self._names())}")
                ckpt = _checkpoint(folder, latest=True)  # a run trained here: its newest weights, even mid-run
                if ckpt is None:
                    job = self.jobs.get(name)
                    raise ModelNotReady(name, job.progress() if job else {"state": "failed", "fraction": 0.0,
                                                                          "error": "the run has no checkpoint"})
            try:
                assert ckpt is not None
                stamp = (str(ckpt), ckpt.stat().st_mtime)
                held = self._loaded.get(name)
                if held is not None and held.stamp == stamp:
                    return held.entry
                entry = LOADERS[_header_kind(ckpt)](ckpt, -1, name)
            except OSError as e:  # replaced as it was read (a run writing its checkpoint)
                raise LabError(409, f"model {name!r} cannot be read now ({e.strerror}); try again") from None
            except (RnnlabError, KeyError, ValueError, RuntimeError) as e:
                if name in lab_models.RECIPES:  # a corrupt cached model is trained again
                    lab_models.discard(self.cache, name)
                    self._ensure_ready(name)
                raise LabError(409, f"model {name!r} cannot be read ({e})") from None
            self._loaded[name] = _Loaded(entry, stamp)
            return entry

    # --- runs trained from the page ------------------------------------------------------------
    def _page_runs(self) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(d for d in self.runs_dir.iterdir() if d.is_dir() and NAME.fullmatch(d.name)
                      and (d / "config.json").is_file())

    def _page_run(self, name: str) -> Path | None:
        if not NAME.fullmatch(name):
            return None
        folder = self.runs_dir / name
        return folder if (folder / "config.json").is_file() else None

    def runs_size_mb(self) -> float:
        """The size of the runs folder, in MB (10^6 bytes)."""
        if not self.runs_dir.is_dir():
            return 0.0
        return sum(f.stat().st_size for f in self.runs_dir.rglob("*") if f.is_file()) / 1e6

    def check_room(self) -> None:
        """A 409 when the runs folder holds more than its cap (a new run would not be started)."""
        size = self.runs_size_mb()
        if size > self.runs_max_mb:
            raise LabError(409, f"the runs folder (--runs-dir) holds {size:.0f} MB, over its cap of "
                                f"{self.runs_max_mb:.0f} MB (--runs-max-mb): delete old runs there to start a new one")  # the page is never told a server path

    def taken(self, name: str) -> bool:
        """Whether ``name`` already names a model (so a new run may not take it)."""
        return (name in lab_models.RECIPES or name in self._given or (self.runs_dir / name).exists()
                or self.jobs.get(name) is not None and self.jobs.get(name).state in ACTIVE)  # type: ignore[union-attr]

    # --- texts ---------------------------------------------------------------------------------
    def texts(self) -> list[str]:
        """The texts the page may read: ``builtin`` (the built-in corpus) and every ``*.txt`` of ``--data-dir``."""
        names = ["builtin"]
        if self.data_dir is not None:
            names += sorted(f.name for f in self.data_dir.glob("*.txt") if f.is_file() and f.name != "builtin")
        return names

    def text_path(self, name: str) -> str:
        """What a run config's ``data`` is for the text ``name``: the built-in corpus, or the file's path."""
        if name == "builtin":
            from rnnlab.data.corpus import BUILTIN

            return BUILTIN
        if name not in self.texts():
            raise LabError(404, f"no text {name!r}; the texts are {', '.join(self.texts())}")
        assert self.data_dir is not None
        return str((self.data_dir / name).resolve())

    def text(self, name: str) -> str:
        """The text ``name`` (its first :data:`TEXT_MAX_CHARS` characters); a 404 for an unknown name, a 422 for a
        file that is not UTF-8 text."""
        with self._lock:
            if name in self._texts:
                return self._texts[name]
        if name == "builtin":
            from rnnlab.data.corpus import stdlib_corpus

            text = stdlib_corpus(TEXT_MAX_CHARS)[0]
        else:
            path = Path(self.text_path(name))
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read(TEXT_MAX_CHARS)
            except UnicodeDecodeError:
                raise LabError(422, f"text {name!r} is not UTF-8") from None
            except OSError as e:
                raise LabError(404, f"text {name!r} cannot be read: {e.strerror}") from None
            if not text:
                raise LabError(422, f"text {name!r} is empty")
        with self._lock:
            self._texts[name] = text
        return text

    def close(self) -> None:
        self._closed.set()
        self.jobs.close()

    # --- warming up ------------------------------------------------------------------------------
    def add_warm_up(self, name: str, step: Callable[[], Any]) -> None:
        """Register a warm-up step (a section's router does, for what its first answer would otherwise compute).
        A step may raise (a model not ready, a missing file): it is logged and the next one runs."""
        self._warm_steps.append((name, step))

    def start_warm_up(self) -> None:
        """Warm up in a background thread (one torch thread): load every ready lab model, then run each
        registered step. Called again while it runs, it runs once more after."""
        with self._lock:
            if self._warm_thread is not None and self._warm_thread.is_alive():
                self._warm_again = True
                return
            self._warm_thread = threading.Thread(target=self._warm_up, name="rnnlab-lab-warm-up", daemon=True)
            self._warm_report["state"] = "running"
            self._warm_thread.start()

    def warm_up_status(self) -> dict[str, Any]:
        """``{"state": "not started" | "running" | "done" | "stopped", "seconds", "steps": {name: seconds or
        "error: ..."}}``."""
        with self._lock:
            return {**self._warm_report, "steps": dict(self._warm_report["steps"])}

    def _warm_up(self) -> None:
        with section_threads():
            self._warm_up_steps()

    def _warm_up_steps(self) -> None:
        while True:
            t0 = time.perf_counter()
            steps: list[tuple[str, Callable[[], Any]]] = [
                (f"load {r.name}", functools.partial(self._entry, r.name)) for r in lab_models.RECIPES.values()
                if lab_models.is_ready(self.cache, r.name)]
            for name, step in [*steps, *self._warm_steps]:
                if self._closed.is_set():  # the server is going away
                    with self._lock:
                        self._warm_report["state"] = "stopped"
                    return
                t = time.perf_counter()
                try:
                    step()
                    took: Any = round(time.perf_counter() - t, 3)
                except Exception as e:  # noqa: BLE001 - a warm-up never fails the server: the request will say why
                    took = f"error: {type(e).__name__}: {e}"[:300]
                    log.debug("lab warm-up %s: %s", name, took)
                with self._lock:
                    self._warm_report["steps"][name] = took
            with self._lock:
                self._warm_report["seconds"] = round(time.perf_counter() - t0, 3)
                if not self._warm_again:
                    self._warm_report["state"] = "done"
                    log.info("the lab warmed up in %.1f s", self._warm_report["seconds"])
                    return
                self._warm_again = False


def _checkpoint(folder: Path, latest: bool = False) -> Path | None:
    """The folder's best checkpoint (``latest``: its last), else the other one, else None."""
    for f in ("last.safetensors", "best.safetensors") if latest else ("best.safetensors", "last.safetensors"):
        if (folder / f).is_file():
            return folder / f
    return None


def _run_info(folder: Path) -> dict[str, Any]:
    """kind, cell, feeding and a line about a run folder, from its config.json."""
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model, train = cfg.get("model", {}), cfg.get("train", {})
        kind = CLASSIFIER if "classifier" in cfg else "language-model"
        data = cfg.get("data", {}).get("data") or "?"
        about = (f"{model.get('cell')} {model.get('num_layers')}x{model.get('hidden_size')} on "
                 f"{Path(str(data)).name if not str(data).startswith('builtin:') else 'the built-in corpus'}"
                 f", {train.get('time_budget'):g} s")
        return {"kind": kind, "cell": model.get("cell"), "feeding": cfg.get("feeding", {}).get("feeding"),
                "about": about}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


# --- the application's side ------------------------------------------------------------------------
def page_asset(name: str) -> bytes | None:
    """A file of ``rnnlab/web/lab/`` (package data) by a plain name, else None."""
    if name != "index.html" and not ASSET.fullmatch(name):
        return None
    f = resources.files("rnnlab").joinpath("web", "lab", name)
    return f.read_bytes() if f.is_file() else None


class _SectionThreads:
    """Torch's thread count while section work runs: :data:`SECTION_THREADS`, then the process's own count again
    once no section work is running. (``torch.set_num_threads`` sets the calling thread's OpenMP team and MKL's
    count for the whole process, so the count is restored by the last one out, not by each.)"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.before: int | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        import torch

        with self.lock:
            if self.running == 0:
                self.before = torch.get_num_threads()
            self.running += 1
        torch.set_num_threads(SECTION_THREADS)
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                if self.running == 0 and self.before is not None and self.before != SECTION_THREADS:
                    torch.set_num_threads(self.before)


section_threads = _SectionThreads()


def _on_section_threads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a plain handler, run in FastAPI's thread pool) computing on :data:`SECTION_THREADS` torch threads."""

    @functools.wraps(fn)  # FastAPI reads the handler's signature through __wrapped__
    def handler(*args: Any, **kwargs: Any) -> Any:
        with section_threads():
            return fn(*args, **kwargs)

    return handler


class SectionRouter(APIRouter):
    """A router whose plain (``def``) handlers compute on :data:`SECTION_THREADS` torch threads; :func:`mount`
    includes every section's router through one."""

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _on_section_threads(endpoint)
        super().add_api_route(path, endpoint, **kwargs)


def section_modules() -> list[str]:
    """The section ids of :data:`SECTIONS` whose module ``rnnlab.lab.sections.<id>`` exists."""
    return [s for s in SECTIONS if importlib.util.find_spec(f"rnnlab.lab.sections.{s}") is not None]


def mount(app: FastAPI, lab: Lab) -> None:
    """Add the lab to ``app``: its page at ``/lab``, its own endpoints, every section's router and the answers
    to :class:`ModelNotReady` (503) and :class:`LabError` (its status)."""
    from rnnlab.serve import _error, _json

    app.state.lab = lab

    @app.exception_handler(ModelNotReady)
    async def _not_ready(request: Request, exc: ModelNotReady) -> Response:
        resp = _error(503, str(exc), model=exc.name, progress=exc.progress)
        resp.headers["Retry-After"] = "5"
        return resp

    @app.exception_handler(LabError)
    async def _lab_error(request: Request, exc: LabError) -> Response:
        return _error(exc.status, exc.message)

    r = APIRouter()
    csp = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
           "connect-src 'self'; frame-ancestors 'none'")

    @r.get("/lab", include_in_schema=False)
    async def lab_page(request: Request) -> HTMLResponse:
        return HTMLResponse(lab_html(request.query_params.get("token")), headers={
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache", "Content-Security-Policy": csp})

    app.state.lab_page = lab_page  # also the page at / when the server was given no checkpoint

    @r.get("/lab/assets/{name}", include_in_schema=False)
    async def lab_asset(name: str) -> Response:
        body = page_asset(name)
        if body is None or name == "index.html":
            raise LabError(404, f"no file {name!r} in the lab's page")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(body, media_type=f"{media}; charset=utf-8",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @r.get("/api/lab/models", summary="The lab's models: its own, the command line's, the runs trained here")
    async def models() -> Response:
        return _json(lab.models())

    @r.get("/api/lab/models/{name}", summary="One of the lab's models, with its training progress")
    async def model(name: str) -> Response:
        return _json(lab.model_info(name))

    @r.post("/api/lab/models/{name}/prepare", summary="Queue the training of a lab model that is not ready")
    async def prepare(name: str) -> Response:
        return _json(lab.prepare(name))

    @r.post("/api/lab/prepare", summary="Queue the training of every lab model that is not ready")
    async def prepare_all() -> Response:
        return _json({"queued": lab.prepare_all()})

    @r.get("/api/lab/texts", summary="The texts the page may read and train on, by name")
    async def texts() -> Response:
        return _json({"texts": lab.texts()})

    @r.get("/api/lab/jobs", summary="The training job running now and those queued, in order")
    async def jobs() -> Response:
        return _json({"jobs": [j.info() for j in lab.jobs.active()]})

    @r.get("/api/lab/sections", summary="The lab's sections, in the lecture's order")
    async def sections() -> Response:
        return _json({"sections": section_modules()})

    @r.get("/api/lab/warm-up", summary="The background warm-up: its state and each step's seconds")
    async def warm_up() -> Response:
        return _json(lab.warm_up_status())

    app.include_router(r)
    for sid in section_modules():
        module = importlib.import_module(f"rnnlab.lab.sections.{sid}")
        routed = SectionRouter()
        routed.include_router(module.router(lab))
        app.include_router(routed)


def lab_html(token: str | None) -> str:
    """The page, its assets' addresses carrying ``token`` (a script tag cannot send a header)."""
    from rnnlab.serve import TOKEN_PATTERN

    body = page_asset("index.html") or b""
    q = f"?token={token}" if token and TOKEN_PATTERN.fullmatch(token) else ""  # only a token's characters
    scripts = "\n".join(f'<script src="/lab/assets/{s}.js{q}" defer></script>' for s in section_modules())
    return body.decode("utf-8").replace("{{q}}", q).replace("{{sections}}", scripts)


__all__ = ["DEFAULT_RUNS_MAX_MB", "SECTIONS", "SECTION_THREADS", "Lab", "LabError", "ModelNotReady", "SectionRouter",
           "lab_html", "mount", "section_modules"]
