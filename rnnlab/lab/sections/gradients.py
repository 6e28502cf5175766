r"""The lab's section on gradients through time: how much of the loss's gradient reaches each earlier step.

=======  ====================================  ==============================================================
POST     ``/api/lab/gradients/curves``         the curves :math:`t \mapsto \|\partial L / \partial h_t\|` of
                                               freshly initialised Elman, LSTM and GRU language models whose
                                               :math:`W_{hh}` is scaled by a gain, with clipping on or off
                                               (:func:`rnnlab.gradients.gradient_report`, as ``rnnlab
                                               gradients --gain G``); small sizes, so each answer takes well
                                               under a second
POST     ``/api/lab/gradients/connectivity``   for a trained model and a text, how strongly the prediction at
                                               each position t depends on each earlier character s:
                                               :math:`\|\partial \log p(x_{t+1} \mid x_{\le t}) / \partial e_s\|`
                                               (:func:`rnnlab.gradients.connectivity`)
=======  ====================================  ==============================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rnnlab.gradients import connectivity, gradient_report
from rnnlab.serve import _encode, _json, _Request

if TYPE_CHECKING:
    from rnnlab.lab import Lab

CELLS = ("elman", "lstm", "gru")
MAX_LENGTH = 100  # T of the gain curves
MAX_HIDDEN = 64  # H of the gain curves' models
MAX_BATCH = 8
MIN_GAIN, MAX_GAIN = 0.05, 20.0
MAX_CONNECTIVITY_CHARS = 200  # characters of the connectivity text: one pass over (N - 1) copies of it
DIGITS = 5  # significant digits of the connectivity answer (it is a shading, not a measurement to reuse)


class CurvesRequest(_Request):
    gain: float = Field(1.0, ge=MIN_GAIN, le=MAX_GAIN, allow_inf_nan=False,
                        description="the recurrent gain: every W_hh at initialisation is multiplied by it")
    clip: bool = Field(False, description="clip the gradient's global norm to clip_norm, as training does")
    clip_norm: float = Field(1.0, gt=0.0, le=1e6, allow_inf_nan=False, description="the clipping threshold")
    length: int = Field(50, ge=2, le=MAX_LENGTH, description="T, the steps of the sequences")
    hidden_size: int = Field(32, ge=1, le=MAX_HIDDEN, description="H, the units of each model")
    batch_size: int = Field(4, ge=1, le=MAX_BATCH, description="sequences averaged over")
    loss: Literal["last", "all"] = Field("last", description="the loss at the last step, or summed over the steps")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the seed of the models and the sequences")


class ConnectivityRequest(_Request):
    model: str = Field("lstm", min_length=1, max_length=100, description="a language model of /api/lab/models")
    text: str = Field(..., min_length=2, max_length=MAX_CONNECTIVITY_CHARS,
                      description="the text read; each position's prediction is of the character after it")


def curves(req: CurvesRequest) -> dict[str, Any]:
    """:func:`~rnnlab.gradients.gradient_report` of the three cells with the request's settings, JSON-ready."""
    return gradient_report(cells=CELLS, hidden_size=req.hidden_size, length=req.length, seed=req.seed,
                           batch_size=req.batch_size, loss=req.loss, recurrent_gain=req.gain,
                           clip_norm=req.clip_norm if req.clip else 0.0)


def _round(a: np.ndarray) -> list[float]:
    return [float(f"{v:.{DIGITS}g}") for v in a]


def connectivity_view(lab: Lab, req: ConnectivityRequest) -> dict[str, Any]:
    """The connectivity of ``req.model`` over ``req.text``: ``rows[t]`` holds :math:`C_{t,0..t}` (the later
    entries are zero), for t = 0..N-2; ``tokens`` the N symbols read."""
    entry = lab.language_model(req.model)
    ids = _encode(entry.vocab, req.text, "text", at_least=2)  # a 422 naming characters the vocabulary lacks
    c = connectivity(entry.model, ids)  # (N-1, N-1)
    m = entry.config.model
    return {"model": req.model, "cell": m.cell, "hidden_size": m.hidden_size, "num_layers": m.num_layers,
            "tokens": [entry.vocab.symbols[int(i)] for i in ids],
            "rows": [_round(c[t, :t + 1]) for t in range(len(c))], "max": float(c.max()) if c.size else 0.0}


def router(lab: Lab) -> APIRouter:
    """The section's endpoints."""
    r = APIRouter(prefix="/api/lab/gradients", tags=["lab: gradients through time"])

    @r.post("/curves", summary="|dL/dh_t| of fresh Elman, LSTM and GRU models at a recurrent gain, clipped or not")
    def post_curves(req: CurvesRequest) -> Response:  # plain functions: FastAPI runs them in its thread pool
        return _json(curves(req))

    @r.post("/connectivity", summary="How strongly each prediction of a trained model depends on each earlier "
                                     "character: |d log p(x_t+1) / d e_s|")
    def post_connectivity(req: ConnectivityRequest) -> Response:
        return _json(connectivity_view(lab, req))

    return r
