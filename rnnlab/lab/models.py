"""The lab's own small models: one recipe per name, trained once and kept in the lab's cache folder.

Every recipe trains on the built-in corpus (``builtin:python-stdlib``, character level) or, for the
classifier, on the bundled 8x8 digits, on one thread for a fixed CPU-time budget (``--clock cpu``),
so the result is the same size of model on any machine and the page's other work keeps the other
cores. The language models share one size, so that a section comparing cells or ways of feeding
compares like with like:

==============  ===============  ==================  =========================================
name            cell             feeding             what for
==============  ===============  ==================  =========================================
``elman``       Elman (tanh)     teacher forcing     the Elman network step by step; gradients
``lstm``        LSTM             teacher forcing     sampling, gradients, feeding's baseline
``gru``         GRU              teacher forcing     gradients through time
``free-sample`` LSTM             free running        how the model is fed
``scheduled``   LSTM             scheduled sampling  how the model is fed
``professor``   LSTM             professor forcing   how the model is fed
``digits``      GRU classifier   (many to one)       sequence classification
==============  ===============  ==================  =========================================

A model is ready when its folder ``CACHE/<name>/`` holds ``lab.json`` and a checkpoint; it is
trained into ``CACHE/.training-<name>-<pid>/`` and renamed into place when its run ends, so a
server killed mid-training never leaves a half model that looks ready.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rnnlab.config import ClassifyRunConfig, DataConfig, ModelConfig, RunConfig
from rnnlab.data.corpus import BUILTIN

CACHE_ENV = "RNNLAB_LAB_CACHE"  # where the lab keeps its models (default: ~/.cache/rnnlab/lab)
RECIPE_VERSION = 3  # raise it when a recipe changes: models cached by an older one are trained again
BUDGET_S = 90.0  # CPU seconds each language model trains (one thread): a minute and a half on an idle core
CLASSIFIER_BUDGET_S = 60.0  # CPU seconds for the digits classifier
MARKER = "lab.json"  # written last into a finished model's folder

Kind = Literal["language-model", "classifier"]


def default_cache() -> Path:
    """``$RNNLAB_LAB_CACHE``, else ``$XDG_CACHE_HOME/rnnlab/lab``, else ``~/.cache/rnnlab/lab``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnlab" / "lab"


@dataclass(frozen=True)
class Recipe:
    """What one of the lab's models is: its kind, cell and way of feeding; :meth:`config` gives its run."""

    name: str
    kind: Kind
    cell: str
    feeding: str  # a language model's feeding strategy; "" for the classifier
    about: str  # one line for the page

    @property
    def budget_s(self) -> float:
        return CLASSIFIER_BUDGET_S if self.kind == "classifier" else BUDGET_S

    def config(self, out: str | Path, tiny: bool = False) -> RunConfig | ClassifyRunConfig:
        """The run that makes this model in ``out``: one thread, ``budget_s`` CPU seconds. ``tiny``: a model of
        a few units trained a few steps (seconds in all), for tests."""
        if self.kind == "classifier":
            cc = ClassifyRunConfig()
            cc.data.builtin = "digits"
            cc.model.cell = self.cell
            cc.train.threads, cc.train.clock, cc.train.out = 1, "cpu", str(out)
            if tiny:
                cc.model = ModelConfig(cell=self.cell, hidden_size=8, num_layers=1, dropout=0.0, embedding_size=8)
                cc.train.max_steps, cc.train.eval_interval, cc.train.batch_size = 3, 3, 16
            else:
                cc.train.time_budget, cc.train.max_steps = self.budget_s, 0
            return cc
        cfg = RunConfig(data=DataConfig(data=BUILTIN))
        cfg.model = ModelConfig(cell=self.cell, hidden_size=128, num_layers=1, dropout=0.0, embedding_size=32)
        cfg.feeding.feeding = self.feeding  # type: ignore[assignment]
        t = cfg.train
        t.batch_size, t.seq_len, t.threads, t.clock, t.out = 32, 64, 1, "cpu", str(out)
        t.time_budget, t.eval_interval, t.log_interval = self.budget_s, 200, 10
        if tiny:
            cfg.model = ModelConfig(cell=self.cell, hidden_size=16, num_layers=1, dropout=0.0, embedding_size=8)
            cfg.data.val_fraction = 0.01
            t.batch_size, t.seq_len, t.time_budget, t.max_steps = 4, 16, 0.0, 4
            t.eval_interval, t.log_interval, t.eval_batch_size, t.plot_interval_s = 4, 2, 4, 3600.0
        return cfg


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("elman", "language-model", "elman", "teacher", "Elman network (tanh), teacher forcing"),
    Recipe("lstm", "language-model", "lstm", "teacher", "LSTM, teacher forcing"),
    Recipe("gru", "language-model", "gru", "teacher", "GRU, teacher forcing"),
    Recipe("free-sample", "language-model", "lstm", "free-sample", "LSTM, free running (fed its own samples)"),
    Recipe("scheduled", "language-model", "lstm", "scheduled", "LSTM, scheduled sampling"),
    Recipe("professor", "language-model", "lstm", "professor", "LSTM, professor forcing"),
    Recipe("digits", "classifier", "gru", "", "GRU classifier of the bundled 8x8 digits (a row a step)"),
)}


