"""Vocabularies: the map between symbols (characters or words) and integer ids.

A character vocabulary is the sorted set of characters of the corpus; a word
vocabulary keeps the words seen at least ``min_count`` times in training and maps
every other word to ``<unk>``. Both are saved with the model as JSON.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal
from collections.abc import Iterable

import numpy as np

from rnnlab.errors import CheckpointError, VocabError

UNK = "<unk>"
_WORD_RE = re.compile(r"\n|[^\S\n]+|\S+")  # newline, other whitespace runs, words


def _is_text(s: str) -> bool:
    """Whether ``s`` can be written as UTF-8 (no lone surrogates)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def tokenize_words(text: str) -> list[str]:
    """Split ``text`` into words, keeping each newline as its own token ``"\\n"``."""
    return [t for t in _WORD_RE.findall(text) if t == "\n" or not t.isspace()]


class Vocab:
    """An ordered list of symbols; the id of a symbol is its position.

    >>> v = Vocab.from_text("abca")
    >>> v.encode("cab").tolist(), v.decode([0, 2])
    ([2, 0, 1], 'ac')
    """

    def __init__(self, symbols: list[str], level: Literal["char", "word"] = "char", unk: str | None = None):
        if len(set(symbols)) != len(symbols):
            raise VocabError("vocabulary has duplicate symbols")
        if level == "char" and any(len(s) != 1 for s in symbols):
            raise VocabError("a character vocabulary holds single characters only")
        bad = [s for s in symbols if not _is_text(s)]
        if bad:  # a lone surrogate (JSON allows "\ud800") can be neither written out nor read from a file
            raise VocabError(f"vocabulary symbol {bad[0]!r} is not valid Unicode text (a lone surrogate)")
        if unk is not None and unk not in symbols:
            raise VocabError(f"unknown-word symbol {unk!r} is not in the vocabulary")
        self.symbols = list(symbols)
        self.level = level
        self.unk = unk
        self.index = {s: i for i, s in enumerate(self.symbols)}
        if level == "char":
            # sorted code points for a vectorised encode (searchsorted)
            cps = np.array([ord(s) for s in self.symbols], dtype=np.int64)
            self._order = np.argsort(cps)
            self._sorted_cps = cps[self._order]

    # construction -------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """Character vocabulary: every distinct character, sorted by code point."""
        return cls(sorted(set(text)), level="char")

    @classmethod
    def from_words(cls, tokens: Iterable[str], min_count: int = 1) -> Vocab:
        """Word vocabulary: ``<unk>`` first, then words with count >= ``min_count``, by frequency."""
        counts = Counter(tokens)
        words = sorted((w for w, c in counts.items() if c >= min_count and w != UNK), key=lambda w: (-counts[w], w))
        return cls([UNK, *words], level="word", unk=UNK)

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and (self.symbols, self.level, self.unk) == (other.symbols, other.level, other.unk)

    # encode / decode ------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else tokenize_words(text)

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text``, shape (N,), int64.

        Raises :class:`VocabError` naming the symbols the model never saw (character
        level); at word level they become ``<unk>``.
        """
        if self.level == "char":
            # surrogatepass: a lone surrogate (a non-UTF-8 byte in a command line argument) is a code
            # point like any other, and refused below as a character the model never saw
            cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
            pos = np.searchsorted(self._sorted_cps, cps)
            pos_c = np.minimum(pos, max(len(self._sorted_cps) - 1, 0))
            bad = self._sorted_cps[pos_c] != cps if len(self._sorted_cps) else np.ones(len(cps), dtype=bool)
            if bad.any():
                missing = sorted({chr(c) for c in cps[bad]})
                shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
                raise VocabError(f"{len(missing)} character(s) not in the model's vocabulary: {shown}")
            return self._order[pos_c].astype(np.int64)
        unk = self.index[self.unk] if self.unk is not None else None
        ids = []
        for t in tokenize_words(text):
            i = self.index.get(t, unk)
            if i is None:
                raise VocabError(f"word {t!r} is not in the model's vocabulary")
            ids.append(i)
        return np.asarray(ids, dtype=np.int64)

    def unknown(self, text: str) -> list[str]:
        """The distinct symbols of ``text`` that this vocabulary lacks (and would refuse or map to unk)."""
        return sorted({t for t in self.tokenize(text) if t not in self.index})

    def separator(self, prev: str | None, sym: str) -> str:
        """What is written between two symbols: nothing for characters; for words a space,
        except at the start and around newlines."""
        if self.level == "char" or prev is None or prev == "\n" or sym == "\n":
            return ""
        return " "

    def decode(self, ids: Iterable[int], after: str | None = None) -> str:
        """The text of ``ids``; ``after`` is the symbol written just before them (if any)."""
        if self.level == "char":
            return "".join(self.symbols[i] for i in ids)
        out: list[str] = []
        prev = after
        for i in ids:
            w = self.symbols[i]
            out.append(self.separator(prev, w) + w)
            prev = w
        return "".join(out)

    # persistence ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "unk": self.unk, "symbols": self.symbols}

    @classmethod
    def from_dict(cls, d: Any) -> Vocab:
        try:
            level, unk, symbols = d["level"], d["unk"], d["symbols"]
            if level not in ("char", "word") or not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                raise TypeError
            if unk is not None and not isinstance(unk, str):
                raise TypeError
        except (KeyError, TypeError) as e:
            raise CheckpointError("vocabulary is malformed (expected level, unk and a list of symbols)") from e
        if not symbols:
            raise CheckpointError("vocabulary is malformed: it holds no symbols")
        try:
            return cls(symbols, level=level, unk=unk)
        except VocabError as e:
            raise CheckpointError(f"vocabulary is malformed: {e}") from e
