"""The web server's library side: the models it was given, a JSON API, and one page.

:func:`build_app` loads the checkpoints named at startup into a registry and returns an
ASGI application (FastAPI, so the API is described at ``/openapi.json`` and browsable
at ``/docs``); :func:`serve` runs it with uvicorn, bound to 127.0.0.1 unless told
otherwise. The shell (``rnnlab serve``) only calls :func:`serve`.

The API (every answer JSON; every error ``{"error": one line, ...}`` with a 4xx status):

=======  ==========================  ==================================================
GET      ``/``                       the page (``rnnlab/web/index.html``)
GET      ``/api/models``             the models: name, kind, vocabulary, cell, sizes
GET      ``/api/models/{model}``     one model, with its vocabulary
GET      ``/api/limits``             the bounds every request is checked against
POST     ``/api/generate``           a sample, streamed as NDJSON, one line per token,
                                     each with the model's top next-token probabilities
POST     ``/api/score``              a text's per-token probabilities and bits per token
POST     ``/api/activations``        one layer's units (and an LSTM's cell state and
                                     gates) over a text, units ranked by how they vary
POST     ``/api/classify``           a classifier's class probabilities for a text
=======  ==========================  ==================================================

Language models answer generate, score and activations; classifiers answer classify.
Asking a model for what its kind does not do is a 422 that says which endpoint it
answers instead.

A model is named by its index in the startup list or by its name (the run folder's or
file's name); nothing a client sends is ever used as a path. Generation runs in one
:class:`~rnnlab.scheduler.Scheduler` per model, on its own thread: every active stream
advances in the same batched steps, a few a round (as many as fit in about 20 ms: one for a
large batch, dozens for a lone stream, whose lines then go out together), each drawing from
its own seeded generator, so a seed gives the text ``rnnlab sample`` gives with it, whatever
else is being served. A new stream's prime is read between rounds, and it draws its first
token in the round after it arrives. The
other model work (scoring, stepping the cells) runs in a thread pool of ``workers``
threads, so the event loop keeps serving every other client.

Beyond loopback every request, the page's included, carries a token (``Authorization: Bearer
TOKEN`` or ``?token=TOKEN``; the page keeps the one its address carried and sends it as a
header), compared in constant time; without it the answer is a 401 before any work. A cookie
never counts, the access log shows ``token=[redacted]``, and ``certfile``/``keyfile`` serve
HTTPS. On loopback the Host header is checked instead (DNS rebinding). Each client (address)
streams at most ``max_streams`` generations at once, the server :data:`MAX_ACTIVE_STREAMS`;
one more is a 429, never a queue. So memory is bounded: a stream buffers at most its whole
answer (``length`` + 2 lines, each under 1 KB at ``top`` 20: under 2 MB), its state and a
round's rows of logits; the scheduler adds three prepared copies of each model's weights.

Checkpoint kinds are registered in :data:`rnnlab.checkpoint.KINDS`; each says the role the
server gives it (``serve_as``), and :data:`LOADERS` maps a role to a loader returning a
:class:`ServedModel`; the endpoints ask the registry for the role they need
(:meth:`Registry.language_model`, :meth:`Registry.classifier`). A new kind served as a language
model or a classifier registers itself alone; a new role adds a loader, an entry class and its
endpoints.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnlab import __version__, jsonio
from rnnlab.checkpoint import CLASSIFIER, KINDS, LANGUAGE_MODEL, header_kind, load_checkpoint, resolve
from rnnlab.config import ClassifyRunConfig, RunConfig, SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.errors import CheckpointError, ConfigError, RnnlabError, VocabError
from rnnlab.introspect import anatomy, layer_activations, rank_units, score_tokens
from rnnlab.metrics import unit_for
from rnnlab.nn.classifier import RNNClassifier
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.decoding import prime_end
from rnnlab.sampling import encode_prime
from rnnlab.scheduler import Reported, Scheduler, Stream, report

# Limits: every request is checked against these before any model work starts.
MAX_PRIME_CHARS = 2_000  # characters of a prime
MAX_LENGTH = 2_000  # tokens generated by one request
MAX_TEXT_CHARS = 10_000  # characters scored or classified by one request (one fused pass)
MAX_INSPECT_CHARS = 2_000  # characters stepped through for activations (every gate of a layer is kept)
MAX_UNITS = 64  # units whose activations one answer carries
MAX_TOP = 20  # most probable next tokens reported per step
MAX_TOP_K = 1_000_000  # top-k larger than the vocabulary is the same as 0 (all)
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0  # outside this the softmax under- or overflows to nonsense
MAX_SEED = 2**63 - 1
MAX_BODY_BYTES = 256 * 1024  # a request body; the largest valid one (10,000 escaped characters) is ~120 KB
DEFAULT_WORKERS = 4  # model computations at once; more requests wait their turn in the pool
# A generation's lines are written when FLUSH_TOKENS of them wait, or at most FLUSH_SECONDS after its previous write
# (the first token's line and the end at once): a write costs the event loop and the client far more than a line,
# so many streams on a loaded machine would otherwise spend the cores on writes that each carry a token or two
FLUSH_TOKENS = 16
FLUSH_SECONDS = 0.25
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_MAX_STREAMS = 8  # generations one client (its address) streams at once; one more is a 429
MAX_ACTIVE_STREAMS = 256  # generations the whole server streams at once; one more is a 429
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, from the fastapi-offline package
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")  # URL-safe as it stands, long enough not to be guessed


# --- the registry -------------------------------------------------------------------------
@dataclass
class ServedModel:
    """A checkpoint loaded for serving. Subclasses (one per checkpoint kind) add what they can do."""

    index: int  # position in the startup list
    name: str  # unique, [A-Za-z0-9._-], never only digits (so it cannot be read as an index)
    kind: str  # the checkpoint's "kind" metadata
    file: str  # the checkpoint's file name (its folder is never shown)

    def info(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "kind": self.kind, "file": self.file}

    def detail(self) -> dict[str, Any]:
        return self.info()


@dataclass
class LanguageModelEntry(ServedModel):
    """A recurrent language model: it can generate, score and show its units."""

    model: RNNLanguageModel
    vocab: Vocab
    config: RunConfig
    step: int | None  # training steps behind the weights, when the checkpoint says

    def info(self) -> dict[str, Any]:
        m = self.config.model
        body = anatomy(self.model.rnn.cells[0])
        return {**super().info(), "level": self.vocab.level, "unit": unit_for(self.vocab.level),
                "vocab_size": len(self.vocab), "cell": m.cell, "num_layers": m.num_layers,
                "hidden_size": m.hidden_size, "input": m.input, "embedding_size": m.embedding_size,
                "parameters": self.model.num_parameters(), "step": self.step,
                "quantities": list(body.quantities),
                "bounds": {q: (list(b) if (b := body.bounds.get(q)) else None) for q in body.quantities}}

    def detail(self) -> dict[str, Any]:
        return {**self.info(), "symbols": self.vocab.symbols}

    @cached_property
    def json_symbols(self) -> list[str]:
        """Each symbol as a JSON string (ASCII, as json.dumps writes it), by id: the streamed lines' text."""
        return [json.dumps(sym) for sym in self.vocab.symbols]


