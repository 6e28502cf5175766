"""Units of a language model's fit, shared by every model (no torch here).

A mean loss L in nats per token is also reported as bits per token, L / ln 2 (bits per
character, ``bpc``, at character level; bits per word, ``bpw``, at word level), and as
perplexity exp(L).
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def unit_for(level: str) -> str:
    """The name of bits per token at this level: ``bpc`` (characters) or ``bpw`` (words)."""
    return "bpc" if level == "char" else "bpw"


def token_metrics(loss: float, level: str) -> dict[str, float]:
    """A mean loss in nats per token, also as bits per token and as perplexity."""
    return {"loss": loss, unit_for(level): loss / LN2, "ppl": math.exp(min(loss, 700.0))}
