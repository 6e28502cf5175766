"""One registry of checkpoint kinds: every reader refuses another kind's file by its tag, naming the command that
reads it; every kind writes through one writer whose optimiser state comes back as the optimiser gave it; and a
kind registered here alone is read by the loaders and served, with no other file naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from rnnlab.checkpoint import (
    CLASSIFIER,
    KINDS,
    LANGUAGE_MODEL,
    CheckpointKind,
    load_checkpoint,
    load_model,
    read_checkpoint,
    register_kind,
    save_checkpoint,
    write_checkpoint,
)
from rnnlab.classify import load_classifier
from rnnlab.config import ClassifyRunConfig, ModelConfig, RunConfig, SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.errors import CheckpointError
from rnnlab.nn.classifier import build_classifier
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.sampling import generate
from rnnlab.serve import build_app
from rnnlab.task_train import TASK, TaskRunConfig, build_task_model, load_task_checkpoint, save_task_checkpoint

VOCAB = Vocab(list("abc d"))
MODEL = ModelConfig(cell="gru", hidden_size=6, num_layers=1, dropout=0.0, embedding_size=3)


def _files(tmp_path: Path) -> dict[str, Path]:
    """One small file of each built-in kind."""
    lm = tmp_path / "lm.safetensors"
    save_checkpoint(lm, RNNLanguageModel(MODEL, len(VOCAB)), RunConfig(model=MODEL), VOCAB)
    clf = tmp_path / "clf.safetensors"
    ccfg = ClassifyRunConfig(model=MODEL)
    save_checkpoint(clf, build_classifier(ccfg, 2, vocab_size=len(VOCAB)), ccfg, VOCAB, extra={"labels": ["no", "yes"], "feature_size": 0})
    task = tmp_path / "task.safetensors"
    cfg = TaskRunConfig()
    cfg.task.length, cfg.train.max_steps = 5, 1
    save_task_checkpoint(task, build_task_model(cfg), cfg, cfg.task.make())
    return {LANGUAGE_MODEL: lm, CLASSIFIER: clf, TASK: task}


def test_the_built_in_kinds_are_registered_with_their_readers():
    assert {LANGUAGE_MODEL, CLASSIFIER, TASK} <= set(KINDS)
    assert KINDS[LANGUAGE_MODEL].config_type is RunConfig and KINDS[CLASSIFIER].config_type is ClassifyRunConfig
    assert KINDS[TASK].config_type is None and KINDS[TASK].serve_as is None  # read by rnnlab tasks alone
    assert KINDS[TASK].load is load_task_checkpoint
    with pytest.raises(ValueError, match="registered already"):
        register_kind(CheckpointKind(TASK, "another", "nothing", load_checkpoint))


def test_every_reader_reads_its_kind_and_refuses_the_others_naming_their_command(tmp_path):
    files = _files(tmp_path)
    readers = {LANGUAGE_MODEL: load_model, CLASSIFIER: load_classifier, TASK: load_task_checkpoint}
    for kind, path in files.items():
        assert KINDS[kind].load(path) is not None
        for reader_kind, reader in readers.items():
            if reader_kind == kind:
                reader(path)
                continue
            with pytest.raises(CheckpointError) as e:
                reader(path)
            held, wanted = str(e.value).split(", not ", 1)
            assert held.endswith(f"holds {KINDS[kind].description}") and KINDS[reader_kind].description in wanted
            assert wanted.endswith(f"; it is read by {KINDS[kind].read_by}")


def test_the_writer_stores_what_each_kind_reads_back(tmp_path):
    model = RNNLanguageModel(MODEL, len(VOCAB))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randint(0, len(VOCAB), (2, 4)))[0].sum().backward()
    opt.step()
    path = tmp_path / "lm.safetensors"
    rng = {"torch": torch.get_rng_state()}
    save_checkpoint(path, model, RunConfig(model=MODEL), VOCAB, {"step": 1}, opt, rng=rng)
    stored = read_checkpoint(path, (LANGUAGE_MODEL,))
    assert stored.kind == LANGUAGE_MODEL and stored.json("train_state") == {"step": 1}
    assert stored.json("feeding", None) is None
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.rng()["torch"], rng["torch"])
    expected, got = opt.state_dict(), ckpt.optimizer_state()  # oracle: the optimiser's own state
    assert got["param_groups"] == expected["param_groups"]
    for idx, st in expected["state"].items():
        for key, value in st.items():
            assert torch.equal(torch.as_tensor(got["state"][idx][key]), torch.as_tensor(value)), (idx, key)


@pytest.fixture
def copied_kind():
    kind = register_kind(CheckpointKind("copied-lm", "a copied language model", "this test", load_checkpoint,
                                        RunConfig, serve_as=LANGUAGE_MODEL))
    try:
        yield kind
    finally:
        del KINDS["copied-lm"]


def test_a_kind_registered_alone_is_loaded_and_served(copied_kind, tmp_path):
    torch.manual_seed(0)
    model = RNNLanguageModel(MODEL, len(VOCAB)).eval()
    path = tmp_path / "copy.safetensors"
    write_checkpoint(path, copied_kind.tag, model, {"config": RunConfig(model=MODEL).to_dict(),
                                                    "vocab": VOCAB.to_dict(), "train_state": {}, "extra": {}})
    ckpt = load_checkpoint(path)
    assert ckpt.kind == "copied-lm"
    x = torch.randint(0, len(VOCAB), (2, 5))
    torch.testing.assert_close(ckpt.build_model().eval()(x)[0], model(x)[0], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="holds a copied language model, not a language model; it is read "
                                              "by this test"):
        load_model(path)
    client = TestClient(build_app([str(path)]))
    models = client.get("/api/models").json()
    assert [(m["name"], m["kind"]) for m in models] == [("copy", LANGUAGE_MODEL)]
    events = [json.loads(line) for line in client.post(
        "/api/generate", json={"prime": "ab", "length": 12, "strategy": "argmax"}).text.splitlines()]
    expected = generate(ckpt.build_model().eval(), VOCAB, SampleConfig(prime="ab", length=12, strategy="argmax"))[0]
    assert events[-1]["text"] == expected


def test_an_unregistered_kind_is_refused_by_every_reader_and_the_server(tmp_path):
    path = tmp_path / "x.safetensors"
    write_checkpoint(path, "transformer", RNNLanguageModel(MODEL, len(VOCAB)), {})
    for reader in (load_checkpoint, load_model, load_task_checkpoint):
        with pytest.raises(CheckpointError, match="unknown kind 'transformer'"):
            reader(path)
    with pytest.raises(CheckpointError, match="'transformer' checkpoint; this server serves language-model"):
        build_app([str(path)])