def model_dir(cache: Path, name: str) -> Path:
    return cache / name


def is_ready(cache: Path, name: str) -> bool:
    """A finished model: its marker says this recipe version, and a checkpoint is there."""
    folder = model_dir(cache, name)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and marker.get("version") == RECIPE_VERSION
            and any((folder / f).is_file() for f in ("best.safetensors", "last.safetensors")))


def training_dir(cache: Path, name: str) -> Path:
    """Where ``name`` trains before it is renamed into place (this process's own folder)."""
    return cache / f".training-{name}-{os.getpid()}"


def finish(cache: Path, name: str, trained: Path) -> Path:
    """Mark the run in ``trained`` finished and move it to ``CACHE/<name>`` (replacing a stale one); the
    marker is written before the rename, so the folder is never in place without it."""
    (trained / MARKER).write_text(json.dumps({"name": name, "version": RECIPE_VERSION}) + "\n", encoding="utf-8")
    final = model_dir(cache, name)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(trained, final)
    except OSError:  # another server finished it first: keep theirs
        shutil.rmtree(trained, ignore_errors=True)
    return final


def discard(cache: Path, name: str) -> None:
    """Remove a cached model (unreadable, or from an older recipe) so it is trained again."""
    shutil.rmtree(model_dir(cache, name), ignore_errors=True)


def clean_stale(cache: Path) -> None:
    """Remove training folders left by servers that are no longer running (killed mid-training)."""
    if not cache.is_dir():
        return
    for d in cache.glob(".training-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            (d.parent / f"{d.name}.log").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def train_now(cache: Path, name: str, tiny: bool = False) -> Path:
    """Train ``name`` in this process (no job, no child) and put it in place; for tests and scripts.
    Returns its folder."""
    recipe = RECIPES[name]
    trained = training_dir(cache, name)
    shutil.rmtree(trained, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    run_config(recipe.kind, recipe.config(trained, tiny=tiny).to_dict(), progress=False)
    return finish(cache, name, trained)


def run_config(kind: Kind, config: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Train the run described by ``config`` (a run config as a dict) with the library's own job; what the
    child process of :mod:`rnnlab.lab.jobs` calls."""
    import torch

    from rnnlab.config import from_dict

    threads = torch.get_num_threads()
    try:
        if kind == "classifier":
            from rnnlab.classify import train_classifier

            return train_classifier(from_dict(ClassifyRunConfig, config), progress=progress)
        from rnnlab.train import train

        return train(from_dict(RunConfig, config), progress=progress)
    finally:
        torch.set_num_threads(threads)  # a run sets it for the whole process


__all__ = ["BUDGET_S", "CACHE_ENV", "CLASSIFIER_BUDGET_S", "RECIPES", "RECIPE_VERSION", "Recipe", "clean_stale",
           "default_cache", "discard", "finish", "is_ready", "model_dir", "run_config", "train_now", "training_dir"]
