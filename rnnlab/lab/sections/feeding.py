r"""The lab's section on how the model is fed: teacher forcing against its alternatives, run folder by run folder.

The lab's LSTMs ``lstm`` (teacher forcing), ``free-sample`` (free running, fed its own samples),
``scheduled`` (scheduled sampling) and ``professor`` (professor forcing) share one size and corpus; any
language model given on the command line or trained from the page can be put beside them.

=======  ================================  ===================================================================
GET      ``/api/lab/feeding/models``       the language models to compare, those compared by default first
POST     ``/api/lab/feeding/run``          one run's loss curves (its ``metrics.jsonl``, the points its
                                           ``curves.png`` draws: :func:`rnnlab.plots.loss_curves`), its
                                           feeding and the probability :math:`\epsilon_i` of feeding the true
                                           token at step i (:func:`rnnlab.feeding.teacher_probability`)
POST     ``/api/lab/feeding/exposure``     the exposure-bias report (:func:`rnnlab.exposure.exposure_bias`, as
                                           ``rnnlab exposure``), kept in the lab's cache per model, checkpoint
                                           and settings, since it takes seconds
POST     ``/api/lab/feeding/sample``       a sample (:func:`rnnlab.sampling.generate`: the text ``rnnlab sample
                                           RUN --prime P --length N --seed S`` prints)
=======  ================================  ===================================================================
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rnnlab import jsonio
from rnnlab.checkpoint import atomic_write
from rnnlab.config import SampleConfig
from rnnlab.data.corpus import load_corpus
from rnnlab.exposure import exposure_bias, reference_model
from rnnlab.feeding import teacher_probability
from rnnlab.metrics import unit_for
from rnnlab.plots import loss_curves, read_metrics
from rnnlab.sampling import generate
from rnnlab.serve import MAX_SEED, MAX_TEMPERATURE, MIN_TEMPERATURE, LanguageModelEntry, _encode, _json, _Request

if TYPE_CHECKING:
    from rnnlab.lab import Lab

COMPARED = ("lstm", "free-sample", "scheduled", "professor")  # the lab's runs shown by default, in this order
SCHEDULE_POINTS = 101  # points of the eps_i curve, from step 0 to the run's last logged step
MAX_PREFIXES = 20
MAX_PREFIX_LEN = 200
MAX_EXPOSURE_LENGTH = 400
MAX_BUCKETS = 20
MAX_SAMPLE = 500  # characters one sample writes
MAX_PRIME = 200
EXPOSURE_FOLDER = "exposure"  # under the lab's cache: one JSON report per model, checkpoint and settings

_MODEL = Field(COMPARED[0], min_length=1, max_length=100, description="a language model of /api/lab/models")
K = TypeVar("K")
V = TypeVar("V")


class RunRequest(_Request):
    model: str = _MODEL


class ExposureRequest(_Request):
    model: str = _MODEL
    prefixes: int = Field(8, ge=1, le=MAX_PREFIXES, description="K, prefixes of the validation text")
    prefix_len: int = Field(50, ge=1, le=MAX_PREFIX_LEN, description="tokens of each prefix")
    length: int = Field(100, ge=2, le=MAX_EXPOSURE_LENGTH, description="L, tokens generated after each prefix")
    buckets: int = Field(5, ge=1, le=MAX_BUCKETS, description="bands of the distance axis")
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
                               description="the sampling temperature of the continuations")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the first prefix's seed (prefix k draws with seed + k)")


class SampleRequest(_Request):
    model: str = _MODEL
    prime: str = Field("def ", max_length=MAX_PRIME, description="text the model reads before it writes")
    length: int = Field(200, ge=1, le=MAX_SAMPLE, description="tokens to write")
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
                               description="divide the logits by this")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the sampler's seed: the same seed, the same text")


class _Memo:
    """A few values kept by key, the least recently used dropped; one computation per key at a time."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()  # type: ignore[var-annotated]
        self.lock, self.busy = threading.Lock(), {}  # type: ignore[var-annotated]

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            key_lock = self.busy.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                if key in self.items:
                    return self.items[key]
            value = make()
            with self.lock:
                self.items[key] = value
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
                self.busy.pop(key, None)
            return value


_CORPORA = _Memo(2)  # a run's corpus, by its data config
_REFERENCES = _Memo(2)  # the exposure report's reference n-gram model, by corpus, vocabulary and order
_EXPOSURE_LOCKS = _Memo(64)  # one lock per cached report, so that two requests compute it once


def _corpus(entry: LanguageModelEntry) -> Any:
    data = entry.config.data
    return _CORPORA.get(json.dumps(data.__dict__, sort_keys=True, default=str), lambda: load_corpus(data))


def _checkpoint_file(lab: Lab, name: str, entry: LanguageModelEntry) -> Path:
    return lab.run_dir(name) / entry.file