@dataclass
class ClassifierEntry(ServedModel):
    """A sequence classifier: it gives the class probabilities of a text (or, without a
    vocabulary, of a sequence of vectors, which this server does not take)."""

    model: RNNClassifier
    vocab: Vocab | None  # None: the classifier reads vector sequences
    config: ClassifyRunConfig
    labels: list[str]  # the class names, in the order of the model's outputs
    feature_size: int  # F of a vector classifier's inputs; 0 for text
    step: int | None

    @property
    def reads(self) -> str:
        return "vectors" if self.vocab is None else "text"

    def info(self) -> dict[str, Any]:
        m, vocab = self.config.model, self.vocab
        return {**super().info(), "classes": list(self.labels), "num_classes": len(self.labels),
                "reads": self.reads, "level": vocab.level if vocab else None,
                "vocab_size": len(vocab) if vocab else None, "feature_size": self.feature_size or None,
                "cell": m.cell, "num_layers": m.num_layers, "hidden_size": m.hidden_size,
                "bidirectional": self.config.classifier.bidirectional,
                "input": m.input if vocab else "vectors", "embedding_size": m.embedding_size if vocab else None,
                "parameters": self.model.num_parameters(), "step": self.step}

    def detail(self) -> dict[str, Any]:
        return {**self.info(), "symbols": self.vocab.symbols if self.vocab else None}


Loader = Callable[[Path, int, str], ServedModel]  # checkpoint file, index, name -> entry


def _step(ckpt: Any) -> int | None:
    step = ckpt.train_state.get("step")
    return step if isinstance(step, int) else None


def load_language_model(path: Path, index: int, name: str) -> LanguageModelEntry:
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    model.eval()
    return LanguageModelEntry(index, name, LANGUAGE_MODEL, path.name, model, ckpt.vocab, ckpt.config, _step(ckpt))


def load_classifier_entry(path: Path, index: int, name: str) -> ClassifierEntry:
    from rnnlab.classify import load_classifier  # here: a server of language models never imports training code

    model, ckpt = load_classifier(path)  # in eval mode
    feature_size = ckpt.extra.get("feature_size", 0)
    return ClassifierEntry(index, name, CLASSIFIER, path.name, model, ckpt.vocab, ckpt.config, ckpt.labels,
                           feature_size if isinstance(feature_size, int) else 0, _step(ckpt))


LOADERS: dict[str, Loader] = {LANGUAGE_MODEL: load_language_model, CLASSIFIER: load_classifier_entry}
"""The server's roles (a checkpoint kind's ``serve_as``), each with its loader."""


def _header_kind(path: Path) -> str:
    """The role the server gives a checkpoint file (a key of :data:`LOADERS`): its registered kind's ``serve_as``
    (:data:`rnnlab.checkpoint.KINDS`), else the header's ``kind`` itself (``language-model`` when absent or
    unreadable: its loader then says precisely what is wrong)."""
    tag = header_kind(path)
    kind = KINDS.get(tag)
    return kind.serve_as if kind is not None and kind.serve_as is not None else tag


def _model_name(path: Path) -> str:
    stem = path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"
    return f"model-{name}" if name.isascii() and name.isdigit() else name


def _index(ref: str) -> int | None:
    """``"3"`` -> 3; anything else (``"03"``, ``"²"``, ``" 3"``, a path) -> None."""
    return int(ref) if ref.isascii() and ref.isdigit() and len(ref) < 10 and str(int(ref)) == ref else None


class Registry:
    """The models given at startup, by index and by name; nothing else can be reached."""

    def __init__(self, entries: list[ServedModel]):
        self.entries = entries
        self.by_name = {e.name: e for e in entries}

    @classmethod
    def load(cls, checkpoint_paths: list[str], allow_empty: bool = False) -> Registry:
        if not checkpoint_paths and not allow_empty:
            raise ConfigError("the server needs at least one checkpoint (a .safetensors file or a run folder)")
        entries: list[ServedModel] = []
        taken: set[str] = set()
        for i, given in enumerate(checkpoint_paths):
            path = resolve(given)
            kind = _header_kind(path)
            if kind not in LOADERS:
                raise CheckpointError(f"{path} is a {header_kind(path)!r} checkpoint; this server serves "
                                      f"{', '.join(LOADERS)}")
            name = base = _model_name(path)
            n = 2
            while name in taken:
                name, n = f"{base}-{n}", n + 1
            taken.add(name)
            entries.append(LOADERS[kind](path, i, name))
        return cls(entries)

    def get(self, ref: int | str) -> ServedModel:
        """The model named ``ref``, or at index ``ref`` (an int, or a string of its canonical digits)."""
        entry = self.by_name.get(ref) if isinstance(ref, str) else None
        if entry is None:
            idx = ref if isinstance(ref, int) else _index(ref)
            if idx is not None and 0 <= idx < len(self.entries):
                entry = self.entries[idx]
        if entry is None:
            known = ", ".join(f"{e.index}: {e.name}" for e in self.entries[:20])
            raise ApiError(404, f"no model {ref!r}; the models are {known}")
        return entry

    def language_model(self, ref: int | str, endpoint: str = "this") -> LanguageModelEntry:
        """The language model ``ref`` names; a 422 naming what it is when it is another kind."""
        entry = self.get(ref)
        if not isinstance(entry, LanguageModelEntry):
            instead = "; send its texts to /api/classify" if isinstance(entry, ClassifierEntry) else ""
            raise ApiError(422, f"model {entry.name!r} is a {entry.kind}; {endpoint} needs a language model{instead}")
        return entry

    def classifier(self, ref: int | str, endpoint: str = "this") -> ClassifierEntry:
        """The classifier ``ref`` names; a 422 naming what it is when it is another kind."""
        entry = self.get(ref)
        if not isinstance(entry, ClassifierEntry):
            instead = (" (it answers /api/generate, /api/score and /api/activations)"
                       if isinstance(entry, LanguageModelEntry) else "")
            raise ApiError(422, f"model {entry.name!r} is a {entry.kind}, not a classifier; {endpoint} needs "
                                f"a classifier{instead}")
        return entry


