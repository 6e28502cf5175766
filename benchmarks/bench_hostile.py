"""Hostile inputs and fuzzing: does every bad input get one readable line, and nothing else?

1. The catalogue: pickles whose unpickling would run code, truncated and foreign safetensors
   files, wrong or malformed metadata, vocabularies that do not fit their weights, bad
   corpora and labelled data, prime text the model never saw, broken run folders. Each is
   given to the real command line (``python -m rnnlab ...`` in a fresh process, as a user
   runs it) and recorded: the exit code, the one-line message, whether a traceback
   appeared, whether the pickle's code ran (it would create a marker file), whether any
   file it was pointed at changed (bytes or mtime). A refusal is *clean* when the exit is
   non-zero, stderr is exactly one ``rnnlab: error:`` line, and nothing ran or changed; a
   valid but odd input (a byte-order mark, a 5 MB line) is clean when it succeeds the same
   way. Cases marked with a file are faults found there and reported (strict xfails in
   ``tests/test_hostile.py``).
2. The fuzz properties of ``tests/test_fuzz.py`` with ``RNNLAB_FUZZ_EXAMPLES`` examples each
   (2000 by default), run by pytest with hypothesis's statistics: examples run per
   property, its outcome and seconds.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_hostile.py    # both, a few minutes
    .venv/bin/python benchmarks/bench_hostile.py --parts 1 --jobs 2 --only 'pickle|resume'
    .venv/bin/python benchmarks/bench_hostile.py --parts 2 --examples 500

Writes ``benchmarks/results/hostile.json`` and ``hostile.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import pickle
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat by a log.\n") * 40


# the armed pickle and the tiny run ----------------------------------------------------------------

class Armed:
    """Unpickling this calls ``open(marker, "w")``: the marker appears only if something unpickles it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def armed(path: Path, marker: Path, kind: str) -> Path:
    """``torch`` (torch.save's zip), ``legacy`` (its old format) or ``rawN`` (pickle protocol N)."""
    payload = {"model.decoder.weight": torch.zeros(2, 2), "hook": Armed(marker)}
    if kind == "torch":
        torch.save(payload, path)
    elif kind == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(Armed(marker), protocol=int(kind[3:])))
    return path


