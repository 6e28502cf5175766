"""Labelled sequences for classification: reading them, splitting them, weighting classes.

Formats a user has (:func:`read_labelled`):

* a folder with one ``<label>.txt`` file per class and one example a line (the PyTorch
  names tutorial's layout);
* a ``.csv`` or ``.tsv`` file with a header row, the input and the label in named
  columns (``input_column``, ``label_column``);
* a ``.jsonl`` file, one object a line; its input is a string, or a list of vectors
  (a sequence of real-valued feature vectors, all of one length);
* the built-in ``digits``: scikit-learn's bundled 8x8 handwritten digits, each image
  read as 8 time steps of 8 pixel intensities in [0, 1] (no download).

:func:`split_examples` makes the train/validation/test split: deterministic for a seed,
stratified by class, and with every distinct input in one split only (the names data
holds many exact duplicates; a split that leaks them overstates accuracy).

NumPy only: no torch here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rnnlab.data.corpus import read_text
from rnnlab.errors import DataError

BUILTINS = ("digits",)
SPLITS = ("train", "val", "test")


@dataclass
class LabelledData:
    """Examples and their labels, as read.

    ``inputs`` holds strings (text) or float32 arrays (L, F) (vector sequences);
    ``labels`` the class of each, as a string; ``source`` says where they came from.
    """

    inputs: list[Any]
    labels: list[str]
    kind: Literal["text", "vectors"]
    source: str
    feature_size: int = 0  # F for vector sequences
    sha256: str = field(default="", repr=False)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _key(x: Any) -> bytes:
    """The identity of an input: its text, or its vectors' shape and bytes."""
    if isinstance(x, str):
        return x.encode("utf-8")
    return repr(x.shape).encode() + np.ascontiguousarray(x, dtype=np.float32).tobytes()


def _lone_surrogate(s: str) -> bool:
    """Whether ``s`` holds a lone surrogate (JSON's ``"\\ud800"``, a non-UTF-8 file name): not text."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _finish(inputs: list[Any], labels: list[str], kind: str, source: str, feature_size: int = 0) -> LabelledData:
    if not inputs:
        raise DataError(f"{source} holds no examples")
    sha = _digest([_key(x) + b"\x00" + y.encode("utf-8") for x, y in zip(inputs, labels)])
    return LabelledData(inputs, labels, kind, source, feature_size, sha)  # type: ignore[arg-type]


def read_folder(folder: Path) -> LabelledData:
    """``<label>.txt`` files, one example a line; a blank line is an error (it is no example)."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no <label>.txt files (one file per class, one example a line)")
    inputs, labels = [], []
    for f in files:
        if _lone_surrogate(f.stem):
            raise DataError(f"{ascii(str(f))}: the file name is not valid UTF-8, so it cannot name a class; rename it")
        lines = read_text(f).split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the file's final newline
        for i, line in enumerate(lines, start=1):
            text = line.rstrip("\r")
            if not text.strip():
                raise DataError(f"{f} line {i} is empty; every line must be one example")
            inputs.append(text)
            labels.append(f.stem)
    return _finish(inputs, labels, "text", str(folder))


