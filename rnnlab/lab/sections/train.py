"""The lab's section ``train``: start a small run from the page, watch its loss curve and samples, stop it.

A run trains on the built-in corpus or on a ``*.txt`` file of ``--data-dir`` (by name), with a cell
(Elman, LSTM, GRU), a width and depth within bounds and a wall-clock time cap, as one job of the
lab's :class:`~rnnlab.lab.jobs.JobRunner` (a child process with one thread, so the page's other
sections keep the other cores). Its folder, ``RUNS/<name>``, is an ordinary run: ``rnnlab train
--resume --out RUNS/<name>`` continues it and ``rnnlab sample RUNS/<name>`` reads it. It writes
``last.safetensors`` every few seconds, and the page samples from it as the run goes. Once it has a
checkpoint the run is one of the lab's models (source "trained here") in every other section.

=======  ============================  ==================================================================
GET      ``/api/lab/train/options``    the texts, cells, bounds and defaults
POST     ``/api/lab/train/start``      start a run (409 while another page run is active or the runs
                                       folder is over its cap)
GET      ``/api/lab/train/status``     a run's job, its training and validation curves (bits per token)
POST     ``/api/lab/train/stop``       stop a run (it checkpoints, then ends)
POST     ``/api/lab/train/sample``     a sample from a run's latest checkpoint
=======  ============================  ==================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from rnnlab.lab import NAME, Lab, LabError
from rnnlab.lab.jobs import Job

MIN_HIDDEN, MAX_HIDDEN = 8, 512
MAX_LAYERS = 3
MIN_BUDGET_S, MAX_BUDGET_S = 2.0, 1800.0  # wall-clock seconds a page run may train
MAX_SAMPLE_LENGTH = 1000
MAX_CURVE_POINTS = 400  # points of each curve sent to the page (evenly thinned)
CHECKPOINT_EVERY_S = 3.0  # a page run writes last.safetensors this often, for the page's samples


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StartRequest(_Request):
    text: str = Field("builtin", max_length=200, description="the text to train on: builtin or a --data-dir file's name")
    cell: Literal["elman", "lstm", "gru"] = Field("lstm", description="the recurrent cell")
    hidden_size: int = Field(128, ge=MIN_HIDDEN, le=MAX_HIDDEN, description="units per layer")
    num_layers: int = Field(1, ge=1, le=MAX_LAYERS, description="stacked recurrent layers")
    time_budget: float = Field(60.0, ge=MIN_BUDGET_S, le=MAX_BUDGET_S, allow_inf_nan=False,
                               description="wall-clock seconds of training")
    name: str | None = Field(None, max_length=40, description="the run's name (default: cell-size-N)")
    seed: int = Field(1, ge=0, le=2**31 - 1, description="the run's seed")
    # tests make a run tiny: smaller batches train faster steps
    batch_size: int = Field(32, ge=1, le=128, description="B: streams per batch")
    seq_len: int = Field(64, ge=4, le=256, description="T: characters per stream per batch")


class StopRequest(_Request):
    name: str = Field(..., max_length=40)


class SampleRequest(_Request):
    name: str = Field(..., max_length=40, description="a run trained here (or any lab model)")
    prime: str = Field("", max_length=200)
    length: int = Field(200, ge=1, le=MAX_SAMPLE_LENGTH)
    temperature: float = Field(0.8, ge=0.05, le=5.0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**31 - 1)


def run_config(lab: Lab, req: StartRequest, out: Path) -> dict[str, Any]:
    """The run config (as a dict) of a page run: one thread, the wall clock, checkpoints every few seconds."""
    from rnnlab.config import DataConfig, ModelConfig, RunConfig

    cfg = RunConfig(data=DataConfig(data=lab.text_path(req.text)))
    cfg.model = ModelConfig(cell=req.cell, hidden_size=req.hidden_size, num_layers=req.num_layers, dropout=0.0,
                            embedding_size=32)
    t = cfg.train
    t.batch_size, t.seq_len, t.time_budget, t.clock, t.threads = req.batch_size, req.seq_len, req.time_budget, "wall", 1
    t.eval_interval, t.log_interval, t.checkpoint_interval_s, t.seed, t.out = 200, 5, CHECKPOINT_EVERY_S, req.seed, str(out)
    return cfg.validate().with_absolute_paths().to_dict()


def free_name(lab: Lab, req: StartRequest) -> str:
    if req.name is not None:
        if not NAME.fullmatch(req.name):
            raise LabError(422, f"name must be 1 to 40 of a-z, 0-9, '.', '_', '-' (starting with a letter or digit), "
                                f"got {req.name!r}")
        if lab.taken(req.name):
            raise LabError(409, f"the name {req.name!r} is taken: choose another, or leave it empty")
        return req.name
    n = 1
    while lab.taken(name := f"{req.cell}-{req.hidden_size}-{n}"):
        n += 1
    return name


def curves(folder: Path) -> dict[str, list[list[float]]]:
    """``{"train": [[step, bits], ...], "val": [...]}`` from a run's ``metrics.jsonl`` (bits per token; each
    curve thinned evenly to at most :data:`MAX_CURVE_POINTS`, its last point kept)."""
    out: dict[str, list[list[float]]] = {"train": [], "val": []}
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # the line being written
        split = obj.get("split") if isinstance(obj, dict) else None
        bits = obj.get("bpc", obj.get("bpw")) if isinstance(obj, dict) else None
        if split in out and isinstance(obj.get("step"), int) and isinstance(bits, (int, float)):
            out[split].append([obj["step"], float(bits)])
    for split, pts in out.items():
        if len(pts) > MAX_CURVE_POINTS:
            every = len(pts) / MAX_CURVE_POINTS
            out[split] = [pts[int(i * every)] for i in range(MAX_CURVE_POINTS - 1)] + [pts[-1]]
    return out


def router(lab: Lab) -> APIRouter:
    from rnnlab.serve import _json

    r = APIRouter(prefix="/api/lab/train", tags=["lab: train"])

    @r.get("/options", summary="What a run from the page may be: texts, cells, bounds, defaults")
    async def options() -> Response:
        return _json({"texts": lab.texts(), "cells": ["elman", "lstm", "gru"],
                      "hidden_size": [MIN_HIDDEN, MAX_HIDDEN], "num_layers": [1, MAX_LAYERS],
                      "time_budget": [MIN_BUDGET_S, MAX_BUDGET_S], "defaults": StartRequest().model_dump(),
                      "runs_dir_mb": round(lab.runs_size_mb(), 1), "runs_max_mb": lab.runs_max_mb})

    @r.post("/start", summary="Start a run: one at a time from the page, in a child process with one thread")
    def start(req: StartRequest) -> Response:
        active = lab.jobs.active(source="page")
        if active:
            raise LabError(409, f"a run is already training from the page ({active[0].name!r}); stop it or wait "
                                "for it to end before starting another")
        lab.text_path(req.text)  # 404 for an unknown text, before anything else
        lab.check_room()
        name = free_name(lab, req)
        out = lab.runs_dir / name
        job = Job(name, "language-model", run_config(lab, req, out), "page")
        lab.runs_dir.mkdir(parents=True, exist_ok=True)
        job = lab.jobs.submit(job, front=True)  # next in line, after a lab model training now
        return _json({"name": name, "job": job.info()})  # never the folder: the page is not told server paths

    @r.get("/status", summary="A run's job and its curves (the latest page run when no name is given)")
    def status(name: str | None = Query(None, max_length=40)) -> Response:
        if name is None:
            page = lab.jobs.active(source="page")
            name = page[0].name if page else None
        if name is None:
            return _json({"name": None, "job": None, "curves": {"train": [], "val": []}})
        job = lab.jobs.get(name)
        folder = lab.run_dir(name) if job is None else job.out
        return _json({"name": name, "job": job.info() if job else None, "curves": curves(folder),
                      "checkpoint": (folder / "last.safetensors").is_file()})

    @r.post("/stop", summary="Stop a run: it finishes its step, writes its checkpoint and ends")
    def stop(req: StopRequest) -> Response:
        job = lab.jobs.get(req.name)
        if job is None or job.source != "page":
            raise LabError(404, f"no run {req.name!r} was started from this page")
        lab.jobs.stop(req.name)
        return _json({"name": req.name, "job": job.info()})

    @r.post("/sample", summary="A sample from a run's latest checkpoint (the same text rnnlab sample gives)")
    def sample(req: SampleRequest) -> Response:
        from rnnlab.config import SampleConfig
        from rnnlab.sampling import generate
        from rnnlab.serve import _encode

        entry = lab.language_model(req.name)
        _encode(entry.vocab, req.prime, "prime")
        cfg = SampleConfig(strategy="sample", length=req.length, prime=req.prime, temperature=req.temperature,
                           seed=req.seed)
        text = generate(entry.model, entry.vocab, cfg)[0]
        return _json({"name": req.name, "text": text, "prime": req.prime, "step": entry.step, "seed": req.seed,
                      "temperature": req.temperature})

    return r


__all__ = ["StartRequest", "curves", "router", "run_config"]
