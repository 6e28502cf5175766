"""A corpus larger than memory: chunked reading, the token file, and training through a memory map."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from rnnlab.data.corpus import read_text, sha256
from rnnlab.data.tokens import AUTO_BYTES, TOKENS, encode_to_file, map_corpus, scan_text, wants_mmap
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError
from rnnlab.train import train


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=300), chunk=st.integers(1, 9), bom=st.booleans())
def test_chunked_reading_equals_reading_whole(tmp_path_factory, text, chunk, bom):
    """Chunks cut multi-byte characters anywhere: the ids and checksum are those of the whole text."""
    p = tmp_path_factory.mktemp("t") / "c.txt"
    p.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8", "surrogatepass"))
    try:
        whole = read_text(p)
    except DataError as e:
        with pytest.raises(DataError) as got:
            scan_text(p, chunk_bytes=chunk)
        assert str(got.value).split(" (")[0] == str(e).split(" (")[0]  # the same complaint
        return
    s = scan_text(p, chunk_bytes=chunk)
    assert (s.chars, s.sha256, s.symbols) == (len(whole), sha256(whole), sorted(set(whole)))
    v = Vocab(s.symbols)
    ids = encode_to_file(p, v, p.with_suffix(".bin"), s.chars, chunk_bytes=chunk)
    assert np.array_equal(np.asarray(ids, dtype=np.int64), v.encode(whole))


@pytest.mark.parametrize("raw, says", [
    (b"", "is empty"), (b"\xef\xbb\xbf", "is empty"), (b"abc\x00def", "binary (a NUL byte at offset 3)"),
    (b"caf\xc3\xa9 ok \xe9t\xe9", "byte 0xe9 at offset 9"), ("ça va ".encode() * 3 + b"\xff", "offset 21")])
def test_bad_files_get_the_same_clear_errors(tmp_path, raw, says):
    p = tmp_path / "c.txt"
    p.write_bytes(raw)
    with pytest.raises(DataError, match=".*".join(map(__import__("re").escape, says.split("*")))):
        scan_text(p, chunk_bytes=2)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        scan_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a folder"):
        scan_text(tmp_path)


def test_when_the_memory_map_is_used(tmp_path):
    small = tmp_path / "s.txt"
    small.write_text("abc " * 100)
    assert not wants_mmap(DataConfig(data=str(small)))
    assert wants_mmap(DataConfig(data=str(small), mmap="yes"))
    big = tmp_path / "b.txt"
    with open(big, "wb") as f:  # sparse: no time spent writing
        f.truncate(AUTO_BYTES)
    assert wants_mmap(DataConfig(data=str(big)))
    assert not wants_mmap(DataConfig(data=str(big), mmap="no"))
    with pytest.raises(ConfigError, match="--level char"):
        wants_mmap(DataConfig(data=str(small), mmap="yes", level="word"))
    with pytest.raises(ConfigError, match="single --data file"):
        wants_mmap(DataConfig(data=str(tmp_path), mmap="yes"))


def _cfg(data: Path, out: Path, mmap: str, steps: int = 12, resume: bool = False) -> RunConfig:
    return RunConfig(data=DataConfig(data=str(data), mmap=mmap), optim=OptimConfig(lr_schedule="constant"),
                     model=ModelConfig(cell="gru", hidden_size=24, num_layers=1, dropout=0.0),
                     train=TrainConfig(batch_size=4, seq_len=16, max_steps=steps, eval_interval=5, seed=1,
                                       out=str(out), resume=resume))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rnd = random.Random(0)
    p = tmp_path_factory.mktemp("c") / "c.txt"
    p.write_text("".join(rnd.choice("abcdé fgh\n") for _ in range(20_000)), encoding="utf-8")
    return p


def test_training_through_the_memory_map_equals_training_in_memory(corpus, tmp_path):
    a = train(_cfg(corpus, tmp_path / "mem", "no"), progress=False)
    b = train(_cfg(corpus, tmp_path / "map", "yes"), progress=False)
    assert (tmp_path / "map" / TOKENS).stat().st_size == len(read_text(corpus))  # one byte a character
    assert not (tmp_path / "mem" / TOKENS).exists()
    wa, wb = load_file(str(tmp_path / "mem" / "last.safetensors")), load_file(str(tmp_path / "map" / "last.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["val_bpc"] == b["val_bpc"]
    ra, rb = (json.loads((tmp_path / r / "split.json").read_text()) for r in ("mem", "map"))
    assert ra["sha256"] == rb["sha256"] and ra["train_chars"] == rb["train_chars"]


def test_resume_reuses_the_token_file_and_refuses_a_changed_corpus(corpus, tmp_path):
    run = tmp_path / "run"
    text = corpus.read_text(encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text(text, encoding="utf-8")
    train(_cfg(corpus, run, "yes", steps=6), progress=False)
    tok = run / TOKENS
    before = tok.stat().st_mtime_ns
    time.sleep(0.01)
    train(_cfg(corpus, run, "yes", steps=12, resume=True), progress=False)
    assert tok.stat().st_mtime_ns == before  # not re-encoded
    corpus.write_text(text.replace("a", "b", 1), encoding="utf-8")
    last = (run / "last.safetensors").read_bytes()
    with pytest.raises(DataError, match="has changed since the run started"):
        train(_cfg(corpus, run, "yes", steps=20, resume=True), progress=False)
    assert tok.stat().st_mtime_ns == before and (run / "last.safetensors").read_bytes() == last


def test_a_damaged_token_file_is_rebuilt(corpus, tmp_path):
    cfg = DataConfig(data=str(corpus), mmap="yes")
    first = map_corpus(cfg, tmp_path)
    ref = np.array(first.train)
    del first
    (tmp_path / TOKENS).write_bytes(b"\x07" * 10)  # truncated
    again = map_corpus(cfg, tmp_path)
    assert np.array_equal(np.asarray(again.train), ref)


@pytest.mark.parametrize("damage", ["zero tail", "one byte", "no description", "description of another file"])
def test_a_partly_written_token_file_of_the_right_size_is_rebuilt(corpus, tmp_path, damage):
    """A token file whose tail never reached the disk (zeros, the size right), one changed byte, or a token
    file without its description (killed between the two writes) is not used: it is written again."""
    cfg = DataConfig(data=str(corpus), mmap="yes")
    first = map_corpus(cfg, tmp_path)
    ref = np.concatenate([np.array(first.train), np.array(first.val)])
    del first
    tok, meta = tmp_path / TOKENS, tmp_path / "tokens.json"
    data = bytearray(tok.read_bytes())
    if damage == "zero tail":
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    elif damage == "one byte":
        data[123] ^= 1
    tok.write_bytes(bytes(data))
    if damage == "no description":
        meta.unlink()
    elif damage == "description of another file":
        m = json.loads(meta.read_text())
        meta.write_text(json.dumps({**m, "ids_sha256": "0" * 64}))
    again = map_corpus(cfg, tmp_path)
    assert np.array_equal(np.concatenate([np.asarray(again.train), np.asarray(again.val)]), ref)
    assert tok.read_bytes() == ref.astype(np.uint8).tobytes()
    assert json.loads(meta.read_text())["ids_sha256"] != "0" * 64


def test_a_run_whose_token_file_was_cut_short_resumes_to_the_uninterrupted_weights(corpus, tmp_path):
    whole = tmp_path / "whole"
    train(_cfg(corpus, whole, "yes", steps=12), progress=False)
    run = tmp_path / "run"
    train(_cfg(corpus, run, "yes", steps=6), progress=False)
    data = (run / TOKENS).read_bytes()
    (run / TOKENS).write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    train(_cfg(corpus, run, "yes", steps=12, resume=True), progress=False)
    assert (run / TOKENS).read_bytes() == data
    wa, wb = load_file(str(whole / "last.safetensors")), load_file(str(run / "last.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _peak_anon_mb(cmd: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """Run ``cmd``; sample its anonymous resident memory (heap, not the page cache of mapped files)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    _, err = p.communicate()
    return p.returncode, peak / 1024, err


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to sample memory")
def test_a_big_corpus_trains_in_bounded_memory(tmp_path):
    """150 MB of text: in memory it would need ~40 bytes a character (6 GB); mapped, the process
    stays near its size on a tiny corpus."""
    rnd = random.Random(0)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(1, 9))) for _ in range(3000)]
    block = (" ".join(rnd.choice(words) for _ in range(100_000)) + "\n").encode()
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        for _ in range(150_000_000 // len(block) + 1):
            f.write(block)
    size = big.stat().st_size
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rc, peak, err = _peak_anon_mb(
        [sys.executable, "-m", "rnnlab", "train", "--data", str(big), "--hidden-size", "16", "--num-layers", "1",
         "--batch-size", "8", "--seq-len", "32", "--max-steps", "10", "--val-fraction", "0.0002",
         "--eval-interval", "1000", "--threads", "1", "--quiet", "--out", str(tmp_path / "run")], env)
    assert rc == 0, err[-2000:]
    assert (tmp_path / "run" / TOKENS).stat().st_size == size  # auto chose the memory map (ASCII: a byte a char)
    assert peak < 600, f"peak anonymous memory {peak:.0f} MB for a {size / 1e6:.0f} MB corpus"