def run_view(lab: Lab, name: str) -> dict[str, Any]:
    """One run's loss curves, its feeding and its :math:`\\epsilon_i` (see the module docstring), JSON-ready."""
    entry = lab.language_model(name)
    folder = lab.run_dir(name)
    unit = unit_for(entry.vocab.level)
    points = loss_curves(read_metrics(folder / "metrics.jsonl"), unit)
    feeding = entry.config.feeding
    options = feeding.options()
    last = max([s for s, _ in points["train"] + points["val"]] + [entry.step or 0, 1])
    steps = sorted({round(i * last / (SCHEDULE_POINTS - 1)) for i in range(SCHEDULE_POINTS)})
    eps = teacher_probability(feeding.feeding, steps, **options)
    m = entry.config.model
    return {
        "model": name, "feeding": feeding.feeding, "options": options, "unit": unit, "cell": m.cell,
        "hidden_size": m.hidden_size, "num_layers": m.num_layers, "step": entry.step,
        "train": [[s, v] for s, v in points["train"]], "val": [[s, v] for s, v in points["val"]],
        "schedule": None if eps is None else {"steps": steps, "eps": eps},
    }


def exposure(lab: Lab, req: ExposureRequest) -> dict[str, Any]:
    """The exposure-bias report of ``req.model`` with the request's settings, from the lab's cache when it holds
    it (keyed by the checkpoint file, its modification time and the settings), else computed and kept."""
    entry = lab.language_model(req.model)
    ckpt = _checkpoint_file(lab, req.model, entry)
    settings = req.model_dump(exclude={"model"})
    try:
        stamp = ckpt.stat().st_mtime_ns
    except OSError:
        stamp = 0
    key = hashlib.sha256(json.dumps([str(ckpt.resolve()), stamp, settings], sort_keys=True).encode()).hexdigest()
    path = lab.cache / EXPOSURE_FOLDER / f"{key[:32]}.json"
    with _EXPOSURE_LOCKS.get(key, threading.Lock):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            if report["config"]["prefixes"] == req.prefixes and isinstance(report["divergence"], list):
                return {"model": req.model, "cached": True, **report}
        except (OSError, ValueError, KeyError, TypeError):  # none kept yet, or a damaged file: measured again
            pass
        corpus = _corpus(entry)
        ref_order = 5  # rnnlab exposure's default
        ref = _REFERENCES.get((json.dumps(corpus.record, sort_keys=True, default=str), tuple(entry.vocab.symbols),
                               ref_order), lambda: reference_model(entry.vocab, corpus.train, ref_order))
        report = exposure_bias(entry.model, entry.vocab, corpus.val, corpus.train, ref_order=ref_order, reference=ref,
                               **settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (jsonio.dumps(report) + "\n").encode("utf-8"))
    return {"model": req.model, "cached": False, **report}


def sample(lab: Lab, req: SampleRequest) -> dict[str, Any]:
    """``req.length`` tokens after ``req.prime``, drawn with ``req.seed``: what ``rnnlab sample`` prints."""
    entry = lab.language_model(req.model)
    _encode(entry.vocab, req.prime, "prime")  # a 422 naming characters the vocabulary lacks
    cfg = SampleConfig(prime=req.prime, length=req.length, temperature=req.temperature, seed=req.seed)
    text = generate(entry.model, entry.vocab, cfg)[0]
    return {"model": req.model, "prime": req.prime, "seed": req.seed, "temperature": req.temperature,
            "length": req.length, "text": text,
            "command": f"rnnlab sample RUN --prime {json.dumps(req.prime)} --length {req.length} "
                       f"--temperature {req.temperature:g} --seed {req.seed}"}


def models(lab: Lab) -> dict[str, Any]:
    """The language models the section can compare, the default ones first."""
    lms = [m for m in lab.models() if m["kind"] == "language-model"]
    order = {name: i for i, name in enumerate(COMPARED)}
    lms.sort(key=lambda m: order.get(m["name"], len(order)))
    return {"default": [m["name"] for m in lms if m["name"] in order], "models": lms}


def router(lab: Lab) -> APIRouter:
    """The section's endpoints, on ``lab``'s language models."""
    r = APIRouter(prefix="/api/lab/feeding", tags=["lab: how the model is fed"])

    def warm() -> None:  # the reports the page asks for first (seconds each), for the models already trained
        from rnnlab.lab.models import RECIPES, is_ready

        for name in COMPARED:
            if name in RECIPES and is_ready(lab.cache, name):
                exposure(lab, ExposureRequest(model=name))

    lab.add_warm_up("feeding: exposure reports", warm)

    @r.get("/models", summary="The language models to compare, the lab's four ways of feeding first")
    def get_models() -> Response:
        return _json(models(lab))

    @r.post("/run", summary="A run's loss curves, its feeding and the probability eps_i of feeding the true token")
    def post_run(req: RunRequest) -> Response:  # plain functions: FastAPI runs them in its thread pool
        return _json(run_view(lab, req.model))

    @r.post("/exposure", summary="The exposure-bias report of a model (rnnlab exposure), cached per checkpoint")
    def post_exposure(req: ExposureRequest) -> Response:
        return _json(exposure(lab, req))

    @r.post("/sample", summary="A seeded sample: the text rnnlab sample prints with the same prime, length and seed")
    def post_sample(req: SampleRequest) -> Response:
        return _json(sample(lab, req))

    return r
