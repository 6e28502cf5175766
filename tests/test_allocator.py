"""rnnlab.allocator: freed large blocks are reused, not mapped afresh (fewer page faults per training step)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    from rnnlab.allocator import keep_large_blocks
    print(keep_large_blocks())
    def faults_of_one_buffer():  # allocate 48 MB (above glibc's largest default mmap threshold), write it, free it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(12 << 20)
        t.fill_(1.0)
        del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(min(faults_of_one_buffer() for _ in range(10)))  # the heap may take a few rounds to settle
""")


def _probe(tune: str) -> tuple[bool, int]:
    env = {**os.environ, "RNNLAB_MALLOC_TUNE": tune}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    set_, faults = r.stdout.split()
    return set_ == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_large_buffer_is_reused_without_page_faults():
    """48 MB is 12,288 pages: mapped afresh each time it costs about that many faults; reused, almost none. (The
    best of 10 rounds: in some processes the heap needs a few before the block is reused.)"""
    on, faults_on = _probe("1")
    off, faults_off = _probe("0")
    if not on:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert not off  # RNNLAB_MALLOC_TUNE=0 leaves the allocator alone
    assert faults_off > 10_000  # the default: a fresh mapping, a fault per page
    assert faults_on < 1_000


def test_a_run_sets_it(tmp_path, monkeypatch):
    """start_run, which every training job calls, sets it."""
    from rnnlab.config import TrainConfig
    from rnnlab.loop import start_run

    calls = []
    monkeypatch.setattr("rnnlab.loop.keep_large_blocks", lambda: calls.append(1) or True)
    start_run(TrainConfig(out=str(tmp_path / "run")))
    assert calls == [1]
