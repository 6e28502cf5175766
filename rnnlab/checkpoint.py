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

Kinds of checkpoint register themselves (:func:`register_kind`, :data:`KINDS`): a
:class:`CheckpointKind` names the header's ``kind`` tag, what the kind is and which command
reads it, its config type where :func:`load_checkpoint` reads it, its loader, and the role
the server gives it. This module registers the language model and the classifier;
:mod:`rnnlab.task_train` registers the long-memory task runs. Every kind writes through
:func:`write_checkpoint` and reads through :func:`read_checkpoint` (format, version, kind,
tensors), and every reader refuses another kind's file by its tag, naming the command that
reads it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch.overrides import TorchFunctionMode

from rnnlab.config import ClassifyRunConfig, RunConfig, from_dict
from rnnlab.data.vocab import Vocab
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.nn.cells import CELL_TYPES
from rnnlab.nn.classifier import build_classifier
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.nn.stack import StackState

FORMAT = "rnnlab-checkpoint"
VERSION = 1
BEST, LAST = "best.safetensors", "last.safetensors"
LANGUAGE_MODEL, CLASSIFIER = "language-model", "classifier"


@dataclass(frozen=True)
class CheckpointKind:
    """One kind of checkpoint: the ``kind`` tag in its header and what rnnlab does with it."""

    tag: str  # the header's "kind" ("language-model" where a header has none)
    description: str  # what it is, for messages: "a language model"
    read_by: str  # the command that reads it, for the other readers' refusals: "rnnlab sample, generate, eval"
    load: Callable[..., Any]  # (path, prefer=BEST) -> the parsed, checked checkpoint
    # the run config's type where :func:`load_checkpoint` reads the kind (None: the kind reads its own files)
    config_type: type | None = None
    # the server's role for it: "language-model" or "classifier" (rnnlab.serve's loaders; None: not served)
    serve_as: str | None = None


KINDS: dict[str, CheckpointKind] = {}
"""The registered checkpoint kinds by tag (:func:`register_kind`)."""


def register_kind(kind: CheckpointKind) -> CheckpointKind:
    """Enter ``kind`` in :data:`KINDS` (a tag taken by another kind raises a ValueError)."""
    old = KINDS.get(kind.tag)
    if old is not None and old != kind:
        raise ValueError(f"a checkpoint kind {kind.tag!r} is registered already")
    KINDS[kind.tag] = kind
    return kind


def config_types() -> dict[str, type]:
    """The kinds :func:`load_checkpoint` reads, each with its run config's type."""
    return {tag: k.config_type for tag, k in KINDS.items() if k.config_type is not None}


_TEMP = re.compile(r"\.(.+)\.tmp-(\d+)")  # atomic_write's temporary files: .<name>.tmp-<pid>


