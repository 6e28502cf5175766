"""JSON for people and other programs: strict (no NaN or Infinity), non-finite numbers as null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (recursively)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON that any parser accepts (a diverged loss is ``null``, not ``NaN``)."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kw)
