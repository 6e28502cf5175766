"""A folder of ``<label>.txt`` word lists, end to end: ``rnnlab classify train --data``, ``eval``, ``predict``;
and the rule of ``benchmarks/classify_sets.py`` that builds such folders from word-frequency lists."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rnnlab.cli import main

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ALPHABETS = {"vowelish": "aeiouy", "stopish": "bdgkpt", "liquidish": "lmnrsz"}  # disjoint: a separable toy set


def _words(rng: np.random.Generator, letters: str, n: int) -> list[str]:
    """``n`` distinct words of 4-14 letters drawn from ``letters``."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(list(letters), size=int(rng.integers(4, 15)))))
    return sorted(out)


def _folder(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for label, letters in ALPHABETS.items():
        (path / f"{label}.txt").write_text("\n".join(_words(rng, letters, n)) + "\n", encoding="utf-8")
    return path


def test_a_folder_of_word_lists_trains_evaluates_and_predicts(tmp_path, capsys):
    data = _folder(tmp_path / "words", 60)
    lines = [w for f in data.glob("*.txt") for w in f.read_text(encoding="utf-8").split()]
    assert len(lines) == 180 and all(4 <= len(w) <= 14 and w.isalpha() for w in lines)
    out = tmp_path / "run"
    assert main(["classify", "train", "--data", str(data), "--max-steps", "60", "--hidden-size", "16",
                 "--embedding-size", "8", "--batch-size", "16", "--lr", "0.02", "--eval-interval", "30",
                 "--out", str(out), "--quiet", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["classes"] == 3 and s["examples"] == {"train": 144, "val": 18, "test": 18}
    assert s["test_acc"] >= 0.9 and s["test_balanced_acc"] >= 0.9  # chance is 1/3

    assert main(["classify", "eval", str(out), "--json"]) == 0  # the test split, re-made from the folder
    e = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert e["examples"] == 18 and e["acc"] == pytest.approx(s["test_acc"])

    other = _folder(tmp_path / "other", 10, seed=1)  # another folder of the same format, every line scored
    assert main(["classify", "eval", str(out), "--data", str(other), "--json"]) == 0
    e = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert e["examples"] == 30 and e["acc"] >= 0.9

    assert main(["classify", "predict", str(out), "aeiouyaeiou", "bdgktpbdgk", "lmnrszlmnr", "--top-k", "1"]) == 0
    got = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [g[0] for g in got] == ["aeiouyaeiou", "bdgktpbdgk", "lmnrszlmnr"]
    assert [g[1].split()[0] for g in got] == ["vowelish", "stopish", "liquidish"]


@pytest.fixture
def sets(monkeypatch):
    """``benchmarks/classify_sets.py`` with a stand-in for the ``wordfreq`` package: three tiny frequency lists."""
    lists = {"aa": ["haus", "und", "katze", "hund", "über", "baum", "garten", "3dmax", "o'neil", "хлеб"],
             "bb": ["huis", "kat", "hond", "boom", "tuin", "garten", "straat"],
             "cc": ["casa", "gato", "perro", "árbol", "jardín", "calle", "straat"]}
    fake = types.ModuleType("wordfreq")
    fake.top_n_list = lambda code, n, wordlist="best": lists[code][:n]
    monkeypatch.setitem(sys.modules, "wordfreq", fake)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0")
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("classify_sets", BENCH / "classify_sets.py")
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "classify_sets", mod)  # its dataclasses look their module up
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


def test_word_sets_keep_latin_words_of_4_to_14_letters_and_drop_shared_ones(sets, tmp_path):
    assert sets.latin_word("über") and sets.latin_word("jardín") and sets.latin_word("abcdefghijklmn")
    assert not any(sets.latin_word(w) for w in ("und", "abcdefghijklmno", "3dmax", "o'neil", "хлеб"))
    spec = sets.WordSet("toy", {"A": "aa", "B": "bb", "C": "cc"}, per_class=3, pool=100)
    sets.SETS["toy"] = spec
    path = sets.ensure("toy", tmp_path)
    assert path == tmp_path / "classify-sets" / "toy"
    got = {f.stem: f.read_text(encoding="utf-8").split() for f in sorted(path.glob("*.txt"))}
    assert set(got) == {"A", "B", "C"} and all(len(ws) == 3 for ws in got.values())
    everything = [w for ws in got.values() for w in ws]
    assert len(set(everything)) == 9  # one label a string
    assert "garten" not in everything and "straat" not in everything  # in two lists: dropped from both
    assert set(got["A"]) <= {"haus", "katze", "hund", "über", "baum"}
    record = json.loads((path / "SOURCE.json").read_text(encoding="utf-8"))
    assert record["classes"]["B"]["shared_dropped"] == 2 and "CC-BY-SA" in record["licence"]
    with pytest.raises(SystemExit, match="A has only 6 words of its own"):
        sets.words_by_class(sets.WordSet("big", {"A": "aa", "C": "cc"}, per_class=7, pool=100))
