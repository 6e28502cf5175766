r"""The lab's Elman network, step by step: a text read one character at a time by the lab model ``elman``.

One endpoint, ``POST /api/lab/elman/steps``: the whole trace of a short text at once (the page steps
through it), from :func:`rnnlab.introspect.step_through`:

.. math::
    h_t = \tanh(W_{xh} x_t + W_{hh} h_{t-1} + b), \qquad y_t = \mathrm{softmax}(W_{hy} h_t + c), \qquad h_0 = 0

with, at every step, the token read (its id lights one cell of the one-hot x_t), the input the first
layer reads (the embedding of x_t, where the model has one), every unit of h_t, and the ``top`` most
probable next tokens of y_t. The same W_xh, W_hh, W_hy are used at every t; the answer gives their
shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rnnlab.introspect import step_through, top_tokens
from rnnlab.serve import LanguageModelEntry, _encode, _json, _pieces, _Request

if TYPE_CHECKING:
    from rnnlab.lab import Lab

MAX_STEPS = 200  # characters one answer steps through (each carries every unit of h_t)
MAX_TOP = 20
ELMAN_CELLS = ("elman", "elman-relu")


class StepsRequest(_Request):
    model: str = Field("elman", min_length=1, max_length=100, description="an Elman language model of the lab")
    text: str = Field(..., min_length=1, max_length=MAX_STEPS, description="the text to read, one token a step")
    top: int = Field(8, ge=1, le=MAX_TOP, description="the most probable next tokens reported per step")


def steps(entry: LanguageModelEntry, text: str, top: int) -> dict[str, Any]:
    """The trace of ``text`` through ``entry``'s model (JSON-ready); see the module docstring."""
    from rnnlab.lab import LabError

    cfg = entry.config.model
    if cfg.cell not in ELMAN_CELLS:
        raise LabError(422, f"model {entry.name!r} is a {cfg.cell}; this section steps an Elman network "
                            f"(cell {' or '.join(ELMAN_CELLS)})")
    ids = _encode(entry.vocab, text, "text", at_least=1)  # a 422 naming characters the vocabulary lacks
    trace = step_through(entry.model, ids)
    top_ids, top_probs = top_tokens(trace.probs, top)  # (T, k) each
    tokens = [entry.vocab.symbols[int(i)] for i in ids]
    cells = entry.model.rnn.cells
    hidden = trace.hidden[0]  # (T, H): the first layer, the one the equations describe
    v = len(entry.vocab)
    weights = {"W_xh": list(cells[0].weight_ih.shape), "W_hh": list(cells[0].weight_hh.shape),
               "W_hy": list(entry.model.decoder.weight.shape)}
    if entry.model.embedding is not None:
        weights["E"] = [int(entry.model.embedding.weight.shape[1]), v]  # x_t's embedding: E one_hot(x_t)
    return {
        "model": entry.name, "cell": cfg.cell, "input": cfg.input, "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size, "vocab_size": v, "symbols": entry.vocab.symbols, "weights": weights,
        "parameters": entry.model.num_parameters(),
        "level": entry.vocab.level, "tokens": tokens, "pieces": _pieces(entry.vocab, tokens), "ids": ids.tolist(),
        "embedded": (np.round(trace.inputs, 6).tolist() if entry.model.embedding is not None else None),
        "hidden": np.round(hidden, 6).tolist(),
        "top": [[{"symbol": entry.vocab.symbols[int(i)], "id": int(i), "p": float(p)} for i, p in zip(r_i, r_p)]
                for r_i, r_p in zip(top_ids, top_probs)],
        "next_p": [float(trace.probs[t, ids[t + 1]]) for t in range(len(ids) - 1)] + [None],
    }


def router(lab: Lab) -> APIRouter:
    """The section's endpoint, on ``lab``'s language models."""
    r = APIRouter(prefix="/api/lab/elman", tags=["lab: the Elman network"])

    @r.post("/steps", summary="A text read one character at a time: x_t, h_t and the top of y_t at every step")
    def post_steps(req: StepsRequest) -> Response:  # a plain function: FastAPI runs it in its thread pool
        return _json(steps(lab.language_model(req.model), req.text, req.top))

    return r
