"""The lab's sequence classification section: the class probabilities after every prefix, the confusion matrix.

=======  ==========================================  ========================================================
GET      ``/api/lab/classify/classifiers``           the classifiers the lab has (the built-in ``digits`` and
                                                     those given on the command line), what each reads, and
                                                     how to make a text classifier when there is none
POST     ``/api/lab/classify/prefixes``              the class probabilities after every prefix of a text or
                                                     of a drawing's rows (:func:`rnnlab.classify.prefix_proba`)
POST     ``/api/lab/classify/confusion``             the confusion matrix and scores on the classifier's
                                                     validation or test split (:func:`rnnlab.classify.
                                                     evaluate_classifier`: what ``rnnlab classify eval`` prints)
POST     ``/api/lab/classify/example``               one example of a split, with its label
=======  ==========================================  ========================================================
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rnnlab.checkpoint import CLASSIFIER
from rnnlab.lab import Lab, LabError, ModelNotReady
from rnnlab.serve import ClassifierEntry, _encode, _json, _pieces, _Request

MAX_PREFIX_CHARS = 500  # characters of a text read prefix by prefix (one row of probabilities each)
MAX_ROWS = 64  # rows (steps) of a drawing
MAX_FEATURES = 64  # numbers a step of a vector classifier the section takes
MAX_VALUE = 1e6  # |value| of a vector element
DEFAULT_MODEL = "digits"
GREY_LEVELS = 17  # the digits' pixels: 0..16, read as level / 16
HOW_TO = ("rnnlab classify train --data names/ --time-budget 300 --out runs/names   # names/<Language>.txt, "
          "one name a line", "rnnlab serve runs/names   # then open /lab: the classifier joins the lab's digits")

_MODEL = Field(DEFAULT_MODEL, min_length=1, max_length=100, description="a classifier of /api/lab/classifiers")


class PrefixRequest(_Request):
    model: str = _MODEL
    text: str | None = Field(None, min_length=1, max_length=MAX_PREFIX_CHARS,
                             description="a text classifier's input: one row of probabilities per token")
    vectors: list[list[float]] | None = Field(
        None, min_length=1, max_length=MAX_ROWS,
        description="a vector classifier's input: one vector per step (the digits: 8 rows of 8 pixels, level / 16)")


class SplitRequest(_Request):
    model: str = _MODEL
    split: Literal["val", "test"] = Field("test", description="the split of the classifier's own data")


class ExampleRequest(SplitRequest):
    index: int = Field(0, ge=0, le=10**9, description="the example's place in the split (taken modulo its size)")


def _checkpoint(lab: Lab, name: str, entry: ClassifierEntry) -> Path:
    """The checkpoint file the entry was loaded from: its run folder's file of that name."""
    path = lab.run_dir(name) / entry.file
    if not path.is_file():
        raise LabError(409, f"the checkpoint of {name!r} is gone from its run folder")
    return path


def classifiers(lab: Lab) -> dict[str, Any]:
    """Every classifier of :meth:`Lab.models`, with its classes and what it reads once it is loaded."""
    out = []
    for m in lab.models():
        if m["kind"] != CLASSIFIER:
            continue
        row = {"name": m["name"], "source": m["source"], "about": m.get("about", ""), "ready": m["ready"],
               "progress": m["progress"]}
        if m["ready"]:
            try:
                e = lab.classifier(m["name"])
            except (ModelNotReady, LabError):
                row["ready"] = False
            else:
                row.update({"reads": e.reads, "classes": list(e.labels), "feature_size": e.feature_size or None,
                            "level": e.vocab.level if e.vocab else None, "cell": e.config.model.cell,
                            "hidden_size": e.config.model.hidden_size})
        out.append(row)
    text = [c for c in out if c.get("reads") == "text"]
    return {"classifiers": out, "text_classifier": bool(text), "how_to": list(HOW_TO),
            "grey_levels": GREY_LEVELS}