# --- requests and answers (they are also the OpenAPI schema) ---------------------------------
ModelRef = int | str
_MODEL = Field(0, description="the model: its index in /api/models or its name")


class _Request(BaseModel):
    # strict: a number is not a string, true is not 1 and 1.0 is not a model index; unknown keys are refused
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateRequest(_Request):
    model: ModelRef = _MODEL
    prime: str = Field("", max_length=MAX_PRIME_CHARS, description="text the model reads before it writes")
    strategy: Literal["sample", "argmax"] = Field(
        "sample", description="sample from the (tempered, truncated) softmax, or take the most probable token")
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
                               description="divide the logits by this: < 1 sharpens, > 1 flattens")
    top_k: int = Field(0, ge=0, le=MAX_TOP_K, description="sample among the k most probable tokens (0: all)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False,
                         description="sample from the smallest set whose probability reaches p (nucleus)")
    length: int = Field(200, ge=0, le=MAX_LENGTH, description="tokens to generate")
    seed: int | None = Field(None, ge=0, le=MAX_SEED,
                             description="the same seed and settings give the same text (unset: a fresh seed, "
                                         "reported in the first line)")
    top: int = Field(5, ge=0, le=MAX_TOP, description="next-token probabilities reported per step")


class ScoreRequest(_Request):
    model: ModelRef = _MODEL
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="the text to score")
    top: int = Field(5, ge=0, le=MAX_TOP, description="the model's most probable tokens reported per step")


class ActivationsRequest(_Request):
    model: ModelRef = _MODEL
    text: str = Field(..., min_length=1, max_length=MAX_INSPECT_CHARS, description="the text to read")
    layer: int = Field(0, ge=0, description="the layer, 0 for the bottom")
    units: list[int] | None = Field(None, max_length=MAX_UNITS,
                                    description="the units to return (default: the top_units most varying)")
    top_units: int = Field(8, ge=0, le=MAX_UNITS, description="how many top-ranked units to return when units is unset")
    rank_by: str = Field("h", max_length=8, description="the quantity whose standard deviation over the text ranks the "
                                                        "units: h, or for an LSTM c, i, f, g, o; for a GRU r, z, n")


class ClassifyRequest(_Request):
    model: ModelRef = _MODEL
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="the text to classify")
    top: int = Field(5, ge=1, description="the most probable classes to return, 1 to the model's number of "
                                          "classes (unset: 5, or all the classes when there are fewer)")


class ErrorAnswer(BaseModel):
    error: str = Field(description="what is wrong, in one line")
    detail: Any = Field(None, description="the validation errors, when there are several")
    unknown: list[str] | None = Field(None, description="characters the model's vocabulary lacks")


class ModelInfo(BaseModel):
    index: int
    name: str
    kind: str
    file: str
    level: str | None = None
    unit: str | None = Field(None, description="bpc (bits per character) or bpw (bits per word)")
    vocab_size: int | None = None
    cell: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    input: str | None = Field(None, description="the input layer: embedding or onehot (vectors for a classifier of vectors)")
    embedding_size: int | None = None
    parameters: int | None = None
    step: int | None = None
    quantities: list[str] | None = Field(None, description="what /api/activations can show for this cell")
    bounds: dict[str, list[float] | None] | None = Field(None, description="the range of each quantity (null: unbounded)")
    symbols: list[str] | None = Field(None, description="the vocabulary (in /api/models/{model} only)")
    classes: list[str] | None = Field(None, description="a classifier's class names, in the order of its outputs")
    num_classes: int | None = None
    reads: Literal["text", "vectors"] | None = Field(
        None, description="what a classifier reads: text (through /api/classify) or vector sequences")
    feature_size: int | None = Field(None, description="the size of each vector a vector classifier reads")
    bidirectional: bool | None = Field(None, description="a classifier that also reads each sequence backwards")


class Candidate(BaseModel):
    text: str
    p: float


class ScoreAnswer(BaseModel):
    model: str
    unit: str = Field(description="bpc or bpw")
    tokens: list[str] = Field(description="the text cut into tokens, as written (at word level with the spaces)")
    prob: list[float | None] = Field(description="p(token | the tokens before it); null for the first token")
    bits: list[float | None] = Field(description="-log2 prob")
    running_bits: list[float | None] = Field(description="mean bits per token up to and including this one")
    mean_bits: float | None = Field(description="mean bits per token over the text (null for one token)")
    top: list[list[Candidate] | None] = Field(description="the model's most probable tokens at each step")


class UnitTrace(BaseModel):
    unit: int
    std: float = Field(description="standard deviation over the text of the rank_by quantity")
    values: dict[str, list[float]] = Field(description="each quantity over the text, one value per token")


class RankedUnit(BaseModel):
    unit: int
    std: float


class ActivationsAnswer(BaseModel):
    model: str
    layer: int
    num_layers: int
    hidden_size: int
    tokens: list[str]
    quantities: list[str]
    bounds: dict[str, list[float] | None]
    rank_by: str
    ranking: list[RankedUnit] = Field(description="every unit, most varying first")
    units: list[UnitTrace]


