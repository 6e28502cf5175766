"""Units of a model's fit, shared by every model (no torch here).

A mean loss L in nats per token is also reported as bits per token, L / ln 2 (bits per
character, ``bpc``, at character level; bits per word, ``bpw``, at word level), and as
perplexity exp(L).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

LN2 = math.log(2.0)


def unit_for(level: str) -> str:
    """The name of bits per token at this level: ``bpc`` (characters) or ``bpw`` (words)."""
    return "bpc" if level == "char" else "bpw"


def token_metrics(loss: float, level: str) -> dict[str, float]:
    """A mean loss in nats per token, also as bits per token and as perplexity."""
    ppl = math.exp(loss) if loss < 709.0 else math.inf  # past exp's float range (or an infinite loss): infinite
    return {"loss": loss, unit_for(level): loss / LN2, "ppl": ppl}


def classification_metrics(y_true: Any, y_pred: Any, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy (the mean recall over the classes present), macro F1,
    per-class precision, recall, F1 and support, and the confusion matrix
    (``confusion[i][j]``: examples of class i predicted as j), from scikit-learn."""
    import numpy as np
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    with warnings.catch_warnings():  # a class absent from y_true is expected in small splits
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        balanced = balanced_accuracy_score(y_true, y_pred)
    present = s > 0
    return {
        "acc": float(accuracy_score(y_true, y_pred)),
        "balanced_acc": float(balanced),
        "macro_f1": float(f[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def confusion_text(confusion: list[list[int]], classes: list[str], width: int = 5) -> str:
    """The confusion matrix as aligned text: rows are true classes, columns predicted ones."""
    names = [c[:12] for c in classes]
    left = max(len(n) for n in names) + 1
    head = " " * left + "".join(f"{n[:width - 1]:>{width}}" for n in names)
    rows = [f"{n:<{left}}" + "".join(f"{v:>{width}}" for v in row) for n, row in zip(names, confusion)]
    return "\n".join(["true \\ predicted", head, *rows])
