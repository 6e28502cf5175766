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


@pytest.fixture(autouse=True)
def _allocator_flag_per_test(monkeypatch):
    """A run started earlier (rnnlab.loop.start_run, in a test or a module-scoped fixture) sets rnnlab.allocator for
    the process, which moves small LSTMs from the C++ kernel to nn.LSTM; each test starts with the flag unset,
    whatever ran before, and sets it only by starting a run itself."""
    from rnnlab import allocator

    monkeypatch.setattr(allocator, "_set", False)


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


NAME_STEMS = ["ivan", "petr", "boris", "oleg", "igor", "pavel", "yuri", "gleb", "lev", "roman", "ilya", "mark"]
NAME_SUFFIXES = {"Russian": "ov", "Spanish": "ez", "Italian": "ini"}


def tiny_names_classifier(folder: Path, steps: int = 20) -> Path:
    """A real classifier checkpoint in a few seconds: a 12-unit bidirectional GRU trained ``steps``
    steps on three classes of names told apart by their endings (-ov, -ez, -ini). Returns the
    run folder (``folder / "names"``); the data lie in ``folder / "names-data"``."""
    from rnnlab.classify import train_classifier
    from rnnlab.config import ClassifyRunConfig, ModelConfig

    data = folder / "names-data"
    data.mkdir(parents=True)
    for label, suffix in NAME_SUFFIXES.items():
        (data / f"{label}.txt").write_text("\n".join(s + suffix for s in NAME_STEMS) + "\n", encoding="utf-8")
    cfg = ClassifyRunConfig()
    cfg.data.data = str(data)
    cfg.data.val_fraction, cfg.data.test_fraction = 0.2, 0.2
    cfg.model = ModelConfig(cell="gru", hidden_size=12, num_layers=1, dropout=0.0, embedding_size=8)
    cfg.optim.lr = 0.02
    cfg.train.batch_size, cfg.train.max_steps, cfg.train.eval_interval = 8, steps, steps
    cfg.train.threads = 1  # tiny matrices: one thread is faster on a shared machine
    cfg.train.out = str(folder / "names")
    threads = torch.get_num_threads()
    try:
        train_classifier(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)  # train_classifier set it for the whole process
    return folder / "names"
