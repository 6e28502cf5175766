"""Shared fixtures: small seeded corpora in tmp_path; the shared datasets when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TEXT = (
    "the cat sat on the mat.\nthe dog sat on the log.\n"
    "a cat and a dog met on a mat by a log.\n"
) * 40


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def shared(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test (as on a user's machine without it)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared dataset {p} not present")
    return p