class ClassProb(BaseModel):
    label: str
    prob: float


class ClassifyAnswer(BaseModel):
    model: str
    classes: list[ClassProb] = Field(description="the top classes, most probable first (probabilities of all the "
                                                 "classes sum to 1)")
    tokens: list[str] = Field(description="the text cut into tokens as the classifier read it")


class Limits(BaseModel):
    max_prime_chars: int = MAX_PRIME_CHARS
    max_length: int = MAX_LENGTH
    max_text_chars: int = MAX_TEXT_CHARS
    max_inspect_chars: int = MAX_INSPECT_CHARS
    max_units: int = MAX_UNITS
    max_top: int = MAX_TOP
    min_temperature: float = MIN_TEMPERATURE
    max_temperature: float = MAX_TEMPERATURE
    max_body_bytes: int = MAX_BODY_BYTES


# --- errors ---------------------------------------------------------------------------------
class ApiError(RnnlabError):
    """An answer with a 4xx status and ``{"error": message, ...}``."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _json(obj: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        if e.get("type") == "json_invalid":  # loc is ("body", character offset)
            why = (e.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON{f' ({why})' if why else ''}")
            continue
        loc = [str(x) for x in e.get("loc", ()) if x != "body"] or ["body"]
        parts.append(f"{'.'.join(loc)}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _encode(vocab: Vocab, text: str, what: str, at_least: int = 0) -> np.ndarray:
    try:
        ids = vocab.encode(text)
    except VocabError as e:
        raise ApiError(422, f"{what}: {e}", unknown=vocab.unknown(text)) from None
    if len(ids) < at_least:
        raise ApiError(422, f"{what} holds no {vocab.level}s" if not len(ids) else
                       f"{what} holds {len(ids)} {vocab.level}(s); at least {at_least} are needed")
    return ids


def _pieces(vocab: Vocab, tokens: list[str]) -> list[str]:
    """Tokens as written (a separating space before a word where the text would have one)."""
    out, prev = [], None
    for t in tokens:
        out.append(vocab.separator(prev, t) + t)
        prev = t
    return out


class _TrustedHosts(TrustedHostMiddleware):
    """Starlette's check of the Host header, its refusal sent as JSON like every other error (400)."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]):
        async def passed(scope: Scope, receive: Receive, send: Send) -> None:
            scope["rnnlab.host_passed"] = True  # the check let the request through: its answer is the app's
            await app(scope, receive, send)

        super().__init__(passed, allowed_hosts=allowed_hosts, www_redirect=False)
        self.names = ", ".join(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def refuse_as_json(message: Message) -> None:
            if scope.get("rnnlab.host_passed"):
                await send(message)
            elif message["type"] == "http.response.start":  # the check's plain-text refusal: ours instead
                host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
                await _error(400, f"this server answers requests addressed to {self.names} only "
                                  f"(the Host header was {host[:100]!r})")(scope, receive, send)
            # and the plain-text body is dropped

        await super().__call__(scope, receive, refuse_as_json)


class _BodyLimit:
    """Refuse a request body over ``max_bytes`` (413) before the framework reads it into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _error(413, f"request body over {self.max_bytes} bytes")(scope, receive, send)
            return
        body, more = b"", True
        while more:  # no (or a false) content-length: read, but never past the limit
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                await _error(413, f"request body over {self.max_bytes} bytes")(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the real channel (a disconnect)

        await self.app(scope, replay, send)


# --- the token, the stream limits, the access log ---------------------------------------------------
def new_token() -> str:
    """A fresh token for a server reachable from other machines (192 random bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    """``token`` if it is usable (16 to 256 of ``A-Z a-z 0-9 . _ ~ -``, so a URL carries it unescaped);
    else a :class:`~rnnlab.errors.ConfigError` saying what is expected."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError(f"a token must be 16 to 256 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'; got "
                          f"{len(token)} character(s){'' if token.isascii() else ', not all ASCII'}")
    return token


def _presented_token(scope: Scope) -> bytes | None:
    """The token a request carries: ``Authorization: Bearer TOKEN``, else ``?token=TOKEN``. A cookie never
    counts (a browser sends cookies with requests that other sites make it send)."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return given.strip()
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        if key == "token":
            return value.encode("latin-1")
    return None


class _TokenGate:
    """Every request must carry the token (:func:`_presented_token`), compared in constant time; without it,
    or with another, the answer is a 401 before the request reaches the application (no model work, no body
    read)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _presented_token(scope)
        if given is not None and hmac.compare_digest(given, self.token):
            await self.app(scope, receive, send)
            return
        why = ("this server needs its token: send the header 'Authorization: Bearer TOKEN' or add ?token=TOKEN "
               "(the address rnnlab serve printed carries it)" if given is None else "the token is wrong")
        resp = _error(401, why)
        resp.headers["WWW-Authenticate"] = "Bearer"
        await resp(scope, receive, send)


class StreamLimits:
    """Concurrent generations, counted per client (its address) and over the whole server; a stream over
    either bound is refused (429) instead of waiting in a queue without bound."""

    def __init__(self, per_client: int = DEFAULT_MAX_STREAMS, total: int = MAX_ACTIVE_STREAMS):
        if per_client < 1 or total < 1:
            raise ConfigError(f"stream limits must be >= 1, got {per_client} per client and {total} in all")
        self.per_client, self.total = per_client, total
        self.open: dict[str, int] = {}

    @property
    def active(self) -> int:
        return sum(self.open.values())

    def take(self, client: str) -> Callable[[], None]:
        """Count one more stream for ``client``; returns the release (idempotent). An ApiError(429) when full."""
        if self.open.get(client, 0) >= self.per_client:
            raise ApiError(429, f"this client already streams {self.per_client} generation(s), the most one client "
                                "may at once; wait for one to end")
        if self.active >= self.total:
            raise ApiError(429, f"the server streams {self.total} generations, as many as it takes; try again soon")
        self.open[client] = self.open.get(client, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[client] -= 1
                if not self.open[client]:
                    del self.open[client]
        return release


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s#\"]*")


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` query parameter replaced by ``[redacted]``."""
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactToken(logging.Filter):
    """Keeps ``?token=`` out of the logs: uvicorn's access line carries the request's path and query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`RedactToken` on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_token"] = {"()": RedactToken}
    for handler in cfg["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact_token"]
    return cfg


# --- the model work (runs in the pool) ---------------------------------------------------------
class _Stream(StreamingResponse):
    """A streamed answer that gives back its stream's place (:class:`StreamLimits`) however it ends, even
    when the client leaves before the first line."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def _line(obj: dict[str, Any]) -> bytes:
    """One NDJSON line, compact."""
    return (jsonio.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")


def _candidates(vocab: Vocab, ids: np.ndarray, probs: np.ndarray) -> list[dict[str, Any]]:
    return [{"text": vocab.symbols[int(i)], "p": float(p)} for i, p in zip(ids, probs)]


class _Wakeups:
    """The futures of one event loop that the scheduler's thread sets: collected from that thread and set on the
    loop in one callback, so a round that hands lines to many streams wakes the loop once, not once a stream."""

    _of_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wakeups] = weakref.WeakKeyDictionary()
    _of_loop_lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = weakref.ref(loop)  # the registry's key: held weakly, so a loop gone takes its entry along
        self._lock = threading.Lock()
        self._due: list[asyncio.Future[None]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Wakeups:
        with cls._of_loop_lock:
            wakeups = cls._of_loop.get(loop)
            if wakeups is None:
                wakeups = cls._of_loop[loop] = cls(loop)
            return wakeups

    def wake(self, waiter: asyncio.Future[None]) -> None:
        """Set ``waiter`` (any thread): on the loop, with every other waiter handed over before it runs."""
        with self._lock:
            self._due.append(waiter)
            if len(self._due) > 1:  # the callback is on its way
                return
        loop = self._loop()
        try:
            if loop is not None:
                loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop closed (the server stopping): nobody waits any more
            pass

    def _run(self) -> None:
        with self._lock:
            due, self._due = self._due, []
        for waiter in due:
            if not waiter.done():
                waiter.set_result(None)


class _Generation(Stream):
    """One streamed sample, advanced by its model's :class:`~rnnlab.scheduler.Scheduler`: each token becomes
    an NDJSON line in a buffer that the response drains. The first token's line goes out at once, the end line
    too; the others wait until :data:`FLUSH_TOKENS` lines are waiting or the clock enters the next period of
    :data:`FLUSH_SECONDS` (at most that long after the stream's last write), so one write carries several lines
    and a loaded server spends its cores on the model, not on writes. The buffer holds at most the whole answer: ``length`` token lines and the end line."""

    def __init__(self, entry: LanguageModelEntry, cfg: SampleConfig, top: int, loop: asyncio.AbstractEventLoop,
                 head: bytes = b""):
        """``head``: what the answer starts with (the start line), written with the first token."""
        ids = encode_prime(entry.vocab, cfg.prime)
        super().__init__(ids, cfg.length, cfg.strategy, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed, top)
        self.entry, self.prime, self.top, self.loop = entry, cfg.prime, top, loop
        self.prev = prime_end(entry.vocab, cfg.prime, ids)
        self.pieces: list[str] = []
        self._wakeups = _Wakeups.of(loop)
        self._lock = threading.Lock()
        self._buf: list[bytes] = [head] if head else []
        self._waiting = 0  # token lines in the buffer
        self._written: float | None = None  # when the buffer was last drained (time.monotonic), None before
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None  # the event loop waits for lines

    # the scheduler's thread
    def deliver_many(self, tokens: np.ndarray, probs: np.ndarray, reported: Reported | None = None) -> None:
        """A round's tokens (n,) and the softmax (n, V) of each: their lines, put in the buffer in one write."""
        vocab, names = self.entry.vocab, self.entry.json_symbols
        r = reported if reported is not None else report(tokens, probs, self.top)
        lines = []
        for k, (token, p, ids, ps) in enumerate(zip(tokens.tolist(), r.p, r.top_ids, r.top_p)):
            sym = vocab.symbols[token]
            sep = vocab.separator(self.prev, sym)
            self.prev = sym
            self.pieces.append(sep + sym)
            if r.finite:  # the line json.dumps writes (compact, ASCII, floats by repr), without its walk of a dict
                text = names[token] if not sep else json.dumps(sep + sym)
                cands = ",".join([f'{{"text":{names[i]},"p":{q!r}}}' for i, q in zip(ids, ps)])
                lines.append(f'{{"type":"token","i":{self.done + k},"text":{text},"id":{token},"p":{p!r},'
                             f'"top":[{cands}]}}\n')
            else:  # a model that gives NaN: null, as jsonio writes it
                lines.append(_line({"type": "token", "i": self.done + k, "text": sep + sym, "id": token, "p": p,
                                    "top": [{"text": vocab.symbols[i], "p": q} for i, q in zip(ids, ps)]}).decode())
        self.done += len(lines)
        self._put("".join(lines).encode("ascii"), len(lines))

    def finish(self) -> None:
        self._put(_line({"type": "end", "text": self.prime + "".join(self.pieces), "generated": self.done}), 0, True)

    def fail(self, message: str) -> None:
        self._put(_line({"type": "error", "error": message}), 0, True)

    def _put(self, data: bytes, tokens: int, end: bool = False) -> None:
        with self._lock:
            self._buf.append(data)
            self._waiting += tokens
            self._ended |= end
            waiter = self._waiter if self._waiter is not None and self._due() else None
            if waiter is not None:
                self._waiter = None
        if waiter is not None:
            self._wakeups.wake(waiter)

    def _due(self) -> bool:
        """Whether the lines waiting go out now (the lock held). By time: once the clock has entered another
        period of FLUSH_SECONDS than the last write's, the same periods for every stream, so that the streams'
        timed writes fall in the same round and wake the event loop once."""
        return self._ended or (self._waiting > 0 and (
            self._written is None or self._waiting >= FLUSH_TOKENS
            or time.monotonic() // FLUSH_SECONDS != self._written // FLUSH_SECONDS))

    # the event loop
    async def drain(self) -> AsyncIterator[bytes]:
        """The lines, a write's worth at a time, until the end (or error) line."""
        while True:
            with self._lock:
                if self._due():
                    data, ended, waiter = b"".join(self._buf), self._ended, None
                    self._buf.clear()
                    self._waiting = 0
                    self._written = time.monotonic()
                else:  # _put wakes it when they are due
                    data, ended = b"", False
                    waiter = self._waiter = self.loop.create_future()
            if data:
                yield data
            if ended:
                return
            if waiter is not None:
                await waiter


def _score(entry: LanguageModelEntry, text: str, top: int) -> bytes:
    vocab = entry.vocab
    ids = _encode(vocab, text, "text")
    s = score_tokens(entry.model, ids, top)
    none: list[Any] = [None]
    answer = {
        "model": entry.name, "unit": unit_for(vocab.level), "tokens": _pieces(vocab, vocab.tokenize(text)),
        "prob": none + s.prob.tolist(), "bits": none + s.bits.tolist(), "running_bits": none + s.running_bits.tolist(),
        "mean_bits": float(s.running_bits[-1]) if len(s.logprob) else None,
        "top": none + [_candidates(vocab, i, p) for i, p in zip(s.top_ids, s.top_probs)],
    }
    return jsonio.dumps(answer, separators=(",", ":")).encode("utf-8")


def _activations(entry: LanguageModelEntry, req: ActivationsRequest) -> bytes:
    vocab, model = entry.vocab, entry.model
    layers, hidden = model.rnn.num_layers, model.rnn.hidden_size
    if req.layer >= layers:
        raise ApiError(422, f"layer must lie in [0, {layers - 1}] for model {entry.name!r}, got {req.layer}")
    body = anatomy(model.rnn.cells[req.layer])
    if req.rank_by not in body.quantities:
        raise ApiError(422, f"rank_by must be one of {', '.join(body.quantities)} for a {entry.config.model.cell} "
                            f"cell, got {req.rank_by!r}")
    bad = [u for u in req.units or [] if not 0 <= u < hidden]
    if bad:
        raise ApiError(422, f"units must lie in [0, {hidden - 1}] (layer {req.layer} has {hidden} units), got {bad}")
    ids = _encode(vocab, req.text, "text")
    acts = layer_activations(model, ids, req.layer)  # {name: (T, H)}
    order, std = rank_units(acts[req.rank_by])
    std_of = dict(zip(order.tolist(), std.tolist()))
    chosen = list(dict.fromkeys(req.units)) if req.units else order[:req.top_units].tolist()
    answer = {
        "model": entry.name, "layer": req.layer, "num_layers": layers, "hidden_size": hidden,
        "tokens": _pieces(vocab, vocab.tokenize(req.text)), "quantities": list(body.quantities),
        "bounds": {q: (list(b) if (b := body.bounds.get(q)) else None) for q in body.quantities},
        "rank_by": req.rank_by,
        "ranking": [{"unit": u, "std": round(s, 6)} for u, s in zip(order.tolist(), std.tolist())],
        "units": [{"unit": u, "std": round(std_of[u], 6),
                   "values": {q: np.round(acts[q][:, u].astype(np.float64), 5).tolist() for q in body.quantities}}
                  for u in chosen],
    }
    return jsonio.dumps(answer, separators=(",", ":")).encode("utf-8")


def _classify(entry: ClassifierEntry, text: str, top: int) -> bytes:
    """The ``top`` classes by :func:`rnnlab.classify.predict_proba`, as :func:`rnnlab.classify.predict`
    ranks them (without reloading the checkpoint for every request)."""
    from rnnlab.classify import encode_inputs, predict_proba  # imported by load_classifier_entry already

    vocab = entry.vocab
    assert vocab is not None  # checked by the endpoint
    try:
        seqs = encode_inputs([text], vocab, what="text")
    except VocabError as e:
        raise ApiError(422, f"text: {e}", unknown=vocab.unknown(text)) from None
    probs = predict_proba(entry.model, seqs)[0]  # (C,)
    order = np.argsort(-probs, kind="stable")[:top]
    answer = {"model": entry.name, "classes": [{"label": entry.labels[i], "prob": float(probs[i])} for i in order],
              "tokens": _pieces(vocab, vocab.tokenize(text))}
    return jsonio.dumps(answer, separators=(",", ":")).encode("utf-8")


def page_html() -> bytes:
    """The page (``rnnlab/web/index.html``, package data), read once at startup."""
    return resources.files("rnnlab").joinpath("web", "index.html").read_bytes()


# --- the application --------------------------------------------------------------------------
_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorAnswer, "description": "the token is missing or wrong"},
                                            404: {"model": ErrorAnswer, "description": "no such model"},
                                            413: {"model": ErrorAnswer, "description": "request body too large"},
                                            422: {"model": ErrorAnswer, "description": "a parameter is invalid"}}

_NDJSON_DOC = """One JSON object per line, as the text is generated:

* `{"type": "start", "model", "seed", "prime", "length", "strategy"}` first (the seed
  used, so an unseeded sample can be repeated);
* `{"type": "token", "i", "text", "id", "p", "top": [{"text", "p"}, ...]}` per token:
  `text` as written (at word level with its separating space), `p` the probability the
  model gave it and `top` its most probable next tokens at that step (the model's own
  softmax, before temperature, top-k and top-p);
* `{"type": "end", "text", "generated"}` last: the prime and all that was generated.

The same seed and settings give the same tokens as `rnnlab.sampling.generate`.
"""


def build_app(checkpoint_paths: list[str], workers: int = DEFAULT_WORKERS,
              allowed_hosts: list[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
              token: str | None = None, max_streams: int = DEFAULT_MAX_STREAMS,
              max_active_streams: int = MAX_ACTIVE_STREAMS, lab_cache: str | Path | None = None,
              data_dir: str | Path | None = None, runs_dir: str | Path | None = None,
              runs_max_mb: float | None = None, train_lab_models: bool = True) -> FastAPI:
    """The ASGI application serving these checkpoints (files or run folders), and the lab (:mod:`rnnlab.lab`).

    ``workers`` threads do the model work; ``allowed_hosts`` (e.g. ``["127.0.0.1",
    "localhost"]``) refuses requests whose Host header names anything else, which stops a
    web page on another site from reaching a loopback server through DNS rebinding.
    With a ``token`` every request, the page's included, must carry it (``Authorization:
    Bearer TOKEN`` or ``?token=TOKEN``; 401 otherwise). A client (an address) streams at
    most ``max_streams`` generations at once and the server ``max_active_streams``; more is
    a 429. Raises :class:`~rnnlab.errors.CheckpointError` for a checkpoint it cannot serve.

    The lab's page is at ``/lab``, and at ``/`` when no checkpoint is given. ``lab_cache`` keeps the lab's own
    models (default ``$RNNLAB_LAB_CACHE`` or ``~/.cache/rnnlab/lab``), ``data_dir`` holds the ``*.txt`` files the
    page may read and train on, ``runs_dir`` takes the runs started from the page (default ``LAB_CACHE/runs``;
    a new one is refused while it holds over ``runs_max_mb``); ``train_lab_models`` off: a lab model not in the
    cache is not trained, only reported missing.
    """
    from rnnlab import lab as lab_pkg  # the lab is a shell above this module: imported here, not at the top

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if token is not None:
        check_token(token)
    streams = StreamLimits(max_streams, max_active_streams)
    registry = Registry.load([str(p) for p in checkpoint_paths], allow_empty=True)
    lab = lab_pkg.Lab(lab_cache, registry, [str(p) for p in checkpoint_paths], data_dir=data_dir, runs_dir=runs_dir,
                      runs_max_mb=lab_pkg.DEFAULT_RUNS_MAX_MB if runs_max_mb is None else runs_max_mb,
                      train_models=train_lab_models)
    page = page_html() if registry.entries else None  # no checkpoint: / is the lab
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rnnlab-serve")

    # one scheduler per language model, its packed steps prepared now so that no request waits for them
    schedulers = {e.index: Scheduler(e.model, warm=True) for e in registry.entries if isinstance(e, LanguageModelEntry)}

    def scheduler(entry: LanguageModelEntry) -> Scheduler:
        return schedulers[entry.index]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        lab.close()  # a training child is killed with the server
        pool.shutdown(wait=False, cancel_futures=True)
        for sch in schedulers.values():
            sch.close()

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # docs_url and redoc_url off: FastAPI's own pages load Swagger UI from a CDN; /docs below serves the copy
    # installed with the fastapi-offline package, so the server needs nothing outside this machine
    app = FastAPI(title="rnnlab", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Sample from recurrent language models, see the probabilities they give, look at "
                              "their units. The page at / uses this API.")
    app.state.registry = registry
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(resources.files("fastapi_offline") / "static")),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        # the token this page came with (checked by the gate) goes on every URL it loads
        given = request.query_params.get("token") if token is not None else None
        q = f"?token={given}" if given else ""
        return get_swagger_ui_html(openapi_url=f"/openapi.json{q}", title="rnnlab API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js{q}",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css{q}",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png{q}",
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from swagger.io

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(RnnlabError)
    async def _rnnlab_error(request: Request, exc: RnnlabError) -> Response:
        return _error(422, str(exc))  # a bad value that reached the library (ConfigError, DataError, ...)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{k: v for k, v in e.items() if k not in ("input", "ctx", "url")} for e in exc.errors()]
        message = _validation_message(exc.errors())
        sent_as = request.headers.get("content-type")
        if sent_as is None and request.method == "POST":
            message += " (the body was sent without a Content-Type; send JSON, as application/json)"
        elif sent_as is not None and "json" not in sent_as:
            message += f" (the body was sent as {sent_as!r}; send JSON, as application/json)"
        return _error(422, message, detail=jsonable_encoder(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        resp = _error(exc.status_code, str(exc.detail))
        resp.headers.update(exc.headers or {})
        return resp

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        if page is None:
            return await app.state.lab_page(request)
        return HTMLResponse(page, headers={
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"})

    @app.get("/api/models", response_model=list[ModelInfo], summary="The models this server was started with")
    async def models() -> Response:
        return _json([e.info() for e in registry.entries])

    @app.get("/api/models/{model}", response_model=ModelInfo, responses=_ERRORS,
             summary="One model, with its vocabulary")
    async def model_detail(model: str) -> Response:
        return _json(registry.get(model).detail())

    @app.get("/api/limits", response_model=Limits, summary="The bounds every request is checked against")
    async def limits() -> Response:
        return _json(Limits().model_dump())

    @app.post("/api/generate", responses={**_ERRORS, 429: {
        "model": ErrorAnswer, "description": "this client, or the whole server, streams as many as it may"}, 200: {
        "description": _NDJSON_DOC, "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
        summary="Generate text, streamed token by token with the model's top next-token probabilities")
    async def generate(req: GenerateRequest, request: Request) -> StreamingResponse:
        entry = registry.language_model(req.model, "/api/generate")
        seed = req.seed if req.seed is not None else secrets.randbits(53)  # below 2**53: the page's JavaScript numbers hold it exactly
        cfg = SampleConfig(strategy=req.strategy, length=req.length, prime=req.prime, temperature=req.temperature,
                           top_k=req.top_k, top_p=req.top_p, seed=seed)  # bounds: the request model, and Stream
        _encode(entry.vocab, req.prime, "prime")  # unknown characters: a 422 before the stream starts
        release = streams.take(request.client.host if request.client else "")  # a 429 when full
        start = {"type": "start", "model": entry.name, "seed": seed, "prime": req.prime, "length": req.length,
                 "strategy": req.strategy}
        try:  # the start line goes out with the first token: one write, not two
            gen = _Generation(entry, cfg, req.top, asyncio.get_running_loop(), head=_line(start))
        except BaseException:
            release()
            raise

        async def lines() -> AsyncIterator[bytes]:
            try:
                scheduler(entry).add(gen)
                async for chunk in gen.drain():
                    yield chunk
            finally:
                gen.cancel()  # a client that left: its stream leaves the batch at the next round
                release()

        return _Stream(release, lines(), media_type="application/x-ndjson",
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/score", response_model=ScoreAnswer, responses=_ERRORS,
              summary="The probability the model gave every token of a text, and the running bits per token")
    async def score(req: ScoreRequest) -> Response:
        entry = registry.language_model(req.model, "/api/score")
        _encode(entry.vocab, req.text, "text", at_least=1)
        return Response(await run(_score, entry, req.text, req.top), media_type="application/json")

    @app.post("/api/activations", response_model=ActivationsAnswer, responses=_ERRORS,
              summary="One layer's units over a text (an LSTM's cell state and gates too), ranked by variation")
    async def activations(req: ActivationsRequest) -> Response:
        entry = registry.language_model(req.model, "/api/activations")
        _encode(entry.vocab, req.text, "text", at_least=1)
        return Response(await run(_activations, entry, req), media_type="application/json")

    @app.post("/api/classify", response_model=ClassifyAnswer, responses=_ERRORS,
              summary="A classifier's most probable classes for a text, with their probabilities")
    async def classify(req: ClassifyRequest) -> Response:
        entry = registry.classifier(req.model, "/api/classify")
        if entry.vocab is None:
            raise ApiError(422, f"model {entry.name!r} reads vector sequences ({entry.feature_size} numbers a step), "
                                "not text; score them with rnnlab classify eval --data FILE.jsonl")
        n = len(entry.labels)
        top = req.top if "top" in req.model_fields_set else min(req.top, n)
        if top > n:
            raise ApiError(422, f"top must lie in [1, {n}] for model {entry.name!r} (it has {n} classes), got {top}")
        if entry.vocab.level == "char":
            _encode(entry.vocab, req.text, "text")  # unknown characters: a 422 naming them, before the pool
        return Response(await run(_classify, entry, req.text, top), media_type="application/json")

    app.state.streams = streams
    lab_pkg.mount(app, lab)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    if token is not None:  # before the body is read: a request without the token costs nothing
        app.add_middleware(_TokenGate, token=token)
    if allowed_hosts:
        app.add_middleware(_TrustedHosts, allowed_hosts=allowed_hosts)
    return app


@dataclass
class Served:
    """What :func:`server_config` prepared: uvicorn's configuration, and the address to open (with the
    token, where there is one)."""

    config: Any  # uvicorn.Config
    url: str
    token: str | None


def server_config(checkpoint_paths: list[str], host: str = "127.0.0.1", port: int = 8000,
                  workers: int = DEFAULT_WORKERS, log_level: str = "info", token: str | None = None,
                  certfile: str | None = None, keyfile: str | None = None,
                  max_streams: int = DEFAULT_MAX_STREAMS, **lab: Any) -> Served:
    """The application for these checkpoints and uvicorn's configuration to serve it.

    On a loopback host only requests addressed to a loopback name are answered (the Host
    check), and a token is asked for only where one is given. On any other host a token is
    required: ``token``, or a fresh one (:func:`new_token`), printed in the returned URL.
    ``certfile`` and ``keyfile`` (PEM) serve HTTPS. The access log never shows ``?token=``. ``lab`` holds the
    lab's options of :func:`build_app` (``lab_cache``, ``data_dir``, ``runs_dir``, ``runs_max_mb``).
    """
    import uvicorn

    if not 0 <= port <= 65535:
        raise ConfigError(f"port must lie in [0, 65535], got {port}")
    if (certfile is None) != (keyfile is None):
        raise ConfigError("TLS needs both certfile and keyfile (PEM), got only "
                          f"{'certfile' if certfile else 'keyfile'}")
    for what, f in (("certfile", certfile), ("keyfile", keyfile)):
        if f is not None and not Path(f).is_file():
            raise ConfigError(f"{what} must be a PEM file, got {f!r}, which is not a file")
    loopback = host in LOOPBACK_HOSTS
    if token is not None:
        check_token(token)
    elif not loopback:
        token = new_token()
    if not loopback and certfile is None:
        warnings.warn(f"serving on {host} without TLS: the token and the texts cross the network unencrypted "
                      "(give --certfile and --keyfile for HTTPS)", stacklevel=2)
    app = build_app(checkpoint_paths, workers=workers, allowed_hosts=[*LOOPBACK_HOSTS] if loopback else None,
                    token=token, max_streams=max_streams, **lab)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=log_config(),
                            ssl_certfile=certfile, ssl_keyfile=keyfile)
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"{'https' if certfile else 'http'}://{shown}:{port}/" + (f"?token={token}" if token else "")
    return Served(config, url, token)


def serve(checkpoint_paths: list[str], host: str = "127.0.0.1", port: int = 8000, workers: int = DEFAULT_WORKERS,
          log_level: str = "info", on_ready: Callable[[str], None] | None = None, token: str | None = None,
          certfile: str | None = None, keyfile: str | None = None, max_streams: int = DEFAULT_MAX_STREAMS,
          **lab: Any) -> None:
    """Serve these checkpoints (none: the lab alone) until interrupted (Ctrl-C), as :func:`server_config`
    describes; ``on_ready`` is given the address to open (with the token) once every checkpoint is loaded.
    ``lab``: the lab's options of :func:`build_app`."""
    import uvicorn

    served = server_config(checkpoint_paths, host, port, workers, log_level, token, certfile, keyfile, max_streams,
                           **lab)
    if on_ready is not None:  # every checkpoint loaded: the shell may say where to look
        on_ready(served.url)
    served.config.app.state.lab.start_warm_up()  # the lab's models loaded in the background, as the server starts
    uvicorn.Server(served.config).run()


__all__ = ["DEFAULT_MAX_STREAMS", "DEFAULT_WORKERS", "LOADERS", "MAX_ACTIVE_STREAMS", "MAX_INSPECT_CHARS",
           "MAX_LENGTH", "MAX_PRIME_CHARS", "MAX_TEXT_CHARS",
           "ClassifierEntry", "LanguageModelEntry", "RedactToken", "Registry", "Served", "ServedModel", "StreamLimits",
           "build_app", "check_token", "load_classifier_entry", "load_language_model", "log_config", "new_token",
           "page_html", "redact", "serve", "server_config"]