def _remove_stale_temps(folder: Path) -> None:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only names of :func:`atomic_write`'s pattern whose process is gone are removed, so a
    writer still at work keeps its file. A killed run's leftovers would otherwise pile up,
    one checkpoint's size each, and fill the disk of a run that is killed and resumed often.
    """
    if os.name != "posix":  # os.kill(pid, 0) is the liveness probe only on POSIX
        return
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _TEMP.fullmatch(name)
        if m is None or int(m[2]) == os.getpid():
            continue
        try:
            os.kill(int(m[2]), 0)
            continue  # the writer is alive (or another user's): leave its file alone
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):
            continue
        try:
            (folder / name).unlink()
        except OSError:
            pass


class _NoInit(TorchFunctionMode):
    """Random initialisers write nothing: for a model built on the meta device only to compare its shapes.

    Torch's meta ``normal_`` (``nn.Embedding``'s initialiser) is a Python reference whose first call imports
    ``torch._dynamo``, seconds of a server's first model load; shapes need no values."""

    _SKIPPED = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.nn.init.normal_, torch.nn.init.uniform_,
                          torch.nn.init.trunc_normal_})  # each fills its first argument, in place, and returns it

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func in self._SKIPPED:
            return args[0] if args else kwargs["tensor"]  # torch.nn.init passes it by keyword
        return func(*args, **(kwargs or {}))


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its class name if it has none), for a one-line error."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Whatever stops the write (a full disk, a signal, Ctrl-C), the temporary file is
    removed and the previous ``path`` is left as it was. Only SIGKILL (or a crash of the
    machine) can leave the temporary file behind; the next write into the folder removes it.
    """
    path = Path(path)
    _remove_stale_temps(path.parent)  # first: on a full disk their space is what this write needs
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


def write_checkpoint(path: str | os.PathLike[str], kind: str, model: torch.nn.Module, meta: dict[str, Any],
                     optimizer: torch.optim.Optimizer | None = None, rng: dict[str, torch.Tensor] | None = None,
                     tensors: dict[str, torch.Tensor] | None = None) -> None:
    """One checkpoint file of ``kind``, written atomically: the model's weights (``model.*``), the optimiser's
    state (``optim.*`` and its JSON), the RNG states (``rng.*``), the kind's own ``tensors`` (named with their
    prefix) and ``meta``, each value stored as JSON under its key, beside the format tag, version and kind."""
    out = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    header: dict[str, str] = {"format": FORMAT, "version": str(VERSION), "kind": kind}
    header.update({k: json.dumps(v) for k, v in meta.items()})
    if optimizer is not None:
        opt_tensors, opt_meta = _split_optimizer(optimizer)
        out.update(opt_tensors)
        header["optimizer"] = json.dumps(opt_meta)
    for name, t in (rng or {}).items():
        out[f"rng.{name}"] = t.detach().cpu().contiguous()
    for name, t in (tensors or {}).items():
        out[name] = t.detach().cpu().contiguous().clone()
    atomic_write(path, st_save(out, metadata=header))


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
    meta: dict[str, Any] = {"config": config.to_dict(), "vocab": vocab.to_dict() if vocab is not None else None,
                            "train_state": train_state or {}, "extra": extra or {}}
    tensors: dict[str, torch.Tensor] = {}
    if carry is not None:
        for k, layer in enumerate(carry):
            for i, t in enumerate(layer):
                tensors[f"carry.{k}.{i}"] = t
    if feeding is not None:  # a feeding strategy's own state (professor forcing's discriminator)
        for name, t in feeding.get("tensors", {}).items():
            tensors[f"feeding.{name}"] = t
        meta["feeding"] = feeding.get("meta", {})
    write_checkpoint(path, kind, model, meta, optimizer, rng, tensors)


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

    def expect(self, *kinds: str) -> Checkpoint:
        """This checkpoint, if it is of one of ``kinds``; else a :class:`CheckpointError` naming the command that
        reads its kind."""
        if self.kind not in kinds:
            raise _refusal(self.path, self.kind, kinds)
        return self

    @property
    def labels(self) -> list[str]:
        """A classifier's class names, in the order of its outputs."""
        return list(self.extra.get("labels", []))

    def _new_model(self) -> torch.nn.Module:
        """The model the config describes, with fresh weights (on the current default device)."""
        if self.kind == CLASSIFIER:
            labels, feature_size = self.labels, self.extra.get("feature_size", 0)
            if len(labels) < 2 or not isinstance(feature_size, int) or (self.vocab is None) == (feature_size == 0):
                raise ValueError("class names or input size missing")
            return build_classifier(self.config, len(labels), vocab_size=len(self.vocab) if self.vocab else 0,
                                    feature_size=feature_size)
        if self.vocab is None:
            raise ValueError("no vocabulary")
        return RNNLanguageModel(self.config.model, len(self.vocab))

    def build_model(self) -> Any:
        """The model with these weights; a :class:`CheckpointError` if they do not fit the config.

        The shapes are compared on the meta device first, so a config that asks for a huge
        model allocates nothing: the real model is built only once it matches the file's own
        tensors (whose size the file bounds)."""
        state = self.model_state()
        layers = self.config.model.num_layers
        if layers > len(state):  # every layer holds several tensors; a million layers would take minutes to refuse
            raise CheckpointError(f"{self.path}: weights do not match its config and vocabulary (the config asks for "
                                  f"{layers} layers, the file holds {len(state)} weight tensors)")
        try:
            with torch.device("meta"), _NoInit():
                shell = self._new_model()
        except (ValueError, TypeError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{self.path}: cannot rebuild its model ({_first_line(e)})") from None
        expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
            wrong = [f"{k}: {list(got[k])} in the file, {list(expected[k])} expected"
                     for k in sorted(expected.keys() & got.keys()) if expected[k] != got[k]]
            detail = "; ".join([f"missing {', '.join(missing[:3])}"] * bool(missing)
                               + [f"unexpected {', '.join(unexpected[:3])}"] * bool(unexpected) + wrong[:2])
            raise CheckpointError(f"{self.path}: weights do not match its config and vocabulary ({detail[:300]})")
        for k, t in state.items():
            if not t.is_floating_point():
                raise CheckpointError(f"{self.path}: weight {k} is {t.dtype}, not floating point; the file is corrupt")
            if not torch.isfinite(t).all():
                raise CheckpointError(f"{self.path}: weight {k} holds NaN or infinite values; the file is corrupt "
                                      "or its run diverged")
        model = self._new_model()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise CheckpointError(
                f"{self.path}: weights do not match its config and vocabulary ({detail[:300]})") from None
        return model

    def carry(self) -> StackState | None:
        """The hidden state carried between batches, (B, H) per tensor, as the model's stack holds it;
        a :class:`CheckpointError` if it does not fit the config (layers, tensors per layer, width)."""
        layers: dict[int, dict[int, torch.Tensor]] = {}
        for name, t in self.tensors.items():
            if name.startswith("carry."):
                _, k, i = name.split(".")  # the names were checked by load_checkpoint
                layers.setdefault(int(k), {})[int(i)] = t
        if not layers:
            return None
        m = self.config.model
        per_layer = CELL_TYPES[m.cell].state_tensors  # an LSTM carries (h, c)
        state = tuple(tuple(layers[k][i] for i in sorted(layers[k])) for k in sorted(layers))
        fits = (sorted(layers) == list(range(m.num_layers))
                and all(sorted(layers[k]) == list(range(per_layer)) for k in layers)
                and all(t.dim() == 2 and t.shape == state[0][0].shape and t.shape[1] == m.hidden_size
                        and t.is_floating_point() and bool(torch.isfinite(t).all()) for layer in state for t in layer))
        if not fits:
            shapes = [[list(t.shape) for t in layer] for layer in state]
            raise CheckpointError(f"{self.path}: carried state {shapes} does not fit a {m.num_layers}-layer "
                                  f"{m.cell} of width {m.hidden_size}; the file is corrupt")
        return state

    def feeding_state(self) -> dict[str, Any] | None:
        """The feeding strategy's state as :meth:`rnnlab.feeding.Feeding.load_state_dict` takes it, if saved."""
        if "feeding" not in self.extra_meta:
            return None
        tensors = {k[len("feeding."):]: v for k, v in self.tensors.items() if k.startswith("feeding.")}
        return {"tensors": tensors, "meta": self.extra_meta["feeding"]}

    def rng(self) -> dict[str, torch.Tensor]:
        """The random generators' states (byte tensors, as ``torch.get_rng_state`` gives them)."""
        rng = {k[len("rng."):]: v for k, v in self.tensors.items() if k.startswith("rng.")}
        size = torch.get_rng_state().numel()
        for name, t in rng.items():
            if t.dtype != torch.uint8 or t.dim() != 1 or (name == "torch" and t.numel() != size):
                raise CheckpointError(f"{self.path}: random generator state {name!r} is malformed "
                                      f"({t.dtype}, shape {list(t.shape)}); the file is corrupt")
        return rng

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
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27:
        raise CheckpointError(f"{p} is truncated: its safetensors header says {int.from_bytes(head[:8], 'little')} "
                              f"bytes, the file holds {size - 8} after the length")
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
        raise CheckpointError(f"{p} is corrupt or truncated ({_first_line(e)})") from None
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
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an integer of 5,000 digits, [[[[...]]]] nested deep
        why = e.msg if isinstance(e, json.JSONDecodeError) else _first_line(e, 100)
        raise CheckpointError(f"{p}: metadata {key!r} is not valid JSON ({why})") from None


def _refusal(p: Path, kind: str, wanted: tuple[str, ...]) -> CheckpointError:
    """The one-line refusal of a file of ``kind`` by a reader of the ``wanted`` kinds."""
    k = KINDS.get(kind)
    if k is None:
        return CheckpointError(f"{p} is an rnnlab checkpoint of an unknown kind {kind!r} (this rnnlab reads "
                               f"{', '.join(KINDS)})")
    names = [KINDS[w].description if w in KINDS else w for w in wanted]
    return CheckpointError(f"{p} holds {k.description}, not {' or '.join(names)}; it is read by {k.read_by}")


def _kind(p: Path, meta: dict[str, str], wanted: tuple[str, ...] | None = None) -> str:
    """The header's kind, refused unless it is one of ``wanted`` (default: the kinds with a config type)."""
    kind = meta.get("kind", LANGUAGE_MODEL)
    wanted = tuple(config_types()) if wanted is None else wanted
    if kind not in wanted or kind not in KINDS:
        raise _refusal(p, kind, wanted)
    return kind


@dataclass
class StoredCheckpoint:
    """A checkpoint file as :func:`read_checkpoint` gives it: its kind, header and tensors, checked for format,
    version and kind (what each kind's loader parses further)."""

    path: Path
    kind: str
    meta: dict[str, str] = field(repr=False)
    tensors: dict[str, torch.Tensor] = field(repr=False)

    def json(self, key: str, default: Any = ...) -> Any:
        """The header's ``key`` parsed as JSON; ``default`` where it is absent (none given: a CheckpointError)."""
        if key not in self.meta and default is not ...:
            return default
        return _parse(self.path, self.meta, key)


def read_checkpoint(path: str | os.PathLike[str], kinds: tuple[str, ...], prefer: str = BEST,
                    tensors: bool = True) -> StoredCheckpoint:
    """Read a checkpoint file (or a run folder's ``prefer``, else the other, checkpoint) of one of ``kinds``:
    foreign files, pickles, other formats and versions and other kinds are refused with one line, before any
    tensor is read; ``tensors=False`` reads the header alone."""
    p = resolve(path, prefer)
    meta = _read_meta(p)
    kind = _kind(p, meta, kinds)
    loaded: dict[str, torch.Tensor] = {}
    if tensors:
        try:
            with safe_open(str(p), framework="pt") as f:
                loaded = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p} is corrupt or truncated ({_first_line(e)})") from None
    return StoredCheckpoint(p, kind, meta, loaded)


