"""Checkpoints: round trip, atomic writes, and every hostile or broken file refused without running it."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from rnnlab.checkpoint import atomic_write, load_checkpoint, load_model, save_checkpoint
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.data import Vocab
from rnnlab.errors import CheckpointError
from rnnlab.nn import RNNLanguageModel


def _make(tmp_path, cell="gru"):
    cfg = RunConfig(data=DataConfig(data="x"), model=ModelConfig(cell=cell, hidden_size=6, num_layers=2),
                    train=TrainConfig(max_steps=1))
    vocab = Vocab.from_text("abcdef")
    model = RNNLanguageModel(cfg.model, len(vocab))
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, cfg, vocab, train_state={"step": 3})
    return path, model, cfg, vocab


def test_round_trip_restores_weights_config_and_vocab(tmp_path):
    path, model, cfg, vocab = _make(tmp_path)
    m2, v2, ck = load_model(path)
    assert v2 == vocab and ck.config == cfg and ck.train_state == {"step": 3}
    for (n, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
    assert not m2.training


def test_optimizer_and_carry_round_trip(tmp_path):
    path, model, cfg, vocab = _make(tmp_path, "lstm")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randint(0, 6, (2, 5)))[0].sum().backward()
    opt.step()
    carry = tuple(tuple(torch.randn(2, 6) for _ in range(2)) for _ in range(2))
    rng = torch.get_rng_state()
    save_checkpoint(path, model, cfg, vocab, optimizer=opt, carry=carry, rng={"torch": rng})
    ck = load_checkpoint(path)
    opt2 = torch.optim.Adam(ck.build_model().parameters(), lr=1e-2)
    opt2.load_state_dict(ck.optimizer_state())
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["param_groups"] == sd2["param_groups"] and sd1["state"].keys() == sd2["state"].keys()
    for i, s1 in sd1["state"].items():
        for k in s1:
            assert torch.equal(torch.as_tensor(s1[k]), torch.as_tensor(sd2["state"][i][k])), (i, k)
    assert all(torch.equal(a, b) for la, lb in zip(carry, ck.carry()) for a, b in zip(la, lb))
    assert torch.equal(ck.rng()["torch"], rng)


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, b"old")
    atomic_write(p, b"new contents")
    assert p.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path, model, cfg, vocab = _make(tmp_path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rnnlab.checkpoint.os.fsync", full)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(CheckpointError, match="cannot write .*No space left"):
        save_checkpoint(path, model, cfg, vocab)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary file left behind


def test_an_unwritable_folder_is_a_clear_error(tmp_path):
    path, model, cfg, vocab = _make(tmp_path)
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(tmp_path / "no" / "such" / "dir" / "m.safetensors", model, cfg, vocab)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(p)
    torch.save({"w": torch.zeros(2)}, tmp_path / "zip.pt")
    with pytest.raises(CheckpointError, match="pickle or PyTorch zip"):
        load_checkpoint(tmp_path / "zip.pt")
    assert not marker.exists()


def test_truncated_file_is_refused(tmp_path):
    path, *_ = _make(tmp_path)
    data = path.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


def test_foreign_safetensors_and_wrong_version(tmp_path):
    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not an rnnlab checkpoint"):
        load_checkpoint(p)
    save_file({"w": torch.zeros(2)}, p, metadata={"format": "rnnlab-checkpoint", "version": "99"})
    with pytest.raises(CheckpointError, match="version '99'"):
        load_checkpoint(p)
    save_file({"w": torch.zeros(2)}, p, metadata={"format": "rnnlab-checkpoint", "version": "1"})
    with pytest.raises(CheckpointError, match="lacks 'config'"):
        load_checkpoint(p)
    (tmp_path / "text.safetensors").write_text("hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(tmp_path / "text.safetensors")


def test_weights_that_do_not_match_the_vocabulary_are_refused(tmp_path):
    path, model, cfg, vocab = _make(tmp_path)
    save_checkpoint(path, model, cfg, Vocab.from_text("abcdefgh"))  # 8 symbols, weights for 6
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)


def test_invalid_stored_config_is_refused(tmp_path):
    path, model, cfg, vocab = _make(tmp_path)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    d = cfg.to_dict()
    d["model"]["cell"] = "transformer"
    save_file(tensors, path, metadata={"format": "rnnlab-checkpoint", "version": "1", "config": json.dumps(d),
                                       "vocab": json.dumps(vocab.to_dict())})
    with pytest.raises(CheckpointError, match="config is invalid"):
        load_checkpoint(path)


def test_run_folder_resolution(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_a_header_length_ending_in_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    """The first byte of a safetensors file is the low byte of its header length: any value."""
    path, model, cfg, vocab = _make(tmp_path)
    for pad in range(300):  # grow the metadata until the header length's low byte is 0x80
        save_checkpoint(path, model, cfg, vocab, train_state={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(path).train_state["pad"]


def test_loading_a_model_imports_no_compiler_and_leaves_initialisers_alone(tmp_path):
    """The shape check on the meta device fills nothing: torch's meta normal_ would import torch._dynamo (seconds
    on a first load); the model still gets the file's weights, and initialisers outside the check still work."""
    import subprocess
    import sys

    path, model, cfg, vocab = _make(tmp_path)
    save_checkpoint(path, model, cfg, vocab)
    code = ("import sys, torch; from rnnlab.checkpoint import load_model; "
            f"m, _, _ = load_model({str(path)!r}); "
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'; "
            "x = torch.nn.init.normal_(torch.zeros(1000)); assert x.std() > 0.5; "
            "print(float(m.decoder.weight.detach().sum()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout) == pytest.approx(float(model.decoder.weight.detach().sum()), abs=1e-6)
