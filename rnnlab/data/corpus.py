"""Reading corpora: a file, a folder of files, or explicit train/val/test files.

A single corpus is split deterministically: the first ``1 - val_fraction`` of its
characters train and the rest validate (90/10 by default, as nanoGPT's
character-level Shakespeare), and the split is recorded so that a run folder says
exactly which characters it saw.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sysconfig
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlab.config import DataConfig
from rnnlab.data.vocab import Vocab, tokenize_words
from rnnlab.errors import DataError


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 text from ``raw``; a clear :class:`DataError` for empty, binary or non-UTF-8 input."""
    if not raw:
        raise DataError(f"{name} is empty")
    if b"\x00" in raw[: 1 << 20]:
        raise DataError(f"{name} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert it, e.g. iconv -f latin1 -t utf-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the text
    if not text:
        raise DataError(f"{name} is empty")
    return text


def read_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of one file (``.gz`` files decompressed), or a :class:`DataError` saying why not."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"no such file: {p}")
    if p.is_dir():
        raise DataError(f"{p} is a folder; expected a text file")
    try:
        raw = p.read_bytes()
        if p.suffix == ".gz":  # e.g. Penn Treebank's compressed training file
            raw = gzip.decompress(raw)
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from None
    except (EOFError, zlib.error):
        raise DataError(f"{p} is a truncated or corrupt gzip file") from None
    return decode_text(raw, str(p))


def read_folder(path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """All non-hidden files under ``path``, sorted by relative path and concatenated."""
    root = Path(path)
    files = sorted(
        f for f in root.rglob("*")
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts))
    if not files:
        raise DataError(f"folder {root} holds no files")
    texts = [read_text(f) for f in files]
    return "".join(texts), [str(f.relative_to(root)) for f in files]


def ptb_char(text: str) -> str:
    """Penn Treebank character files as text: each line's space-separated symbols joined
    (``_`` stays the word boundary), one sentence a line, ``\n`` the end of sentence.

    >>> ptb_char("a _ c a t\n t h e _ e n d \n")
    'a_cat\nthe_end\n'
    """
    return "".join("".join(line.split()) + "\n" for line in text.splitlines() if line.strip())


FORMATS = {"text": lambda t: t, "ptb-char": ptb_char}


def read_corpus_file(path: str | os.PathLike[str], fmt: str = "text") -> str:
    """:func:`read_text`, then the corpus format's preparation."""
    text = FORMATS[fmt](read_text(path))
    if not text:
        raise DataError(f"{path} holds no text once read as {fmt}")
    return text


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Corpus:
    """The text of each split, and a record of where it came from."""

    train: str
    val: str
    test: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def split_text(text: str, val_fraction: float, name: str) -> tuple[str, str]:
    """First ``1 - val_fraction`` of the characters, and the rest."""
    cut = int(len(text) * (1.0 - val_fraction))  # nanoGPT: data[:int(n * 0.9)]
    train, val = text[:cut], text[cut:]
    if len(train) < 2 or len(val) < 2:
        raise DataError(f"{name} has {len(text)} characters: --val-fraction {val_fraction:g} leaves {len(train)} to "
                        f"train and {len(val)} to validate, and each needs at least 2"
                        + (" (give a larger --val-fraction)" if len(val) < 2 and len(text) >= 4 else ""))
    return train, val


def load_corpus(cfg: DataConfig) -> Corpus:
    """Read the corpus that ``cfg`` names and split it."""
    if cfg.train is not None:
        train = read_corpus_file(cfg.train, cfg.format)
        val = read_corpus_file(cfg.val, cfg.format)  # type: ignore[arg-type]
        test = read_corpus_file(cfg.test, cfg.format) if cfg.test else None
        record = {"kind": "files", "format": cfg.format, "train": cfg.train, "val": cfg.val, "test": cfg.test}
        for split, text in (("train", train), ("val", val), ("test", test)):
            if text is not None:
                record[f"{split}_chars"] = len(text)
                record[f"{split}_sha256"] = sha256(text)
        return Corpus(train, val, test, record)
    assert cfg.data is not None, "DataConfig.problems() rejects a config without data"
    if cfg.data == BUILTIN:
        return load_builtin(cfg.val_fraction)
    p = Path(cfg.data)
    if p.is_dir():
        text, files = read_folder(p)
        text = FORMATS[cfg.format](text)
        record: dict[str, Any] = {"kind": "folder", "path": str(p), "files": files}
    else:
        text = read_corpus_file(p, cfg.format)
        record = {"kind": "file", "format": cfg.format, "path": str(p)}
    train, val = split_text(text, cfg.val_fraction, str(p))
    record.update({
        "split": f"first {len(train)} characters train, last {len(val)} validate (val_fraction {cfg.val_fraction})",
        "total_chars": len(text), "train_chars": len(train), "val_chars": len(val), "sha256": sha256(text)})
    return Corpus(train, val, None, record)


def build_vocab(corpus: Corpus, level: str = "char", min_count: int = 1) -> Vocab:
    """Characters: every character of every split. Words: training words seen ``min_count`` times."""
    if level == "char":
        return Vocab.from_text(corpus.train + corpus.val + (corpus.test or ""))
    return Vocab.from_words(tokenize_words(corpus.train), min_count)


# The built-in corpus --------------------------------------------------------------

BUILTIN = "builtin:python-stdlib"  # the --data value that names the built-in corpus
BUILTIN_MAX_CHARS = 2_000_000  # about 2 MB: a few minutes of CPU training see it more than once


def stdlib_corpus(max_chars: int = BUILTIN_MAX_CHARS) -> tuple[str, dict[str, Any]]:
    """Python source from the interpreter's own standard library: no download needed.

    The top-level ``*.py`` files of ``sysconfig``'s ``stdlib`` folder, sorted by name,
    are concatenated until ``max_chars`` is reached (files that are not UTF-8 are
    skipped). The selection is deterministic for a given Python version; its file
    list and checksum are recorded.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    names: list[str] = []
    total = 0
    for f in sorted(root.glob("*.py")):
        try:
            t = f.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not t:
            continue
        parts.append(t)
        names.append(f.name)
        total += len(t)
        if total >= max_chars:
            break
    if not parts:
        raise DataError(f"no Python source found under {root} for the built-in corpus")
    text = "".join(parts)[:max_chars]
    return text, {"kind": "builtin", "name": "python-stdlib", "root": str(root), "files": names, "sha256": sha256(text)}


def load_builtin(val_fraction: float = 0.1) -> Corpus:
    text, record = stdlib_corpus()
    train, val = split_text(text, val_fraction, "built-in corpus")
    record.update({"total_chars": len(text), "train_chars": len(train), "val_chars": len(val),
                   "split": f"first {len(train)} characters train, last {len(val)} validate"})
    return Corpus(train, val, None, record)