def read_table(path: Path, input_column: str, label_column: str) -> LabelledData:
    """A CSV (``.csv``) or TSV (``.tsv``) file with a header row."""
    text = read_text(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # the csv module finds the rows itself: a quoted field may hold line ends (a form feed or U+2028 is no row end)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    inputs, labels = [], []
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # one field may be the whole file
    try:
        header = reader.fieldnames or []
        missing = [c for c in (input_column, label_column) if c not in header]
        if missing:
            shown = ", ".join(repr(h)[:40] for h in header[:8]) + (", ..." if len(header) > 8 else "")
            raise DataError(f"{path} has no column {', '.join(map(repr, missing))} (its header: "  # one line: repr
                            f"{shown or 'none'}); choose with --input-column and --label-column")
        for row in reader:
            i = reader.line_num  # the line the row ends on
            x, y = row.get(input_column), row.get(label_column)
            if x is None or y is None:
                raise DataError(f"{path} line {i} has fewer fields than the header")
            if not x.strip() or not y.strip():
                raise DataError(f"{path} line {i} has an empty {input_column if not x.strip() else label_column!r}")
            inputs.append(x)
            labels.append(y.strip())
    except csv.Error as e:  # e.g. a field over csv.field_size_limit() (an unclosed quote swallows the rest)
        raise DataError(f"{path} is not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None
    finally:
        csv.field_size_limit(limit)
    return _finish(inputs, labels, "text", str(path))


def read_jsonl(path: Path, input_column: str, label_column: str) -> LabelledData:
    """One JSON object a line; the input is a string or a list of equally long number lists."""
    inputs: list[Any] = []
    labels: list[str] = []
    kinds: set[str] = set()
    size = 0
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer of 5,000 digits, deep nesting
            why = e.msg if isinstance(e, json.JSONDecodeError) else (str(e).splitlines() or [type(e).__name__])[0][:80]
            raise DataError(f"{path} line {i} is not JSON ({why})") from None
        if not isinstance(obj, dict) or input_column not in obj or label_column not in obj:
            raise DataError(f"{path} line {i} lacks the key {input_column!r} or {label_column!r}")
        x, y = obj[input_column], obj[label_column]
        if not isinstance(y, (str, int)) or isinstance(y, bool) or str(y).strip() == "":
            raise DataError(f"{path} line {i}: the label must be a non-empty string or an integer, got {y!r}"[:300])
        if any(isinstance(v, str) and _lone_surrogate(v) for v in (x, y)):
            raise DataError(f"{path} line {i} holds a lone surrogate (such as \\ud800), which is not text")
        if isinstance(x, str):
            if not x.strip():
                raise DataError(f"{path} line {i} has an empty input")
            kinds.add("text")
        else:
            try:
                arr = np.asarray(x, dtype=np.float32)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
                arr = np.zeros((0,))
            if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1 or not np.isfinite(arr).all():
                raise DataError(f"{path} line {i}: the input must be a string or a non-empty list of equally long "
                                "lists of finite numbers (one vector per time step)")
            if size and arr.shape[1] != size:
                raise DataError(f"{path} line {i}: vectors of {arr.shape[1]} numbers, earlier lines have {size}")
            size = arr.shape[1]
            x = arr
            kinds.add("vectors")
        inputs.append(x)
        labels.append(str(y).strip())
    if len(kinds) > 1:
        raise DataError(f"{path} mixes text inputs and vector inputs")
    return _finish(inputs, labels, kinds.pop() if kinds else "text", str(path), size)


def builtin_digits() -> LabelledData:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download): 8 rows = 8 steps of 8 values in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # (N, 8, 8): row t is time step t
    return _finish(list(images), [str(int(t)) for t in d.target], "vectors", "builtin:digits", 8)


def read_labelled(data: str | None = None, builtin: str | None = None, input_column: str = "text",
                  label_column: str = "label", min_classes: int = 2) -> LabelledData:
    """Read labelled sequences from a folder, a .csv/.tsv/.jsonl file, or a built-in set, holding at least
    ``min_classes`` classes (2 to train a classifier; 1 to score one on examples of a single class)."""
    labelled = _read_labelled(data, builtin, input_column, label_column)
    if len(labelled.classes) < min_classes:
        n = len(labelled.classes)
        held = "one class only" if n == 1 else f"{n} classes"
        raise DataError(f"{labelled.source} holds {held} ({', '.join(map(repr, labelled.classes[:10]))}); a "
                        f"classifier needs at least {min_classes}")
    return labelled


def _read_labelled(data: str | None, builtin: str | None, input_column: str, label_column: str) -> LabelledData:
    if builtin:
        if builtin != "digits":
            raise DataError(f"unknown built-in dataset {builtin!r} (known: {', '.join(BUILTINS)})")
        return builtin_digits()
    if not data:
        raise DataError("no data: give --data FOLDER_OR_FILE or --builtin digits")
    p = Path(data)
    if not p.exists():
        raise DataError(f"no such file or folder: {p}")
    if p.is_dir():
        return read_folder(p)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return read_table(p, input_column, label_column)
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(p, input_column, label_column)
    raise DataError(f"{p}: unknown format (expected a folder of <label>.txt files, a .csv, .tsv or .jsonl file)")


def split_examples(inputs: list[Any], labels: np.ndarray, val_fraction: float, test_fraction: float,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of the train, val and test examples.

    Identical inputs form one group, which goes to one split whole; a group's class is
    its most frequent label, and on a tie the class with fewer examples (in the names
    data most Scottish names are also English ones: they stratify as Scottish). Within each class the
    groups, in a fixed order (sorted by content), are shuffled with ``seed`` and the
    first ``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)``
    to val, the rest to train; a class with at least 3 groups gets at least one in each
    held-out split, so every class is scored. The result depends only on the data and
    the seed, not on the order of the files.
    """
    labels = np.asarray(labels)
    groups: dict[bytes, list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(_key(x), []).append(i)
    size = np.bincount(labels)  # examples per class: a tie goes to the rarer class
    by_class: dict[int, list[bytes]] = {}
    for key, idx in groups.items():
        counts = np.bincount(labels[idx], minlength=len(size))
        top = np.flatnonzero(counts == counts.max())
        by_class.setdefault(int(top[np.argmin(size[top])]), []).append(key)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    thin = []
    for c in sorted(by_class):
        keys = sorted(by_class[c])
        n = len(keys)
        order = rng.permutation(n)
        n_test, n_val = round(n * test_fraction), round(n * val_fraction)
        if n >= 3:
            n_test = max(n_test, 1) if test_fraction > 0 else 0
            n_val = max(n_val, 1) if val_fraction > 0 else 0
            while n_test + n_val >= n:  # keep at least one group for training
                n_test, n_val = (n_test - 1, n_val) if n_test >= n_val else (n_test, n_val - 1)
        else:
            thin.append(c)
            n_test = n_val = 0
        for rank, j in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            parts[split].extend(groups[keys[j]])
    if thin:
        warnings.warn(f"{len(thin)} class(es) have fewer than 3 distinct inputs and are not in the held-out splits",
                      stacklevel=2)
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in parts.items()}


def class_weights(train_labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray | None:
    r"""Per-class loss weights (C,) against imbalance, or None for ``"none"`` and ``"sampling"``.

    ``"weights"``: :math:`w_c = N / (C\, n_c)` (each class weighs as much in total);
    ``"sqrt-weights"``: :math:`w_c \propto n_c^{-1/2}`, scaled so that the average weight
    over the training examples is 1. A class absent from training gets weight 0.
    """
    if mode in ("none", "sampling"):
        return None
    n = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    present = n > 0
    w = np.zeros(num_classes)
    if mode == "weights":
        w[present] = n.sum() / (present.sum() * n[present])
    elif mode == "sqrt-weights":
        w[present] = 1.0 / np.sqrt(n[present])
        w *= n.sum() / (w * n).sum()
    else:
        raise DataError(f"unknown class balance {mode!r}")
    return w


def sampling_probabilities(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """p (N,) for balanced sampling: every class drawn equally often, its examples uniformly."""
    n = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    p = 1.0 / n[train_labels]
    return p / p.sum()


def split_record(data: LabelledData, labels: np.ndarray, classes: list[str], split: dict[str, np.ndarray]
                 ) -> dict[str, Any]:
    """What ``split.json`` records: the source, its checksum, and examples per class per split."""
    rec: dict[str, Any] = {"source": data.source, "sha256": data.sha256, "examples": len(data.inputs),
                           "distinct_inputs": len({_key(x) for x in data.inputs}), "classes": classes}
    for s, idx in split.items():
        counts = np.bincount(labels[idx], minlength=len(classes))
        rec[s] = {"examples": int(len(idx)), "per_class": {c: int(k) for c, k in zip(classes, counts)}}
    return rec


__all__ = ["BUILTINS", "LabelledData", "builtin_digits", "class_weights", "read_labelled", "sampling_probabilities",
           "split_examples", "split_record"]
