"""Labelled sets of short strings for the classifier benchmarks, built into a cache folder.

Each set is a folder with one ``<label>.txt`` per class and one string a line, the format
``rnnlab classify train --data FOLDER`` reads. The word sets come from the word-frequency
lists of the ``wordfreq`` package (``pip install -c constraints.txt ".[bench]"``; its code is
Apache-2.0, its word lists CC-BY-SA 4.0, built from Wikipedia, subtitles, news, books, web text
and social media: https://github.com/rspeer/wordfreq). Nothing is committed to the repository:
the folders are written under ``$RNNLAB_DATA`` (else ``~/.cache/rnnlab/data``) in ``classify-sets/``
and rebuilt from the installed lists when missing.

* ``words10``: words by language, ten languages of five families (en, de, nl, sv, fr, es, it,
  pt, pl, fi), 2,000 words a class.
* ``words-related``: words by language, five groups of closely related languages (Danish,
  Norwegian Bokmål and Swedish; Spanish, Portuguese and Catalan; Czech and Slovak; Slovene and
  Serbo-Croatian), 2,000 words a class: a harder task, where much of the spelling is shared.

How a word list becomes a class: each language's ``pool`` most frequent words (wordfreq's
"best" list, lower-cased by wordfreq), kept when they are 4-14 letters of the Latin script
(``str.isalpha`` and a Unicode name starting ``LATIN``: no digits, apostrophes, hyphens or
other scripts). **A word kept for two or more languages of the set is dropped from every one
of them**: a string then has one label, so a perfect classifier exists, and what is measured is
how well the spelling of a language is learned, not how a tie between two lists is broken.
Then ``per_class`` words are drawn (seed 0) from what remains of each pool, so every class has
the same number of strings (a balanced task: accuracy and balanced accuracy nearly agree).

    .venv/bin/python benchmarks/classify_sets.py                   # build both sets (seconds)
    .venv/bin/python benchmarks/classify_sets.py --sets words10 --force

The folders also hold ``SOURCE.json`` (languages, sizes, words dropped as shared, the wordfreq
version and licence), which ``rnnlab classify`` ignores (it reads only ``*.txt``).
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnlab.data.download import data_dir  # noqa: E402

MIN_LETTERS, MAX_LETTERS = 4, 14
LICENCE = "wordfreq word lists: CC-BY-SA 4.0 (https://github.com/rspeer/wordfreq); wordfreq's code: Apache-2.0"


@dataclass(frozen=True)
class WordSet:
    """A labelled set of words by language: the class labels are the languages' names."""

    name: str
    languages: dict[str, str]  # label -> wordfreq language code
    per_class: int = 2000  # strings drawn for each class
    pool: int = 25000  # the most frequent words of each language considered
    what: str = ""


SETS: dict[str, WordSet] = {s.name: s for s in (
    WordSet("words10", {"English": "en", "German": "de", "Dutch": "nl", "Swedish": "sv", "French": "fr",
                        "Spanish": "es", "Italian": "it", "Portuguese": "pt", "Polish": "pl", "Finnish": "fi"},
            what="words of 4-14 letters by language, ten languages of five families, 2,000 a class"),
    WordSet("words-related", {"Danish": "da", "Norwegian": "nb", "Swedish": "sv", "Spanish": "es",
                              "Portuguese": "pt", "Catalan": "ca", "Czech": "cs", "Slovak": "sk",
                              "Slovene": "sl", "Serbo-Croatian": "sh"},
            what="words of 4-14 letters by language, five groups of closely related languages, 2,000 a class"),
)}


def latin_word(w: str) -> bool:
    """4-14 letters, every one of the Latin script (accented letters included)."""
    return (MIN_LETTERS <= len(w) <= MAX_LETTERS and w.isalpha()
            and all(unicodedata.name(ch, "").startswith("LATIN") for ch in w))


def words_by_class(spec: WordSet) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Each class's ``per_class`` words (sorted) and a record of how they were chosen."""
    from importlib.metadata import version

    import wordfreq

    pools = {label: list(dict.fromkeys(w for w in wordfreq.top_n_list(code, spec.pool, wordlist="best")
                                       if latin_word(w)))
             for label, code in spec.languages.items()}
    seen: dict[str, int] = {}
    for ws in pools.values():
        for w in ws:
            seen[w] = seen.get(w, 0) + 1
    rng = np.random.default_rng(0)
    out, record = {}, {}
    for label, ws in pools.items():
        own = [w for w in ws if seen[w] == 1]
        if len(own) < spec.per_class:
            raise SystemExit(f"classify_sets: {label} has only {len(own)} words of its own, {spec.per_class} asked")
        out[label] = sorted(own[i] for i in rng.choice(len(own), size=spec.per_class, replace=False))
        record[label] = {"language": spec.languages[label], "pool_words": len(ws), "shared_dropped": len(ws) - len(own),
                         "drawn": spec.per_class}
    return out, {"set": spec.name, "what": spec.what, "source": f"wordfreq {version('wordfreq')} top_n_list(lang, "
                 f"{spec.pool}, wordlist='best')", "licence": LICENCE, "letters": [MIN_LETTERS, MAX_LETTERS],
                 "shared_words": "dropped from every class of the set", "seed": 0, "classes": record}


def set_path(name: str, root: Path | None = None) -> Path:
    """Where set ``name`` lives: ``root`` (default ``$RNNLAB_DATA`` or ``~/.cache/rnnlab/data``)/classify-sets/name."""
    return (root or data_dir()) / "classify-sets" / name


def ensure(name: str, root: Path | None = None, force: bool = False) -> Path:
    """The folder of set ``name``, built first when it is missing (or ``force``)."""
    if name not in SETS:
        raise SystemExit(f"classify_sets: unknown set {name!r}; known: {', '.join(SETS)}")
    path = set_path(name, root)
    if (path / "SOURCE.json").exists() and not force:
        return path
    classes, record = words_by_class(SETS[name])
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for old in tmp.glob("*"):
        old.unlink()
    for label, ws in classes.items():
        (tmp / f"{label}.txt").write_text("\n".join(ws) + "\n", encoding="utf-8")
    (tmp / "SOURCE.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if path.exists():
        for old in path.glob("*"):
            old.unlink()
        path.rmdir()
    tmp.rename(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--root", type=Path, default=None, help="data folder (default $RNNLAB_DATA or ~/.cache/rnnlab/data)")
    ap.add_argument("--force", action="store_true", help="rebuild a set that exists")
    args = ap.parse_args()
    for name in args.sets:
        path = ensure(name, args.root, args.force)
        rec = json.loads((path / "SOURCE.json").read_text(encoding="utf-8"))
        print(f"{name}: {path}")
        for label, r in rec["classes"].items():
            print(f"  {label:16s} {r['language']:3s} pool {r['pool_words']:6,d}  shared (dropped) "
                  f"{r['shared_dropped']:6,d}  drawn {r['drawn']:,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
