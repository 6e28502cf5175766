"""The lab's sampling section: a language model's next-token distribution, continuations side by side, beam search.

=======  ==================================  =================================================================
POST     ``/api/lab/sampling/distribution``  the next-token distribution after a prime at a temperature,
                                             top-k and top-p (:func:`rnnlab.decoding.distribution`), its
                                             argmax and one seeded draw (the first token ``rnnlab sample``
                                             draws with that seed)
POST     ``/api/lab/sampling/continuations`` the same prime continued by argmax, temperature, top-k, top-p and
                                             beam search (:func:`rnnlab.sampling.generate`, so each is the text
                                             ``rnnlab sample`` gives with those options), each with its command
POST     ``/api/lab/sampling/beam``          a beam search's tree (:func:`rnnlab.sampling.beam_tree`): every
                                             step's kept hypotheses and scores, the best pruned, the best path
=======  ==================================  =================================================================
"""

from __future__ import annotations

import shlex
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from rnnlab.config import SampleConfig
from rnnlab.decoding import Sample, distribution, prime_end
from rnnlab.lab import Lab
from rnnlab.sampling import beam_tree, encode_prime, generate, next_token_logits
from rnnlab.serve import (
    MAX_PRIME_CHARS,
    MAX_SEED,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    LanguageModelEntry,
    _encode,
    _json,
    _Request,
)

MAX_BARS = 200  # tokens of the distribution drawn as bars (the rest are summed)
MAX_CONTINUATION = 400  # tokens each continuation writes
MAX_SIDE_BEAM = 16  # the beam of the side-by-side continuation
MAX_TREE_BEAM = 8  # the beam whose tree is drawn: its hypotheses are the tree's rows
MAX_TREE_LENGTH = 30  # steps of the drawn tree
MAX_PRUNED = 5  # candidates shown per step that fell out of the beam
DEFAULT_MODEL = "lstm"

_MODEL = Field(DEFAULT_MODEL, min_length=1, max_length=100, description="a language model of /api/lab/models")
_PRIME = Field("", max_length=MAX_PRIME_CHARS, description="text the model reads before it writes")
_TEMPERATURE = Field(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
                     description="divide the logits by this: < 1 sharpens, > 1 flattens")
_TOP_K = Field(0, ge=0, le=1_000_000, description="keep the k most probable tokens (0: all)")
_TOP_P = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False,
               description="keep the smallest set of most probable tokens whose probability reaches p")
_SEED = Field(0, ge=0, le=MAX_SEED, description="the sampler's seed")


class DistributionRequest(_Request):
    model: str = _MODEL
    prime: str = _PRIME
    temperature: float = _TEMPERATURE
    top_k: int = _TOP_K
    top_p: float = _TOP_P
    seed: int = _SEED
    bars: int = Field(40, ge=1, le=MAX_BARS, description="the most probable tokens listed one by one")


class ContinuationsRequest(_Request):
    model: str = _MODEL
    prime: str = _PRIME
    length: int = Field(120, ge=1, le=MAX_CONTINUATION, description="tokens each continuation writes")
    temperature: float = Field(0.8, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
                               description="the temperature of the three sampled continuations")
    top_k: int = Field(5, ge=1, le=1_000_000, description="k of the top-k continuation")
    top_p: float = Field(0.9, gt=0.0, le=1.0, allow_inf_nan=False, description="p of the top-p continuation")
    beam_width: int = Field(5, ge=1, le=MAX_SIDE_BEAM, description="the beam of the beam search continuation")
    seed: int = _SEED


class BeamRequest(_Request):
    model: str = _MODEL
    prime: str = _PRIME
    beam_width: int = Field(3, ge=1, le=MAX_TREE_BEAM, description="hypotheses kept per step")
    length: int = Field(8, ge=1, le=MAX_TREE_LENGTH, description="tokens the beam search writes")
    pruned: int = Field(3, ge=0, le=MAX_PRUNED, description="candidates shown per step that fell out of the beam")


def _model(lab: Lab, name: str, prime: str) -> LanguageModelEntry:
    entry = lab.language_model(name)
    _encode(entry.vocab, prime, "prime")  # a character the model never saw: a 422 naming it
    return entry


def command(model: str, cfg: SampleConfig) -> str:
    """The ``rnnlab sample`` command line that writes what ``cfg`` writes, for the run folder named ``model``."""
    parts = ["rnnlab", "sample", model]
    if cfg.prime:
        parts += ["--prime", cfg.prime]
    parts += ["--length", str(cfg.length)]
    if cfg.strategy != "sample":
        parts += ["--strategy", cfg.strategy]
    if cfg.strategy == "beam":
        parts += ["--beam-width", str(cfg.beam_width)]
    else:
        if cfg.strategy == "sample":
            parts += ["--temperature", f"{cfg.temperature:g}"]
            if cfg.top_k:
                parts += ["--top-k", str(cfg.top_k)]
            if cfg.top_p < 1.0:
                parts += ["--top-p", f"{cfg.top_p:g}"]
            parts += ["--seed", str(cfg.seed)]
    return shlex.join(parts)