def prefixes(entry: ClassifierEntry, req: PrefixRequest) -> dict[str, Any]:
    """The probabilities (L, C) after every prefix, one row per token (text) or per vector (a drawing's row)."""
    from rnnlab.classify import encode_inputs, prefix_proba

    if entry.vocab is not None:
        if req.text is None or req.vectors is not None:
            raise LabError(422, f"model {entry.name!r} reads text: send text, not vectors")
        if entry.vocab.level == "char":
            _encode(entry.vocab, req.text, "text")  # a character the classifier never saw: a 422 naming it
        seq = encode_inputs([req.text], entry.vocab, "text")[0]  # (L,) ids; a blank text is a DataError (422)
        steps = _pieces(entry.vocab, [entry.vocab.symbols[i] for i in seq])
    else:
        if req.vectors is None or req.text is not None:
            raise LabError(422, f"model {entry.name!r} reads vectors ({entry.feature_size} numbers a step): send "
                                "vectors, not text")
        f = entry.feature_size
        for i, row in enumerate(req.vectors):
            if len(row) != f:
                raise LabError(422, f"vectors[{i}] holds {len(row)} numbers; model {entry.name!r} reads {f} a step")
            if not all(math.isfinite(x) and abs(x) <= MAX_VALUE for x in row):
                raise LabError(422, f"vectors[{i}] holds a number that is not finite or beyond {MAX_VALUE:g}")
        seq = np.asarray(req.vectors, dtype=np.float32)  # (L, F)
        steps = [f"row {i + 1}" for i in range(len(seq))]
    probs = prefix_proba(entry.model, seq)  # (L, C)
    labels = list(entry.labels)
    return {"model": entry.name, "classes": labels, "steps": steps, "probs": probs.tolist(),
            "predicted": [labels[i] for i in probs.argmax(axis=1)]}


class _Kept:
    """What a classifier's split gives (its scores, its examples), computed once per checkpoint file, modification
    time and split, then kept while the server runs."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str, float, str], Any] = {}
        self.lock = threading.Lock()

    def get(self, what: str, path: Path, split: str) -> Any:
        from rnnlab.classify import evaluate_classifier, split_examples_of

        key = (what, str(path), path.stat().st_mtime, split)
        with self.lock:
            if key in self.held:
                return self.held[key]
        if what == "scores":
            r = evaluate_classifier(path, split=split)
            keep = ("acc", "balanced_acc", "macro_f1", "loss", "confusion", "per_class", "examples", "data",
                    "confusion_text")
            out: Any = {k: r[k] for k in keep if k in r}
        else:
            out = split_examples_of(path, split)
        with self.lock:
            self.held[key] = out
        return out


def router(lab: Lab) -> APIRouter:
    """The section's endpoints (model work in FastAPI's thread pool: plain ``def`` handlers)."""
    r = APIRouter(prefix="/api/lab/classify", tags=["lab: classify"])
    kept = _Kept()

    def warm() -> None:  # the digits' test split: its examples and scores (the first to import scikit-learn)
        from rnnlab.lab.models import is_ready

        if is_ready(lab.cache, "digits"):
            path = _checkpoint(lab, "digits", lab.classifier("digits"))
            kept.get("examples", path, "test")
            kept.get("scores", path, "test")

    lab.add_warm_up("classify: the digits' test split", warm)

    @r.get("/classifiers", summary="The lab's classifiers, what each reads, and how to make a text classifier")
    def _classifiers() -> Response:
        return _json(classifiers(lab))

    @r.post("/prefixes", summary="The class probabilities after every prefix of a text or of a drawing's rows")
    def _prefixes(req: PrefixRequest) -> Response:
        return _json(prefixes(lab.classifier(req.model), req))

    @r.post("/confusion", summary="The confusion matrix and scores on the classifier's validation or test split")
    def _confusion(req: SplitRequest) -> Response:
        entry = lab.classifier(req.model)
        path = _checkpoint(lab, req.model, entry)
        return _json({"model": entry.name, "split": req.split, "classes": list(entry.labels),
                      "command": f"rnnlab classify eval {req.model} --split {req.split}",
                      **kept.get("scores", path, req.split)})

    @r.post("/example", summary="One example of the classifier's validation or test split, with its label")
    def _example(req: ExampleRequest) -> Response:
        entry = lab.classifier(req.model)
        inputs, labels = kept.get("examples", _checkpoint(lab, req.model, entry), req.split)
        i = req.index % len(inputs)
        x = inputs[i]
        return _json({"model": entry.name, "split": req.split, "index": i, "count": len(inputs), "label": labels[i],
                      **({"text": x} if isinstance(x, str) else {"vectors": np.asarray(x, dtype=np.float64).tolist()})})

    return r


__all__ = ["HOW_TO", "PrefixRequest", "classifiers", "prefixes", "router"]