def join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The optimiser's ``state_dict`` from a checkpoint's ``optim.*`` tensors and its ``optimizer`` JSON."""
    return _join_optimizer(tensors, meta)


def _loading_problems(cfg: Any) -> list[str]:
    """What in a stored config would stop its model from being built or run: the model section's
    problems (and a classifier's), and the batch sizes that scoring and resuming use. (A run's stop conditions
    and corpus are the training run's business, not the loader's.)"""
    problems = list(cfg.model.problems())
    if isinstance(cfg, ClassifyRunConfig):
        problems += cfg.classifier.problems()
    for name in ("batch_size", "seq_len", "eval_batch_size"):
        if getattr(cfg.train, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(cfg.train, name)}")
    return problems


def _config(p: Path, meta: dict[str, str]) -> Any:
    try:
        cfg = from_dict(config_types()[_kind(p, meta)], _parse(p, meta, "config"))
        problems = _loading_problems(cfg)
        if problems:
            raise ConfigError(problems)
        return cfg
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
    """Read and check a checkpoint file (or a run folder's best/last checkpoint) of any registered kind with a
    config type (the language model, the classifier); :meth:`Checkpoint.expect` then narrows the kind."""
    stored = read_checkpoint(path, tuple(config_types()), prefer)
    p, meta, tensors, kind = stored.path, stored.meta, stored.tensors, stored.kind
    config = _config(p, meta)
    vocab_d = _parse(p, meta, "vocab")
    try:
        vocab = Vocab.from_dict(vocab_d) if vocab_d is not None else None
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None
    train_state = _parse(p, meta, "train_state") if "train_state" in meta else {}
    optimizer = _parse(p, meta, "optimizer") if "optimizer" in meta else None
    extra = _parse(p, meta, "extra") if "extra" in meta else {}
    if not isinstance(train_state, dict) or (optimizer is not None and not isinstance(optimizer, dict)):
        raise CheckpointError(f"{p}: training state is malformed")
    if not isinstance(extra, dict):
        raise CheckpointError(f"{p}: metadata 'extra' is malformed")
    labels, feature_size = extra.get("labels", []), extra.get("feature_size", 0)
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)
            and isinstance(feature_size, int) and not isinstance(feature_size, bool) and feature_size >= 0):
        raise CheckpointError(f"{p}: a classifier's class names or input size are malformed")
    _check_layout(p, tensors, optimizer)
    extra_meta = {"feeding": _parse(p, meta, "feeding")} if "feeding" in meta else {}
    return Checkpoint(p, config, vocab, train_state, tensors, optimizer, kind, extra, extra_meta)


def _index_name(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _check_layout(p: Path, tensors: dict[str, torch.Tensor], optimizer: dict[str, Any] | None) -> None:
    """Refuse tensor names and optimiser metadata that :meth:`Checkpoint.carry` and
    :meth:`Checkpoint.optimizer_state` could not read (``carry.<layer>.<i>``, ``optim.<param>.<key>``)."""
    for name in tensors:
        parts = name.split(".")
        if (parts[0] == "carry" and not (len(parts) == 3 and _index_name(parts[1]) and _index_name(parts[2]))) or \
                (parts[0] == "optim" and not (len(parts) >= 3 and _index_name(parts[1]))):
            raise CheckpointError(f"{p}: tensor name {name[:80]!r} is malformed; the file is corrupt")
    if optimizer is None:
        return
    groups, scalars = optimizer.get("param_groups"), optimizer.get("scalars")

    def number(v: Any) -> bool:
        return v is None or isinstance(v, (bool, int, float, str))

    groups_ok = isinstance(groups, list) and all(
        isinstance(g, dict) and isinstance(g.get("params"), list)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"])
        and all(number(v) or (isinstance(v, list) and all(map(number, v))) for k, v in g.items() if k != "params")
        for g in groups)
    scalars_ok = isinstance(scalars, dict) and all(_index_name(k) and isinstance(v, dict) for k, v in scalars.items())
    if not (groups_ok and scalars_ok):
        raise CheckpointError(f"{p}: optimiser state is malformed; the file is corrupt")


def load_model(path: str | os.PathLike[str]) -> tuple[RNNLanguageModel, Vocab, Checkpoint]:
    """The language model (in eval mode) and vocabulary of a checkpoint or run folder."""
    ckpt = load_checkpoint(path).expect(LANGUAGE_MODEL)
    model = ckpt.build_model()
    model.eval()
    return model, ckpt.vocab, ckpt


register_kind(CheckpointKind(LANGUAGE_MODEL, "a language model", "rnnlab train, sample, generate, eval and serve",
                             load_checkpoint, RunConfig, serve_as=LANGUAGE_MODEL))
register_kind(CheckpointKind(CLASSIFIER, "a classifier", "rnnlab classify (run, eval, predict) and serve",
                             load_checkpoint, ClassifyRunConfig, serve_as=CLASSIFIER))


def header_kind(path: str | os.PathLike[str]) -> str:
    """The ``kind`` in a checkpoint file's header (``language-model`` where it has none), whatever the kind,
    registered or not. A file that is not a readable checkpoint also answers ``language-model``: its loader
    then says precisely what is wrong."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("kind", LANGUAGE_MODEL)
    except Exception:  # any unreadable file: the loader refuses it with the precise reason
        return LANGUAGE_MODEL


__all__ = ["BEST", "CLASSIFIER", "KINDS", "LANGUAGE_MODEL", "LAST", "Checkpoint", "CheckpointKind",
           "StoredCheckpoint", "atomic_write", "checkpoint_kind", "config_types", "header_kind", "join_optimizer",
           "load_checkpoint", "load_model", "read_checkpoint", "read_config", "register_kind", "resolve",
           "save_checkpoint", "write_checkpoint", "write_json"]
