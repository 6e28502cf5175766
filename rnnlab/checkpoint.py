"""Checkpoints that cannot execute code, written atomically.

A checkpoint is one safetensors file. Its tensors are the model weights
(``model.*``), the optimiser's tensor state (``optim.*``), the RNG state
(``rng.*``) and the hidden state carried between batches (``carry.*``); its
string metadata holds JSON: the format tag and version, the run config, the
vocabulary and the training position. Loading reads that with safetensors, which
parses a JSON header and raw tensor bytes; nothing is unpickled, so a hostile file
can at worst be refused.

Writing goes to a temporary file in the same folder, is flushed and fsync'd, then
renamed over the target (``os.replace`` is atomic on POSIX), so a crash or a full
disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from rnnlab.config import ClassifyRunConfig, RunConfig, from_dict
from rnnlab.data.vocab import Vocab
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.nn.classifier import RNNClassifier
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.nn.stack import StackState

FORMAT = "rnnlab-checkpoint"
VERSION = 1
BEST, LAST = "best.safetensors", "last.safetensors"
LANGUAGE_MODEL, CLASSIFIER = "language-model", "classifier"
CONFIG_TYPES: dict[str, type] = {LANGUAGE_MODEL: RunConfig, CLASSIFIER: ClassifyRunConfig}


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Whatever stops the write (a full disk, a signal, Ctrl-C), the temporary file is
    removed and the previous ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _split_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    for idx, st in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(st)
    # JSON turned tuples (Adam's betas) into lists; give them back as torch wrote them
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | os.PathLike[str], model: torch.nn.Module, config: RunConfig | ClassifyRunConfig,
                    vocab: Vocab | None, train_state: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None, carry: StackState | None = None,
                    rng: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None,
                    feeding: dict[str, Any] | None = None) -> None:
    """Write everything needed to use ``model`` and, with the rest, to resume training.

    The kind (language model or classifier) follows from the config's type; ``extra`` is
    what else the kind needs to rebuild the model (a classifier's class names and input).
    """
    kind = CLASSIFIER if isinstance(config, ClassifyRunConfig) else LANGUAGE_MODEL
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT, "version": str(VERSION), "kind": kind,
        "config": json.dumps(config.to_dict()), "vocab": json.dumps(vocab.to_dict() if vocab is not None else None),
        "train_state": json.dumps(train_state or {}), "extra": json.dumps(extra or {}),
    }
    if optimizer is not None:
        opt_tensors, opt_meta = _split_optimizer(optimizer)
        tensors.update(opt_tensors)
        meta["optimizer"] = json.dumps(opt_meta)
    if carry is not None:
        for k, layer in enumerate(carry):
            for i, t in enumerate(layer):
                tensors[f"carry.{k}.{i}"] = t.detach().cpu().contiguous().clone()
    for name, t in (rng or {}).items():
        tensors[f"rng.{name}"] = t.detach().cpu().contiguous()
    if feeding is not None:  # a feeding strategy's own state (professor forcing's discriminator)
        for name, t in feeding.get("tensors", {}).items():
            tensors[f"feeding.{name}"] = t.detach().cpu().contiguous().clone()
        meta["feeding"] = json.dumps(feeding.get("meta", {}))
    atomic_write(path, st_save(tensors, metadata=meta))


@dataclass
class Checkpoint:
    """What a checkpoint file holds, parsed and checked."""

    path: Path
    config: Any  # RunConfig for a language model, ClassifyRunConfig for a classifier
    vocab: Vocab | None  # None for a classifier of vector sequences
    train_state: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)
    optimizer: dict[str, Any] | None = field(default=None, repr=False)
    kind: str = LANGUAGE_MODEL
    extra: dict[str, Any] = field(default_factory=dict)
    extra_meta: dict[str, Any] = field(default_factory=dict, repr=False)  # other parsed metadata (feeding state)

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    @property
    def labels(self) -> list[str]:
        """A classifier's class names, in the order of its outputs."""
        return list(self.extra.get("labels", []))

    def build_model(self) -> Any:
        """The model with these weights; a :class:`CheckpointError` if they do not fit the config."""
        try:
            if self.kind == CLASSIFIER:
                labels, feature_size = self.labels, self.extra.get("feature_size", 0)
                if len(labels) < 2 or not isinstance(feature_size, int) or (self.vocab is None) == (feature_size == 0):
                    raise ValueError("class names or input size missing")
                model: torch.nn.Module = RNNClassifier(
                    self.config.model, len(labels), vocab_size=len(self.vocab) if self.vocab else 0,
                    feature_size=feature_size, bidirectional=self.config.classifier.bidirectional)
            else:
                if self.vocab is None:
                    raise ValueError("no vocabulary")
                model = RNNLanguageModel(self.config.model, len(self.vocab))
        except (ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{self.path}: cannot rebuild its model ({e})") from None
        try:
            model.load_state_dict(self.model_state(), strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise CheckpointError(f"{self.path}: weights do not match its config and vocabulary ({detail[:300]})") from None
        return model

    def carry(self) -> StackState | None:
        layers: dict[int, dict[int, torch.Tensor]] = {}
        for name, t in self.tensors.items():
            if name.startswith("carry."):
                _, k, i = name.split(".")
                layers.setdefault(int(k), {})[int(i)] = t
        if not layers:
            return None
        return tuple(tuple(layers[k][i] for i in sorted(layers[k])) for k in sorted(layers))

    def feeding_state(self) -> dict[str, Any] | None:
        """The feeding strategy's state as :meth:`rnnlab.feeding.Feeding.load_state_dict` takes it, if saved."""
        if "feeding" not in self.extra_meta:
            return None
        tensors = {k[len("feeding."):]: v for k, v in self.tensors.items() if k.startswith("feeding.")}
        return {"tensors": tensors, "meta": self.extra_meta["feeding"]}

    def rng(self) -> dict[str, torch.Tensor]:
        return {k[len("rng."):]: v for k, v in self.tensors.items() if k.startswith("rng.")}

    def optimizer_state(self) -> dict[str, Any] | None:
        return None if self.optimizer is None else _join_optimizer(self.tensors, self.optimizer)


def resolve(path: str | os.PathLike[str], prefer: str = BEST) -> Path:
    """A checkpoint file from a file or a run folder (``best`` first, else ``last``)."""
    p = Path(path)
    if p.is_dir():
        for name in (prefer, LAST if prefer == BEST else BEST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"run folder {p} holds no checkpoint ({BEST} or {LAST})")
    if not p.exists():
        raise CheckpointError(f"no such checkpoint: {p}")
    return p


def _sniff(p: Path) -> None:
    """Refuse files that are recognisably something else, before parsing them.

    A safetensors file starts with the 8-byte little-endian length of its JSON header,
    then ``{``; that is checked first, since the length's low byte may be anything
    (0x80 included, which is also how a pickle starts)."""
    with open(p, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{p} is empty")
    size = p.stat().st_size
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return
    if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"{p} is a pickle or PyTorch zip file; rnnlab loads only its own safetensors checkpoints "
            "and never unpickles (unpickling can run code)")
    raise CheckpointError(f"{p} is not a safetensors file")


def _read_meta(p: Path) -> dict[str, str]:
    try:
        _sniff(p)
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{p} is corrupt or truncated ({str(e).splitlines()[0][:200]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p} is a safetensors file but not an rnnlab checkpoint (no format tag)")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(
            f"{p} is an rnnlab checkpoint of version {meta.get('version')!r}; this rnnlab reads version {VERSION}")
    return meta


def _parse(p: Path, meta: dict[str, str], key: str) -> Any:
    if key not in meta:
        raise CheckpointError(f"{p}: metadata lacks {key!r}")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: metadata {key!r} is not valid JSON ({e.msg})") from None


def _kind(p: Path, meta: dict[str, str]) -> str:
    kind = meta.get("kind", LANGUAGE_MODEL)
    if kind not in CONFIG_TYPES:
        raise CheckpointError(f"{p} is an rnnlab checkpoint of an unknown kind {kind!r}")
    return kind


def _config(p: Path, meta: dict[str, str]) -> Any:
    try:
        return from_dict(CONFIG_TYPES[_kind(p, meta)], _parse(p, meta, "config"))
    except ConfigError as e:
        raise CheckpointError(f"{p}: stored config is invalid: {e}") from None


def read_config(path: str | os.PathLike[str], prefer: str = BEST) -> Any:
    """The run config stored in a checkpoint, read from its header alone (no tensors loaded):
    a :class:`RunConfig` for a language model, a :class:`ClassifyRunConfig` for a classifier."""
    p = resolve(path, prefer)
    return _config(p, _read_meta(p))


def checkpoint_kind(path: str | os.PathLike[str], prefer: str = BEST) -> str:
    """``"language-model"`` or ``"classifier"``, read from the header alone."""
    p = resolve(path, prefer)
    return _kind(p, _read_meta(p))


def load_checkpoint(path: str | os.PathLike[str], prefer: str = BEST) -> Checkpoint:
    """Read and check a checkpoint file (or a run folder's best/last checkpoint)."""
    p = resolve(path, prefer)
    meta = _read_meta(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p} is corrupt or truncated ({str(e).splitlines()[0][:200]})") from None
    kind = _kind(p, meta)
    config = _config(p, meta)
    vocab_d = _parse(p, meta, "vocab")
    vocab = Vocab.from_dict(vocab_d) if vocab_d is not None else None
    train_state = _parse(p, meta, "train_state") if "train_state" in meta else {}
    optimizer = _parse(p, meta, "optimizer") if "optimizer" in meta else None
    extra = _parse(p, meta, "extra") if "extra" in meta else {}
    if not isinstance(train_state, dict) or (optimizer is not None and not isinstance(optimizer, dict)):
        raise CheckpointError(f"{p}: training state is malformed")
    if not isinstance(extra, dict):
        raise CheckpointError(f"{p}: metadata 'extra' is malformed")
    extra_meta = {"feeding": _parse(p, meta, "feeding")} if "feeding" in meta else {}
    return Checkpoint(p, config, vocab, train_state, tensors, optimizer, kind, extra, extra_meta)


def load_model(path: str | os.PathLike[str]) -> tuple[RNNLanguageModel, Vocab, Checkpoint]:
    """The language model (in eval mode) and vocabulary of a checkpoint or run folder."""
    ckpt = load_checkpoint(path)
    if ckpt.kind != LANGUAGE_MODEL:
        raise CheckpointError(f"{ckpt.path} is a {ckpt.kind} checkpoint, not a language model "
                              f"(use rnnlab classify eval / predict)")
    model = ckpt.build_model()
    model.eval()
    return model, ckpt.vocab, ckpt


__all__ = ["BEST", "CLASSIFIER", "LANGUAGE_MODEL", "LAST", "Checkpoint", "checkpoint_kind", "atomic_write", "load_checkpoint", "load_model", "read_config", "resolve",
           "save_checkpoint", "write_json"]