def next_token(entry: LanguageModelEntry, req: DistributionRequest) -> dict[str, Any]:
    """The distribution after ``req.prime``: the ``req.bars`` most probable tokens (by the model's logits, an order no
    temperature changes) with their probability under the model (``p_model``), at the temperature (``p_temp``) and
    after top-k and top-p (``p``, renormalised; ``kept`` false where cut), the rest summed; the argmax; one draw."""
    logits = next_token_logits(entry.model, entry.vocab, req.prime)  # (V,)
    p_model = distribution(logits)[0]  # (V,)
    p_temp = distribution(logits, req.temperature)[0]
    p = distribution(logits, req.temperature, req.top_k, req.top_p)[0]
    order = np.argsort(-logits, kind="stable")  # the order distribution() ranks by
    shown, rest = order[:req.bars], order[req.bars:]
    drawn = int(Sample(req.temperature, req.top_k, req.top_p).choose(logits[None], np.random.default_rng(req.seed))[0])
    symbols = entry.vocab.symbols
    cfg = SampleConfig(prime=req.prime, length=1, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                       seed=req.seed)
    return {
        "model": entry.name, "prime": req.prime, "vocab_size": len(symbols), "level": entry.vocab.level,
        "temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p,
        "tokens": [{"id": int(i), "text": symbols[i], "logit": float(logits[i]), "p_model": float(p_model[i]),
                    "p_temp": float(p_temp[i]), "p": float(p[i]), "kept": bool(p[i] > 0)} for i in shown],
        "rest": {"count": len(rest), "p_model": float(p_model[rest].sum()), "p_temp": float(p_temp[rest].sum()),
                 "p": float(p[rest].sum()), "kept": int((p[rest] > 0).sum())},
        "kept": int((p > 0).sum()),
        "argmax": {"id": int(order[0]), "text": symbols[order[0]], "p_model": float(p_model[order[0]])},
        "draw": {"seed": req.seed, "id": drawn, "text": symbols[drawn], "p": float(p[drawn]),
                 "rank": int(np.flatnonzero(order == drawn)[0]), "command": command(entry.name, cfg)},
    }


def continuations(entry: LanguageModelEntry, req: ContinuationsRequest) -> dict[str, Any]:
    """The prime continued five ways, each by :func:`rnnlab.sampling.generate` as ``rnnlab sample`` runs it."""
    base = {"prime": req.prime, "length": req.length, "seed": req.seed}
    ways: list[tuple[str, str, SampleConfig]] = [
        ("argmax", "the most probable token every step", SampleConfig(strategy="argmax", **base)),
        ("temperature", f"a draw at temperature {req.temperature:g}",
         SampleConfig(temperature=req.temperature, **base)),
        ("top-k", f"a draw among the {req.top_k} most probable tokens, at temperature {req.temperature:g}",
         SampleConfig(temperature=req.temperature, top_k=req.top_k, **base)),
        ("top-p", f"a draw from the smallest set of tokens holding {req.top_p:g} of the probability, "
                  f"at temperature {req.temperature:g}",
         SampleConfig(temperature=req.temperature, top_p=req.top_p, **base)),
        ("beam", f"the most probable continuation a beam of {req.beam_width} finds",
         SampleConfig(strategy="beam", beam_width=req.beam_width, **base)),
    ]
    out = []
    for name, about, cfg in ways:
        text = generate(entry.model, entry.vocab, cfg)[0]
        out.append({"strategy": name, "about": about, "text": text, "continuation": text[len(req.prime):],
                    "command": command(entry.name, cfg)})
    return {"model": entry.name, "prime": req.prime, "continuations": out}


def tree(entry: LanguageModelEntry, req: BeamRequest) -> dict[str, Any]:
    """The beam search's tree with every token as text; ``text`` is the continuation ``rnnlab sample --strategy beam``
    writes with this width and length."""
    cfg = SampleConfig(strategy="beam", prime=req.prime, length=req.length, beam_width=req.beam_width)
    t = beam_tree(entry.model, entry.vocab, cfg, pruned=req.pruned)
    symbols = entry.vocab.symbols

    def node(n: Any) -> dict[str, Any]:
        return {"parent": n.parent, "token": n.token, "text": symbols[n.token], "score": n.score, "logprob": n.logprob}

    ids = encode_prime(entry.vocab, req.prime)
    continuation = entry.vocab.decode(t.tokens, after=prime_end(entry.vocab, req.prime, ids))  # as generate writes it
    return {"model": entry.name, "prime": req.prime, "beam_width": req.beam_width, "length": req.length,
            "steps": [{"kept": [node(n) for n in s.kept], "pruned": [node(n) for n in s.pruned]} for s in t.steps],
            "best": t.best, "tokens": [symbols[i] for i in t.tokens], "score": t.score,
            "continuation": continuation, "command": command(entry.name, cfg)}


def router(lab: Lab) -> APIRouter:
    """The section's endpoints (model work in FastAPI's thread pool: plain ``def`` handlers)."""
    r = APIRouter(prefix="/api/lab/sampling", tags=["lab: sampling"])

    @r.post("/distribution", summary="The next-token distribution after a prime, with temperature, top-k, top-p")
    def _distribution(req: DistributionRequest) -> Response:
        return _json(next_token(_model(lab, req.model, req.prime), req))

    @r.post("/continuations", summary="One prime continued by argmax, temperature, top-k, top-p and beam search")
    def _continuations(req: ContinuationsRequest) -> Response:
        return _json(continuations(_model(lab, req.model, req.prime), req))

    @r.post("/beam", summary="A beam search's tree: kept hypotheses, their scores, the best pruned, the best path")
    def _beam(req: BeamRequest) -> Response:
        return _json(tree(_model(lab, req.model, req.prime), req))

    return r