def tiny_run(work: Path) -> Path:
    """A run folder in about a second: a 1x8 GRU, 2 steps of 4 x 10 characters."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = RunConfig(data=DataConfig(data=str(work / "corpus.txt")),
                    model=ModelConfig(cell="gru", hidden_size=8, num_layers=1, embedding_size=4),
                    train=TrainConfig(batch_size=4, seq_len=10, max_steps=2, eval_interval=2, eval_batch_size=4,
                                      threads=1, out=str(work / "run")))
    train(cfg, progress=False)
    return work / "run"


# the catalogue --------------------------------------------------------------------------------------

@dataclass
class Case:
    group: str
    name: str
    make: Callable[[Path, dict[str, Any]], list[Any]]  # (case folder, shared) -> argv; builds the hostile input
    expect: str = "refuse"  # or "accept": a valid input that merely looks odd; "resume": a run that goes on
    known: str = ""  # the file holding a known fault found here (a strict xfail there)


def _save(path: Path, shared: dict[str, Any], meta: dict[str, str] | None = None,
          tensors: dict[str, torch.Tensor] | None = None) -> Path:
    save_file(tensors if tensors is not None else shared["tensors"], path,
              metadata=meta if meta is not None else shared["meta"])
    return path


def _meta(shared: dict[str, Any], **changes: Any) -> dict[str, str]:
    meta = dict(shared["meta"])
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    return meta


def _config(shared: dict[str, Any], section: str, **values: Any) -> str:
    cfg = json.loads(shared["meta"]["config"])
    cfg.setdefault(section, {}).update(values)
    return json.dumps(cfg)


def _vocab(shared: dict[str, Any], change: Callable[[list[str]], list[str]]) -> str:
    v = json.loads(shared["meta"]["vocab"])
    v["symbols"] = change(list(v["symbols"]))
    return json.dumps(v)


def _group_values(shared: dict[str, Any], **values: Any) -> str:
    opt = json.loads(shared["meta"]["optimizer"])
    opt["param_groups"][0].update(values)
    return json.dumps(opt)


def _state(shared: dict[str, Any], **values: Any) -> str:
    return json.dumps({**json.loads(shared["meta"]["train_state"]), **values})


def _cut(data: bytes, where: str) -> bytes:
    header = int.from_bytes(data[:8], "little")
    return data[:{"length": 5, "header": 8 + header // 2, "data": 8 + header + (len(data) - 8 - header) // 2}[where]]


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(content)
        return d / name
    return make


RESUME = ["train", "--resume", "--max-steps", "4", "--quiet", "--out"]


def _resume(change: Callable[[Path, dict[str, Any]], Any]) -> Callable[[Path, dict[str, Any]], list[Any]]:
    def make(d: Path, shared: dict[str, Any]) -> list[Any]:
        change(d, shared)
        return [*RESUME, d / "run"]
    return make


def _last(**meta_changes: Any) -> Callable[[Path, dict[str, Any]], Any]:
    return lambda d, s: _save(d / "run" / "last.safetensors", s, _meta(s, **meta_changes))


def _last_tensor(name: str, t: torch.Tensor) -> Callable[[Path, dict[str, Any]], Any]:
    return lambda d, s: _save(d / "run" / "last.safetensors", s, tensors={**s["tensors"], name: t})


def _sample_meta(**changes: Any) -> Callable[[Path, dict[str, Any]], list[Any]]:
    return lambda d, s: ["sample", _save(d / "model.safetensors", s, _meta(s, **changes)), "--length", "5"]


def _sample_config(**model: Any) -> Callable[[Path, dict[str, Any]], list[Any]]:
    return lambda d, s: _sample_meta(config=_config(s, "model", **model))(d, s)


def _classify(name: str, content: bytes) -> Callable[[Path, dict[str, Any]], list[Any]]:
    return lambda d, s: ["classify", "train", "--data", _file(name, content)(d), "--max-steps", "1", "--out", d / "new"]


GOOD_GZ = gzip.compress(TEXT.encode())
DAMAGED_GZ = GOOD_GZ[:10] + b"\xff" * 8 + GOOD_GZ[18:]  # the deflate stream's first bytes overwritten
CORPORA = {
    "binary (an ELF header)": (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "refuse", ""),
    "empty": (b"", "refuse", ""),
    "UTF-8, then latin-1": ("the caf\u00e9\n".encode() + "the caf\u00e9\n".encode("latin-1"), "refuse", ""),
    "only a byte-order mark": (b"\xef\xbb\xbf", "refuse", ""),
    "UTF-16": ("the cat sat".encode("utf-16"), "refuse", ""),
    "a byte-order mark, then text": (b"\xef\xbb\xbf" + TEXT.encode(), "accept", ""),
    "one line of 200 kB": (TEXT.replace("\n", " ").encode() * 52, "accept", ""),  # scoring 5 MB takes minutes
}


def catalogue() -> list[Case]:
    c: list[Case] = []
    # every command meets torch.save's file; the other pickle formats meet sample (and --resume)
    for kind in ("torch", "legacy", "raw4", "raw0"):
        c.append(Case("pickle", f"armed pickle ({kind}) to sample",
                      lambda d, s, k=kind: ["sample", armed(d / "model.pt", d / "pwned", k)]))
    for kind in ("torch", "raw4"):
        c.append(Case("pickle", f"armed pickle ({kind}) as last.safetensors, --resume",
                      _resume(lambda d, s, k=kind: armed(d / "run" / "last.safetensors", d / "pwned", k))))
    c += [Case("pickle", "armed pickle (torch) to eval",
               lambda d, s: ["eval", armed(d / "m.pt", d / "pwned", "torch")]),
          Case("pickle", "armed pickle (torch) to serve",
               lambda d, s: ["serve", armed(d / "m.pt", d / "pwned", "torch"), "--port", "0"]),
          Case("pickle", "armed pickle (torch) to classify predict",
               lambda d, s: ["classify", "predict", armed(d / "m.pt", d / "pwned", "torch"), "abc"]),
          Case("pickle", "armed pickle (torch) as best.safetensors, sample the folder",
               lambda d, s: ["sample", armed(d / "run" / "best.safetensors", d / "pwned", "torch").parent])]
    for where in ("length", "header", "data"):
        c.append(Case("truncated", f"checkpoint cut inside the {where}",
                      lambda d, s, w=where: ["sample", _file("cut.safetensors", _cut(s["raw"], w))(d)]))
    c.append(Case("truncated", "last.safetensors cut inside the data, --resume",
                  _resume(lambda d, s: (d / "run" / "last.safetensors").write_bytes(_cut(s["raw"], "data")))))
    c += [
        Case("metadata", "foreign safetensors (a tensor 'weight' only)",
             lambda d, s: ["sample", _save(d / "w.safetensors", s, {}, {"weight": torch.zeros(3)})]),
        Case("metadata", "another project's metadata", _sample_meta(format="pt", version=None, config=None)),
        Case("metadata", "version 2", _sample_meta(version="2")),
        Case("metadata", "no config", _sample_meta(config=None)),
        Case("metadata", "config not JSON", _sample_meta(config="{'model':")),
        Case("metadata", "config nested 50,000 deep", _sample_meta(config="[" * 50_000 + "]" * 50_000)),
        Case("metadata", "train_state an integer of 5,000 digits", _sample_meta(train_state="1" * 5_000)),
        Case("metadata", "config with an unknown key", _sample_config(heads=8)),
        Case("metadata", "config hidden_size -3", _sample_config(hidden_size=-3)),
        Case("metadata", "config asking for 2 x 200,000 LSTM units",
             _sample_config(cell="lstm", hidden_size=200_000, num_layers=2)),
        Case("metadata", "config asking for 10^9 layers", _sample_config(num_layers=10**9)),
        Case("metadata", "unknown kind", _sample_meta(kind="transformer")),
        Case("metadata", "optimiser state malformed", _sample_meta(optimizer='{"param_groups": 1}')),
        Case("metadata", "NaN in the weights", lambda d, s: ["sample", _save(
            d / "nan.safetensors", s, tensors={**s["tensors"],
                                               "model.decoder.bias": torch.full_like(s["tensors"]["model.decoder.bias"],
                                                                                     float("nan"))})]),
        Case("metadata", "version 2 in last.safetensors, --resume", _resume(_last(version="2"))),
        Case("metadata", "unknown config key in last.safetensors, --resume",
             _resume(lambda d, s: _last(config=_config(s, "train", warp=9))(d, s))),
    ]
    for name, change in (("one symbol more than the embedding rows", lambda v: [*v, "Q"]),
                         ("one symbol fewer", lambda v: v[:-1]), ("a lone surrogate", lambda v: [*v[:-1], "\ud800"]),
                         ("no symbols", lambda v: []), ("duplicate symbols", lambda v: [*v[:-1], v[0]])):
        c.append(Case("vocabulary", f"embedded vocabulary: {name}",
                      lambda d, s, ch=change: _sample_meta(vocab=_vocab(s, ch))(d, s)))
    c += [Case("vocabulary", "vocab.json tampered (the checkpoint carries its own)",
               lambda d, s: ((d / "run" / "vocab.json").write_text('{"symbols": ["X"]}'),
                             ["sample", d / "run", "--length", "20", "--seed", "1"])[1], expect="accept"),
          Case("vocabulary", "config.json garbage (the checkpoint carries its own)",
               lambda d, s: ((d / "run" / "config.json").write_text('{"version": 99'),
                             ["eval", d / "run"])[1], expect="accept")]
    for name, (content, expect, known) in CORPORA.items():
        c.append(Case("corpus", f"eval --data: {name}",
                      lambda d, s, b=content: ["eval", d / "run", "--data", _file("corpus.txt", b)(d)], expect, known))
        if name in ("binary (an ELF header)", "UTF-8, then latin-1"):
            c.append(Case("corpus", f"train --data: {name}",
                          lambda d, s, b=content: ["train", "--data", _file("corpus.txt", b)(d), "--max-steps", "1",
                                                   "--out", d / "new"]))
    c += [
        Case("corpus", "eval --data: a folder", lambda d, s: ["eval", d / "run", "--data", d / "run"]),
        Case("corpus", "eval --data: no such file", lambda d, s: ["eval", d / "run", "--data", d / "nope.txt"]),
        Case("corpus", "eval --data: truncated gzip",
             lambda d, s: ["eval", d / "run", "--data", _file("c.txt.gz", GOOD_GZ[: len(GOOD_GZ) // 2])(d)]),
        Case("corpus", "eval --data: damaged gzip stream",
             lambda d, s: ["eval", d / "run", "--data", _file("c.txt.gz", DAMAGED_GZ)(d)]),
        Case("corpus", "train --out: an existing file",
             lambda d, s: ["train", "--data", s["corpus"], "--max-steps", "1", "--out",
                           _file("notes.txt", b"mine")(d)]),
        Case("labelled", "classify train: JSONL nested 50,000 deep",
             _classify("d.jsonl", b'{"text": "a", "label": "x"}\n' + b"[" * 50_000)),
        Case("labelled", "classify train: JSONL vector of a 400-digit integer",
             _classify("d.jsonl", b'{"text": [[' + b"9" * 400 + b']], "label": "x"}\n')),
        Case("labelled", "classify train: JSONL text with a lone surrogate",
             _classify("d.jsonl", b'{"text": "\\ud800", "label": "x"}\n{"text": "b", "label": "y"}\n')),
        Case("labelled", "classify train: CSV with an unclosed quote over 200 kB",
             _classify("d.csv", b'text,label\n"' + b"a" * 200_000 + b",x\nb,y\n")),
        Case("prime", "a byte that is not UTF-8 in --prime",
             lambda d, s: ["sample", d / "run", "--prime", os.fsdecode(b"ab\xffc"), "--length", "3"]),
        Case("prime", "characters the model never saw in --prime",
             lambda d, s: ["sample", d / "run", "--prime", "Zeus \u2603", "--length", "3"]),
    ]
    c += [
        Case("resume", "train_state step a string", _resume(lambda d, s: _last(train_state=_state(s, step="3"))(d, s))),
        Case("resume", "train_state batch -3", _resume(lambda d, s: _last(train_state=_state(s, batch=-3))(d, s))),
        Case("resume", "Adam betas of length 1",
             _resume(lambda d, s: _last(optimizer=_group_values(s, betas=[0.9]))(d, s))),
        Case("resume", "Adam moment of the wrong shape", _resume(_last_tensor("optim.0.exp_avg", torch.zeros(3)))),
        Case("resume", "carried state of the wrong width", _resume(_last_tensor("carry.0.0", torch.zeros(4, 3)))),
        Case("resume", "carried state for 2 streams, batch of 4", _resume(_last_tensor("carry.0.0", torch.zeros(2, 8)))),
        Case("resume", "random generator state malformed", _resume(_last_tensor("rng.torch", torch.zeros(3)))),
        Case("resume", "split.json not UTF-8",
             _resume(lambda d, s: (d / "run" / "split.json").write_bytes(b"\xff\xfe{}"))),
        Case("resume", "metrics.jsonl not UTF-8 (the damaged line is skipped, the run resumes)",
             _resume(lambda d, s: (d / "run" / "metrics.jsonl").write_bytes(b'{"step": 1}\n\xff\n')),
             expect="resume"),
        Case("resume", "last.safetensors is a folder",
             _resume(lambda d, s: ((d / "run" / "last.safetensors").unlink(),
                                   (d / "run" / "last.safetensors").mkdir()))),
    ]
    c += options_and_outputs()
    return c


def _foreign_folder(d: Path) -> Path:
    """A folder of another program's files with a run's file names."""
    (d / "proj").mkdir()
    (d / "proj" / "config.json").write_text('{"my": 1}')
    (d / "proj" / "split.json").write_text("precious")
    return d / "proj"


def _corpus_folder(d: Path, s: dict[str, Any]) -> Path:
    (d / "texts").mkdir()
    shutil.copy(s["corpus"], d / "texts" / "a.txt")
    return d / "texts"


def options_and_outputs() -> list[Case]:
    """Options no run can use and outputs that would destroy a file."""
    train = ["train", "--max-steps", "2", "--hidden-size", "8", "--quiet"]
    return [
        Case("options", "--time-budget nan (passed every `< 0` check, ran forever)",
             lambda d, s: ["train", "--data", s["corpus"], "--time-budget", "nan", "--out", d / "new"]),
        Case("options", "--max-epochs inf", lambda d, s: ["train", "--data", s["corpus"], "--max-epochs", "inf",
                                                           "--out", d / "new"]),
        Case("options", "--clip-norm nan (turned clipping off)",
             lambda d, s: [*train, "--data", s["corpus"], "--clip-norm", "nan", "--out", d / "new"]),
        Case("options", "--weight-decay inf", lambda d, s: [*train, "--data", s["corpus"], "--weight-decay", "inf",
                                                             "--out", d / "new"]),
        Case("options", "--seed 10^20 to train", lambda d, s: [*train, "--data", s["corpus"], "--seed", "1" + "0" * 20,
                                                               "--out", d / "new"]),
        Case("options", "--seed -1 to sample", lambda d, s: ["sample", d / "run", "--seed=-1", "--length", "5"]),
        Case("options", "--seed -1 to exposure", lambda d, s: ["exposure", d / "run", "--seed=-1"]),
        Case("options", "--length 10^20 to sample", lambda d, s: ["sample", d / "run", "--length", "1" + "0" * 20]),
        Case("options", "--beam-width 10^12", lambda d, s: ["sample", d / "run", "--strategy", "beam",
                                                            "--beam-width", "1" + "0" * 12, "--length", "5"]),
        Case("options", "--device meta", lambda d, s: ["sample", d / "run", "--device", "meta", "--length", "5"]),
        Case("options", "--hidden-size 10^8 (100 GB of weights)",
             lambda d, s: [*train, "--data", s["corpus"], "--hidden-size", "100000000", "--num-layers", "1",
                           "--out", d / "new"]),
        Case("options", "gradients --checkpoint with --batch-size 0",
             lambda d, s: ["gradients", "--checkpoint", d / "run", "--cells", "--batch-size", "0"]),
        Case("outputs", "train --out: a folder of another program's config.json and split.json",
             lambda d, s: [*train, "--data", s["corpus"], "--out", _foreign_folder(d)]),
        Case("outputs", "train --out ''", lambda d, s: [*train, "--data", s["corpus"], "--out", ""]),
        Case("outputs", "train --out inside the corpus folder",
             lambda d, s: [*train, "--data", _corpus_folder(d, s), "--out", d / "texts" / "runs" / "x"]),
        Case("outputs", "ngram fit --out the corpus itself",
             lambda d, s: ["ngram", "fit", "--data", _file("c.txt", s["corpus"].read_bytes())(d), "--order", "2",
                           "--out", d / "c.txt"]),
        Case("outputs", "ngram fit --out in a missing folder",
             lambda d, s: ["ngram", "fit", "--data", s["corpus"], "--order", "2", "--out", d / "no" / "m.npz"]),
        Case("outputs", "gradients --plot in a missing folder",
             lambda d, s: ["gradients", "--cells", "elman", "--length", "5", "--plot", d / "no" / "g.png"]),
        Case("outputs", "gradients --plot at a folder",
             lambda d, s: ["gradients", "--cells", "elman", "--length", "5", "--plot", d]),
    ]


def printable(s: str) -> str:
    """``s`` with lone surrogates (a non-UTF-8 byte given on the command line) as ``\\udcff``."""
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def snapshot(root: Path) -> dict[str, Any]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def run_case(i: int, case: Case, work: Path, shared: dict[str, Any], timeout: float) -> dict[str, Any]:
    d = work / f"case{i:02d}"
    shutil.copytree(shared["run"], d / "run")
    argv = [str(a) for a in case.make(d, shared)]
    watched = [d, shared["run"].parent]
    before = [snapshot(w) for w in watched]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "rnnlab", *argv], cwd=d, env=env, capture_output=True,
                           timeout=timeout)
        rc: int | str = p.returncode
        err = p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    secs = time.perf_counter() - t
    after = [snapshot(w) for w in watched]
    changed = sorted({k for b, a in zip(before, after) for k in set(b) | set(a) if b.get(k) != a.get(k)}
                     - {"pwned"})  # the marker is reported as 'executed', not as a change
    executed = (d / "pwned").exists()
    lines = err.strip().splitlines()
    traceback = "Traceback (most recent call last)" in err
    if case.expect == "refuse":
        clean = (isinstance(rc, int) and rc != 0 and len(lines) == 1 and lines[0].startswith("rnnlab: error: ")
                 and not traceback and not executed and not changed)
    elif case.expect == "resume":  # a damaged but recoverable run folder: the run goes on (and writes, as runs do)
        clean = rc == 0 and not traceback and not executed
    else:
        clean = rc == 0 and not traceback and not executed and not changed
    message = ((lines[-1] if traceback else lines[0]) if lines else "").replace(str(d), ".")
    base = str(shared["run"].parent)
    shown = [printable(a).replace(str(d), ".").replace(base, "..")[:60] for a in argv]
    command = "rnnlab " + " ".join(shlex.quote(a) for a in shown)
    return {"group": case.group, "case": case.name, "command": command, "expect": case.expect, "exit": rc,
            "message": printable(message.removeprefix("rnnlab: error: "))[:240], "stderr_lines": len(lines),
            "traceback": traceback, "executed": executed, "changed": changed, "clean": clean,
            "known_fault": case.known, "seconds": round(secs, 2)}


def hostile(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_hostile-") as tmp:
        work = Path(tmp)
        run = tiny_run(work / "base")
        with safe_open(str(run / "best.safetensors"), framework="pt") as f:
            meta = dict(f.metadata())
        shared = {"run": run, "meta": meta, "tensors": load_file(run / "best.safetensors"),
                  "raw": (run / "best.safetensors").read_bytes(), "corpus": work / "base" / "corpus.txt"}
        cases = [c for c in catalogue() if re.search(args.only, f"{c.group}: {c.name}")]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(lambda ic: run_case(ic[0], ic[1], work, shared, args.timeout), enumerate(cases)))
    for r in rows:
        print(json.dumps({k: r[k] for k in ("case", "exit", "clean", "message")}), flush=True)
    known = [r for r in rows if r["known_fault"]]
    return {"rows": rows, "cases": len(rows), "clean": sum(r["clean"] for r in rows),
            "refusals": sum(r["expect"] == "refuse" for r in rows),
            "refused_cleanly": sum(r["clean"] and r["expect"] == "refuse" for r in rows),
            "known_faults": len(known), "known_faults_clean": sum(r["clean"] for r in known),
            "unexpected": [r["case"] for r in rows if not r["clean"] and not r["known_fault"]],
            "tracebacks": sum(r["traceback"] for r in rows), "executed": sum(r["executed"] for r in rows),
            "changed": sum(bool(r["changed"]) for r in rows)}


# fuzzing --------------------------------------------------------------------------------------------

STATS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")


# the checkpoint properties take about as long as all the others: two processes, one each
FUZZ_GROUPS = ["checkpoint or jsonio", "not (checkpoint or jsonio)"]


def _pytest(expr: str, args: argparse.Namespace) -> tuple[str, int | str]:
    env = {**os.environ, "RNNLAB_FUZZ_EXAMPLES": str(args.examples), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider", "-k", expr,
           "--hypothesis-show-statistics", "-rA"]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.fuzz_timeout)
        return p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out, "timeout"


def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(FUZZ_GROUPS)) as pool:
        runs = list(pool.map(lambda e: _pytest(e, args), FUZZ_GROUPS))
    secs = time.perf_counter() - t
    props: dict[str, dict[str, Any]] = {}

    def prop(name: str) -> dict[str, Any]:
        return props.setdefault(name, {"passing": 0, "failing": 0, "invalid": 0, "seconds": 0.0})

    for out, _ in runs:
        name = None
        for line in out.splitlines():
            m = re.match(r"tests/test_fuzz\.py::(\S.*):\s*$", line)  # a statistics block starts
            if m:
                name = m.group(1)
                prop(name)
                continue
            m = re.search(r"during \w+ phase \(([\d.]+) seconds\)", line)
            if m and name:
                props[name]["seconds"] += float(m.group(1))
            m = STATS.search(line)
            if m and name:
                for k, v in zip(("passing", "failing", "invalid"), m.groups()):
                    props[name][k] += int(v)
            m = re.match(r"(PASSED|FAILED|XFAIL|XPASS|ERROR) tests/test_fuzz\.py::([^\s\[]+(?:\[[^\]]*\])?)", line)
            if m:
                prop(m.group(2))["outcome"] = m.group(1)
    summaries = [out.strip().splitlines()[-1] if out.strip() else f"(no output, exit {rc})" for out, rc in runs]
    for s_ in summaries:
        print(s_, flush=True)
    return {"examples_per_property": args.examples, "exit": [rc for _, rc in runs], "seconds": round(secs, 1),
            "properties": props, "examples_run": sum(p["passing"] + p["failing"] for p in props.values()),
            "summary": "; ".join(summaries)}


# report ----------------------------------------------------------------------------------------------

def _cell(x: Any) -> str:
    return printable(str(x)).replace("|", "\\|").replace("\n", " ")


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    md = [f"# Hostile inputs and fuzzing\n\n{c['date']} on {c['machine']}, load average "
          f"{', '.join(f'{x:.2f}' for x in c['load_average'])}; torch {c['torch']}, hypothesis {c['hypothesis']}\n"]
    if "hostile" in res:
        h = res["hostile"]
        md += [f"## The catalogue, through `python -m rnnlab`\n\n{h['cases']} cases; {h['clean']} handled cleanly "
               f"({h['refused_cleanly']} of {h['refusals']} refusals: one line, non-zero exit, nothing run or "
               f"changed); {h['known_faults']} case(s) meet faults in files owned elsewhere "
               f"({h['known_faults_clean']} of them already clean); "
               f"unexpected: {', '.join(h['unexpected']) or 'none'}. "
               f"Tracebacks {h['tracebacks']}, pickles executed {h['executed']}, cases that changed a file "
               f"{h['changed']}.\n",
               "| group | input | command | exit | message | traceback | executed | changed | clean |",
               "|---|---|---|---:|---|---|---|---|---|"]
        for r in h["rows"]:
            clean = "yes" if r["clean"] else f"**no** ({r['known_fault']})" if r["known_fault"] else "**NO**"
            md.append(f"| {r['group']} | {_cell(r['case'])} | `{_cell(r['command'])}` | {r['exit']} | "
                      f"{_cell(r['message'][:160])} | {'yes' if r['traceback'] else 'no'} | "
                      f"{'YES' if r['executed'] else 'no'} | {_cell(', '.join(r['changed'])) or 'no'} | {clean} |")
    if "fuzz" in res:
        f = res["fuzz"]
        md += [f"\n## Fuzzing: tests/test_fuzz.py, RNNLAB_FUZZ_EXAMPLES={f['examples_per_property']}\n\n"
               f"{f['examples_run']:,} examples run in {f['seconds']:.0f} s; pytest: {_cell(f['summary'])}\n",
               "| property | outcome | examples run | invalid | seconds |", "|---|---|---:|---:|---:|"]
        for name, p in f["properties"].items():
            md.append(f"| {_cell(name)} | {p.get('outcome', '?')} | {p['passing'] + p['failing']:,} | "
                      f"{p['invalid']:,} | {p['seconds']:.1f} |")
        md.append("\nAn XFAIL is a property that finds a fault in a file owned elsewhere (its reason names the fix); "
                  "it stops at its first failing example.")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="catalogue processes at once (default: 2)")
    ap.add_argument("--only", default="", help="catalogue cases whose 'group: name' matches this regex")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one command may take (default: 120)")
    ap.add_argument("--examples", type=int, default=2000, help="fuzz examples per property (default: 2000)")
    ap.add_argument("--fuzz-timeout", type=float, default=420.0, help="seconds for all properties (default: 420)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hostile.json")
    args = ap.parse_args()
    import hypothesis

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    res: dict[str, Any] = {"config": {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine,
                                      "load_average": os.getloadavg(), "torch": torch.__version__,
                                      "hypothesis": hypothesis.__version__, "python": platform.python_version(),
                                      "args": vars(args)}}
    print(json.dumps(res["config"], default=str), flush=True)
    if 1 in args.parts:
        res["hostile"] = hostile(args)
    if 2 in args.parts:
        res["fuzz"] = fuzz(args)
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
