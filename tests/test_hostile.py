"""Hostile and broken files: refused with one clear line, nothing executed, nothing overwritten.

Each case is checked at two depths: the library call raises the right :class:`RnnlabError`
subclass with a message naming the problem, and the command line exits non-zero with one
line on stderr, no traceback, and every file it was pointed at left as it was (bytes and
mtime). The command line runs in this process through ``rnnlab.cli.main`` (what
``python -m rnnlab`` calls), and the headline cases run once more as real processes.
``tests/test_checkpoint.py`` and ``tests/test_cli.py`` hold the simpler cases; this file
adds what they lack. Faults that lie in files owned elsewhere are strict ``xfail`` tests.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rnnlab.checkpoint import checkpoint_kind, load_checkpoint, load_model, read_config
from rnnlab.cli import main
from rnnlab.data.corpus import read_text
from rnnlab.errors import CheckpointError, DataError, VocabError
from rnnlab.sampling import encode_prime
from rnnlab.serve import Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_hostile import armed  # noqa: E402  (one armed pickle for the tests and the benchmark)

Snapshot = dict[str, tuple[bytes, int] | str]


# the armed pickle ----------------------------------------------------------------------------

def armed_pickle(path: Path, marker: Path, kind: str = "torch") -> Path:
    """A file whose loading with ``pickle``/``torch.load`` would create ``marker`` (benchmarks/bench_hostile.py's
    ``armed``: ``torch``, ``legacy`` or ``rawN``); making it runs nothing."""
    armed(path, marker, kind)
    assert not marker.exists()
    return path


# what a refusal looks like --------------------------------------------------------------------

def snapshot(*roots: Path) -> Snapshot:
    """Every file and folder under ``roots``: a file's bytes and mtime, a folder as ``"dir"``."""
    snap: Snapshot = {}
    for root in roots:
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            if p.is_file():
                snap[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
            elif p.exists():
                snap[str(p)] = "dir"
    return snap


def cli(argv: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``rnnlab ARGV`` in this process: exit code, stdout, stderr."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc: int, err: str, *needles: str) -> None:
    """A non-zero exit and exactly one ``rnnlab: error:`` line holding every needle, no traceback."""
    lines = err.strip().splitlines()
    assert rc != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def train_args(data: Path, out: Path) -> list[str]:
    """A run trained in about a second: a 1x8 GRU, 2 steps of 4 x 10 characters."""
    return ["train", "--data", str(data), "--cell", "gru", "--hidden-size", "8", "--num-layers", "1",
            "--embedding-size", "4", "--seq-len", "10", "--batch-size", "4", "--max-steps", "2",
            "--eval-interval", "2", "--eval-batch-size", "4", "--threads", "1", "--out", str(out), "--quiet"]


RESUME = ["train", "--resume", "--max-steps", "4", "--quiet", "--out"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run folder (config, vocab, split, metrics, best and last checkpoints)."""
    from conftest import TEXT

    d = tmp_path_factory.mktemp("hostile")
    (d / "corpus.txt").write_text(TEXT, encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        assert main(train_args(d / "corpus.txt", d / "run")) == 0
    finally:
        torch.set_num_threads(threads)
    return d / "run"


@pytest.fixture
def own_run(run: Path, tmp_path: Path) -> Path:
    """A copy of the run that a test may break (its corpus is the module's, unchanged)."""
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.fixture(scope="module")
def meta(run: Path) -> dict[str, str]:
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        return dict(f.metadata())


@pytest.fixture(scope="module")
def tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "best.safetensors")


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling during the test fails it on the spot (the marker is a second witness)."""

    def forbidden(*a: Any, **k: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


# controls -----------------------------------------------------------------------------------------

def test_an_untouched_run_samples_evaluates_and_resumes(own_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Control: the checks that refuse the files below let the real thing through."""
    for argv in (["sample", own_run, "--length", "5"], ["eval", own_run], [*RESUME, own_run, "--json"]):
        rc, out, err = cli(argv, capsys)
        assert rc == 0 and "error" not in err, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 4
    ckpt = load_checkpoint(own_run / "last.safetensors")
    assert ckpt.carry() is not None and ckpt.rng() and ckpt.optimizer_state() is not None


# pickles ------------------------------------------------------------------------------------------

def test_the_pickles_are_armed(tmp_path: Path) -> None:
    """Control: loading these files the usual way does run their code, so the refusals below mean something."""
    marker = tmp_path / "pwned"
    pickle.loads(armed_pickle(tmp_path / "raw.pkl", marker, "raw4").read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(armed_pickle(tmp_path / "model.pt", marker, "torch"), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch", "legacy", "raw0", "raw1", "raw2", "raw3", "raw4", "raw5"])
def test_the_library_refuses_a_pickle_without_unpickling_it(kind: str, tmp_path: Path, no_unpickling: None) -> None:
    marker = tmp_path / "pwned"
    path = armed_pickle(tmp_path / "model.safetensors", marker, kind)
    before = snapshot(tmp_path)
    # protocols 0 and 1 are text-like: refused as not safetensors, without being named pickles
    needle = "not a safetensors file" if kind in ("raw0", "raw1") else "never unpickles"
    for call in (load_checkpoint, load_model, read_config, checkpoint_kind):
        with pytest.raises(CheckpointError, match=needle):
            call(path)
    with pytest.raises(CheckpointError, match=needle):
        Registry.load([str(path)])
    assert not marker.exists() and snapshot(tmp_path) == before


COMMANDS: dict[str, Callable[[Path], list[Any]]] = {
    "sample": lambda p: ["sample", p, "--length", "5"],
    "eval": lambda p: ["eval", p],
    "serve": lambda p: ["serve", p, "--port", "0"],
    "classify predict": lambda p: ["classify", "predict", p, "abc"],
    "classify eval": lambda p: ["classify", "eval", p],
}


@pytest.mark.parametrize("kind", ["torch", "raw4"])
@pytest.mark.parametrize("command", [*COMMANDS, "sample a run folder", "resume"])
def test_every_command_refuses_a_pickle_in_one_line(command: str, kind: str, own_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: served.append(a))  # never bind a port here
    marker = tmp_path / "pwned"
    if command == "resume":  # the run's last checkpoint replaced by a pickle
        armed_pickle(own_run / "last.safetensors", marker, kind)
        argv: list[Any] = [*RESUME, own_run]
    elif command == "sample a run folder":
        armed_pickle(own_run / "best.safetensors", marker, kind)
        argv = ["sample", own_run, "--length", "5"]
    else:
        argv = COMMANDS[command](armed_pickle(own_run / "model.pt", marker, kind))
    before = snapshot(own_run)
    rc, out, err = cli(argv, capsys)
    assert_refused(rc, err, "never unpickles")
    assert out == "" and not served and not marker.exists()
    assert snapshot(own_run) == before


@pytest.fixture(scope="module")
def processes(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real ``python -m rnnlab`` processes, started together (each imports torch: seconds): an armed
    torch.save file given to sample, and a run whose last checkpoint is one given to --resume. Every
    other command meets the same files in this process, through ``rnnlab.cli.main``."""
    d = tmp_path_factory.mktemp("processes")
    marker = d / "pwned"
    evil = armed_pickle(d / "model.pt", marker, "torch")
    resumed = Path(shutil.copytree(run, d / "run"))
    armed_pickle(resumed / "last.safetensors", marker, "torch")
    argvs: dict[str, list[Any]] = {"sample": ["sample", evil], "resume": [*RESUME, resumed]}
    before = snapshot(d, run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "rnnlab", *map(str, argv)], cwd=d, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, argv in argvs.items()}
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        results[name] = (p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    return {"results": results, "marker": marker, "unchanged": snapshot(d, run) == before}


@pytest.mark.parametrize("name", ["sample", "resume"])
def test_a_real_process_refuses_in_one_line(processes: dict[str, Any], name: str) -> None:
    rc, out, err = processes["results"][name]
    assert_refused(rc, err, "never unpickles")
    assert out == "" and not processes["marker"].exists() and processes["unchanged"]


# truncated safetensors ------------------------------------------------------------------------------

def _cut(data: bytes, where: str) -> bytes:
    header = int.from_bytes(data[:8], "little")
    return data[:{"length": 5, "header": 8 + header // 2, "header end": 8 + header - 1,
                  "data start": 8 + header, "data": 8 + header + (len(data) - 8 - header) // 2,
                  "last byte": len(data) - 1}[where]]


@pytest.mark.parametrize("where,needle", [
    ("length", "not a safetensors file"),  # 5 of the 8 bytes of the header length
    ("header", "is truncated: its safetensors header says"),
    ("header end", "is truncated: its safetensors header says"),
    ("data start", "corrupt or truncated"),
    ("data", "corrupt or truncated"),
    ("last byte", "corrupt or truncated"),
])
def test_a_truncated_checkpoint_is_refused(where: str, needle: str, run: Path, own_run: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cut = _cut((run / "best.safetensors").read_bytes(), where)
    path = own_run / "best.safetensors"
    path.write_bytes(cut)
    (own_run / "last.safetensors").write_bytes(cut)
    for call in (load_checkpoint, read_config):  # read_config reads the header alone: it must not trust it either
        with pytest.raises(CheckpointError, match=needle):
            call(path)
    before = snapshot(own_run)
    for argv in (["sample", path, "--length", "3"], ["eval", own_run], [*RESUME, own_run]):
        rc, out, err = cli(argv, capsys)
        assert_refused(rc, err, needle)
    assert snapshot(own_run) == before


# metadata: foreign, wrong version, missing, malformed, invalid ---------------------------------------

def _config(meta: dict[str, str], change: Callable[[dict[str, Any]], Any]) -> str:
    cfg = json.loads(meta["config"])
    change(cfg)
    return json.dumps(cfg)


BAD_META: dict[str, tuple[Callable[[dict[str, str]], dict[str, str] | None], str]] = {
    # name: (metadata from the good metadata, or None for no metadata at all), needle
    "foreign file (a tensor 'weight' only)": (lambda m: None, "not an rnnlab checkpoint"),
    "another project's metadata": (lambda m: {"format": "pt", "framework": "other"}, "not an rnnlab checkpoint"),
    "version 2": (lambda m: {**m, "version": "2"}, "version '2'; this rnnlab reads version 1"),
    "version missing": (lambda m: {k: v for k, v in m.items() if k != "version"}, "version None"),
    "config missing": (lambda m: {k: v for k, v in m.items() if k != "config"}, "metadata lacks 'config'"),
    "vocab missing": (lambda m: {k: v for k, v in m.items() if k != "vocab"}, "metadata lacks 'vocab'"),
    "config not JSON": (lambda m: {**m, "config": "{'model':"}, "metadata 'config' is not valid JSON"),
    "config a list": (lambda m: {**m, "config": "[]"}, "expected an object, got list"),
    "config unknown key": (lambda m: {**m, "config": _config(m, lambda c: c["model"].update(heads=8))},
                           "unknown key model.'heads'"),
    "config unknown section": (lambda m: {**m, "config": _config(m, lambda c: c.update(attention={}))},
                               "unknown key 'attention'"),
    "config wrong type": (lambda m: {**m, "config": _config(m, lambda c: c["model"].update(hidden_size="8"))},
                          "hidden_size: expected an integer"),
    "config negative size": (lambda m: {**m, "config": _config(m, lambda c: c["model"].update(hidden_size=-3))},
                             "hidden_size must be >= 1, got -3"),
    "config dropout 5": (lambda m: {**m, "config": _config(m, lambda c: c["model"].update(dropout=5.0))},
                         "dropout must lie in [0, 1)"),
    "config eval batch 0": (lambda m: {**m, "config": _config(m, lambda c: c["train"].update(eval_batch_size=0))},
                            "eval_batch_size must be >= 1"),
    "config model section missing": (lambda m: {**m, "config": _config(m, lambda c: c.pop("model"))},
                                     "weights do not match"),
    "kind unknown": (lambda m: {**m, "kind": "transformer"}, "unknown kind 'transformer'"),
    "kind classifier": (lambda m: {**m, "kind": "classifier"}, "stored config is invalid"),
    "train state a list": (lambda m: {**m, "train_state": "[3]"}, "training state is malformed"),
    "optimiser state malformed": (lambda m: {**m, "optimizer": '{"param_groups": 1, "scalars": []}'},
                                  "optimiser state is malformed"),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_bad_metadata_is_refused(case: str, meta: dict[str, str], tensors: dict[str, torch.Tensor], own_run: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    make, needle = BAD_META[case]
    path = own_run / "best.safetensors"
    new = make(meta)
    if new is None:
        save_file({"weight": torch.zeros(3, 3)}, path)
    else:
        save_file(tensors, path, metadata=new)
    shutil.copy(path, own_run / "last.safetensors")
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        load_model(path)
    before = snapshot(own_run)
    for argv in (["sample", own_run, "--length", "3"], ["eval", path], [*RESUME, own_run]):
        rc, out, err = cli(argv, capsys)
        assert_refused(rc, err, needle)
        assert out == ""
    assert snapshot(own_run) == before


def test_a_config_asking_for_a_huge_model_allocates_nothing(meta: dict[str, str], tensors: dict[str, torch.Tensor],
                                                           tmp_path: Path) -> None:
    """Shapes are compared before the model is built: 2 x 200,000 LSTM units would need about 2.6 TB."""
    path = tmp_path / "huge.safetensors"
    huge = _config(meta, lambda c: c["model"].update(cell="lstm", hidden_size=200_000, num_layers=2))
    save_file(tensors, path, metadata={**meta, "config": huge})
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match="weights do not match .*expected"):
        load_model(path)
    assert time.perf_counter() - t < 5.0


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(value: float, meta: dict[str, str], tensors: dict[str, torch.Tensor],
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nan.safetensors"
    w = tensors["model.decoder.weight"].clone()
    w[0, 0] = value
    save_file({**tensors, "model.decoder.weight": w}, path, metadata=meta)
    with pytest.raises(CheckpointError, match="model.decoder.weight|decoder.weight holds NaN or infinite"):
        load_model(path)
    rc, out, err = cli(["sample", path, "--length", "3"], capsys)
    assert_refused(rc, err, "NaN or infinite")


@pytest.mark.parametrize("name,tensor,needle", [
    ("carry.x", torch.zeros(4, 8), "tensor name 'carry.x' is malformed"),
    ("optim.first.exp_avg", torch.zeros(1), "tensor name 'optim.first.exp_avg' is malformed"),
    ("carry.0.0", torch.zeros(4, 3), "carried state [[[4, 3]]] does not fit a 1-layer gru of width 8"),
    ("rng.torch", torch.zeros(3), "random generator state 'torch' is malformed"),
])
def test_malformed_resume_tensors_are_refused(name: str, tensor: torch.Tensor, needle: str, meta: dict[str, str],
                                              tensors: dict[str, torch.Tensor], own_run: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    save_file({**tensors, name: tensor}, own_run / "last.safetensors", metadata=meta)
    before = snapshot(own_run)
    rc, out, err = cli([*RESUME, own_run], capsys)
    assert_refused(rc, err, needle)
    assert snapshot(own_run) == before


# vocabularies that do not match the weights ----------------------------------------------------------

BAD_VOCAB: dict[str, tuple[dict[str, Any], str]] = {
    "one symbol more than the embedding rows": ({"extra": "Q"}, "weights do not match"),
    "one symbol fewer": ({"drop": 1}, "weights do not match"),
    "a lone surrogate": ({"replace": "\ud800"}, "not valid Unicode text (a lone surrogate)"),
    "no symbols": ({"symbols": []}, "holds no symbols"),
    "duplicate symbols": ({"duplicate": True}, "duplicate symbols"),
    "two-character symbol": ({"replace": "ab"}, "single characters only"),
    "symbols not a list": ({"symbols": "abc"}, "vocabulary is malformed"),
    "unk not a symbol": ({"level": "word", "unk": "<unk>"}, "'<unk>' is not in the vocabulary"),
}


@pytest.mark.parametrize("case", list(BAD_VOCAB))
def test_a_vocabulary_that_does_not_fit_is_refused(case: str, meta: dict[str, str], tensors: dict[str, torch.Tensor],
                                                   own_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, needle = BAD_VOCAB[case]
    vocab = json.loads(meta["vocab"])
    symbols = list(vocab["symbols"])
    if "extra" in change:
        symbols.append(change["extra"])
    if "drop" in change:
        symbols = symbols[: -change["drop"]]
    if "replace" in change:
        symbols[-1] = change["replace"]
    if change.get("duplicate"):
        symbols[-1] = symbols[0]
    vocab.update({"symbols": symbols, **{k: v for k, v in change.items() if k in ("symbols", "level", "unk")}})
    path = own_run / "best.safetensors"
    save_file(tensors, path, metadata={**meta, "vocab": json.dumps(vocab)})
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        load_model(path)
    before = snapshot(own_run)
    for argv in (["sample", path, "--length", "3"], ["eval", path]):
        rc, out, err = cli(argv, capsys)
        assert_refused(rc, err, needle)
    assert snapshot(own_run) == before


def test_the_run_folders_json_files_are_not_trusted(own_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """vocab.json and config.json are for people: the checkpoint carries its own, so a tampered copy changes nothing."""
    ckpt = load_checkpoint(own_run)
    (own_run / "vocab.json").write_text(json.dumps({"level": "char", "unk": None, "symbols": list("XYZ")}))
    (own_run / "config.json").write_text('{"version": 99, "model": {"hidden_size": -1}}')
    before = snapshot(own_run)
    rc, out, err = cli(["sample", own_run, "--length", "40", "--seed", "1"], capsys)
    assert rc == 0 and err == "" and out.endswith("\n")
    assert len(out[:-1]) == 40 and set(out[:-1]) <= set(ckpt.vocab.symbols)
    assert snapshot(own_run) == before


# corpora --------------------------------------------------------------------------------------------

BAD_CORPORA: dict[str, tuple[bytes | None, str]] = {
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), "looks binary (it contains NUL bytes)"),
    "empty": (b"", "is empty"),
    "UTF-8 then latin-1": ("the caf\u00e9 sat.\n".encode() + "the caf\u00e9 sat.\n".encode("latin-1"),
                           "is not valid UTF-8 (byte 0xe9 at offset 22)"),
    "only a byte-order mark": (b"\xef\xbb\xbf", "is empty"),
    "UTF-16 with its byte-order mark": ("the cat".encode("utf-16"), "looks binary"),
    "a folder": (None, "is a folder; expected a text file"),
}


@pytest.mark.parametrize("case", list(BAD_CORPORA))
def test_a_bad_corpus_is_refused(case: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content, needle = BAD_CORPORA[case]
    path = tmp_path / "corpus.txt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(needle)):
        read_text(path)
    before = snapshot(tmp_path, run)
    rc, out, err = cli(["eval", run, "--data", path], capsys)
    assert_refused(rc, err, needle)
    if content is not None:  # (a folder is a corpus of files to train on)
        rc, out, err = cli(train_args(path, tmp_path / "new"), capsys)
        assert_refused(rc, err, needle)
        assert not (tmp_path / "new").exists()
    assert snapshot(tmp_path, run) == before


def test_a_folder_corpus_with_one_binary_file_names_that_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("the cat sat on the mat.\n" * 50)
    (tmp_path / "texts" / "b.bin").write_bytes(b"\x00\x01\x02" * 10)
    rc, out, err = cli(train_args(tmp_path / "texts", tmp_path / "new"), capsys)
    assert_refused(rc, err, "b.bin looks binary")
    assert not (tmp_path / "new").exists()


def test_odd_but_valid_corpora_are_read(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A byte-order mark before the text is dropped; a line of 5 MB is just text (and 20,000 characters score)."""
    from conftest import TEXT

    line = TEXT.replace("\n", " ")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    assert read_text(tmp_path / "bom.txt") == TEXT
    (tmp_path / "huge.txt").write_text(line * (5_000_000 // len(line) + 1))
    assert "\n" not in read_text(tmp_path / "huge.txt") and len(read_text(tmp_path / "huge.txt")) > 5_000_000
    (tmp_path / "long.txt").write_text(line * (20_000 // len(line) + 1))
    rc, out, err = cli(["eval", run, "--data", tmp_path / "long.txt", "--json"], capsys)
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["tokens"] > 20_000


def test_an_out_that_is_a_file_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import TEXT

    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    rc, out, err = cli(train_args(tmp_path / "corpus.txt", tmp_path / "notes.txt"), capsys)
    assert_refused(rc, err, "is a file, not a folder")
    assert snapshot(tmp_path) == before


# prime text --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prime,named", [(os.fsdecode(b"ab\xffc"), "'\\udcff'"), ("the Zebra", "'Z'"),
                                         ("\U0001f600 cat", "'😀'")])
def test_a_prime_with_characters_the_model_never_saw(prime: str, named: str, run: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``\\udcff`` is what a non-UTF-8 byte on the command line becomes (surrogateescape)."""
    _, vocab, _ = load_model(run)
    with pytest.raises(VocabError, match=re.escape(named)):
        encode_prime(vocab, prime)
    rc, out, err = cli(["sample", run, "--prime", prime, "--length", "3"], capsys)
    assert_refused(rc, err, named, "not in the model's vocabulary")
    assert out == ""


# gzip corpora and damaged run folders ----------------------------------------------------------------

def test_a_truncated_or_plain_gzip_corpus_is_refused(run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Truncated and non-gzip files are refused already; see the xfail below for a damaged deflate stream."""
    good = gzip.compress(b"the cat sat on the mat.\n" * 20)
    (tmp_path / "short.txt.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "plain.txt.gz").write_bytes(b"the cat, not compressed")
    for name, needle in (("short.txt.gz", "truncated or corrupt gzip"), ("plain.txt.gz", "Not a gzipped file")):
        rc, out, err = cli(["eval", run, "--data", tmp_path / name], capsys)
        assert_refused(rc, err, needle)


def test_a_damaged_gzip_stream_is_refused(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = gzip.compress(b"the cat sat on the mat.\n" * 20)
    (tmp_path / "bad.txt.gz").write_bytes(good[:10] + b"\xff" * 8 + good[18:])
    rc, out, err = cli(["eval", run, "--data", tmp_path / "bad.txt.gz"], capsys)
    assert_refused(rc, err, "gzip")


def _resume_with(own_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(own_run)
    rc, out, err = cli([*RESUME, own_run], capsys)
    assert_refused(rc, err)
    assert snapshot(own_run) == before


def _state(meta: dict[str, str], **values: Any) -> dict[str, str]:
    return {**meta, "train_state": json.dumps({**json.loads(meta["train_state"]), **values})}


def _group(meta: dict[str, str], **values: Any) -> dict[str, str]:
    opt = json.loads(meta["optimizer"])
    opt["param_groups"][0].update(values)
    return {**meta, "optimizer": json.dumps(opt)}


RESUME_FAULTS = {
    "train state step a string": (
        lambda m, t: (_state(m, step="3"), t), TypeError,
        "rnnlab/loop.py restore builds TrainState(**train_state) without checking types; a string step fails later "
        "in a comparison. Fix: check every field against TrainState's annotations (ints >= 0, finite floats) and "
        "raise CheckpointError('training state is malformed')"),
    "train state batch negative": (
        lambda m, t: (_state(m, batch=-3), t), IndexError,
        "rnnlab/loop.py restore accepts batch -3; StreamBatcher.batch then raises IndexError, after config.json and "
        "metrics.jsonl were rewritten. Fix: in restore, refuse step/epoch/batch < 0 (CheckpointError), and check "
        "batch < batches_per_epoch before anything is written"),
    "Adam betas of length 1": (
        lambda m, t: (_group(m, betas=[0.9]), t), ValueError,
        "rnnlab/loop.py restore loads param_groups without comparing them to the fresh optimiser's; Adam then fails "
        "at its first step. Fix: after load_state_dict, check each group has the fresh group's keys with values of "
        "the same type (tuples of the same length) and raise CheckpointError"),
    "Adam eps a string": (
        lambda m, t: (_group(m, eps="tiny"), t), TypeError,
        "as for betas: rnnlab/loop.py restore must compare group value types with the fresh optimiser's"),
    "Adam moment of the wrong shape": (
        lambda m, t: (m, {**t, "optim.0.exp_avg": torch.zeros(3)}), RuntimeError,
        "rnnlab/loop.py restore does not compare optimiser state tensors with their parameters; fix: each "
        "state tensor that is not a scalar step must have its parameter's shape, else CheckpointError"),
    "carried state for 2 streams, batch of 4": (
        lambda m, t: (m, {**t, "carry.0.0": torch.zeros(2, 8)}), RuntimeError,
        "rnnlab/train.py takes the carried state's rows for this rank without checking it holds batch_size rows; "
        "fix: if c[0][0].shape[0] != tc.batch_size raise CheckpointError(... carried state for N streams ...)"),
}


@pytest.mark.parametrize("case", list(RESUME_FAULTS))
def test_resume_refuses_a_broken_training_state(case: str, meta: dict[str, str], tensors: dict[str, torch.Tensor],
                                                own_run: Path, capsys: pytest.CaptureFixture[str],
                                                request: pytest.FixtureRequest) -> None:
    make, _, _ = RESUME_FAULTS[case]
    new_meta, new_tensors = make(meta, tensors)
    save_file(new_tensors, own_run / "last.safetensors", metadata=new_meta)
    _resume_with(own_run, capsys)


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[1, 2]", b"{not json"])
def test_resume_refuses_a_damaged_split_record(content: bytes, own_run: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """split.json is how a resumed run knows its corpus is the same: damaged, the run is refused, untouched."""
    (own_run / "split.json").write_bytes(content)
    _resume_with(own_run, capsys)


@pytest.mark.parametrize("content", [b'{"step": 1}\n\xff\n', b"[1]\n"])
def test_resume_skips_damaged_log_lines(content: bytes, own_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged metrics.jsonl line is dropped like a half-written one; the run resumes."""
    (own_run / "metrics.jsonl").write_bytes(content)
    rc, out, err = cli([*RESUME, own_run], capsys)
    assert rc == 0 and "Traceback" not in err, err
    rows = [json.loads(line) for line in (own_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(r, dict) for r in rows) and rows


def test_resume_refuses_a_vocabulary_or_config_that_does_not_fit(meta: dict[str, str],
                                                                 tensors: dict[str, torch.Tensor], own_run: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A vocabulary of the right size that lacks one of the corpus's characters, or a command that changes the
    stored config: refused before anything in the run folder is touched."""
    vocab = json.loads(meta["vocab"])
    assert "b" in vocab["symbols"] and "Q" not in vocab["symbols"]
    vocab["symbols"] = [("Q" if s == "b" else s) for s in vocab["symbols"]]
    save_file(tensors, own_run / "last.safetensors", metadata={**meta, "vocab": json.dumps(vocab)})
    before = snapshot(own_run)
    rc, out, err = cli([*RESUME, own_run], capsys)
    assert_refused(rc, err, "'b'", "not in the model's vocabulary")
    rc, out, err = cli([*RESUME, own_run, "--hidden-size", "16"], capsys)
    assert_refused(rc, err, "hidden_size")
    assert snapshot(own_run) == before
