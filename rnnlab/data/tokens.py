"""A corpus larger than memory: read in chunks, trained through a memory map.

:func:`scan_text` reads a file (or a ``.gz``) once in chunks of ``chunk_bytes`` with
an incremental UTF-8 decoder: the distinct characters, the character count and the
checksum, with the same clear errors as :func:`rnnlab.data.corpus.decode_text`
(empty, binary, not UTF-8 with the byte offset). :func:`encode_to_file` reads it a
second time and writes the character ids, one byte each (two or four for
vocabularies of more than 256 or 65,536 characters), to a token file, atomically.
:func:`map_corpus` puts both together for a run: the training and validation splits
are ``numpy.memmap`` views of that file, and :class:`~rnnlab.data.StreamBatcher` and
:class:`~rnnlab.data.EvalStreams` read only the windows they need, so memory stays
bounded by the chunk size, the model and the batch, whatever the corpus size.

The split is the in-memory one: the first ``1 - val_fraction`` of the characters
train, the rest validate; the checksum is SHA-256 of the UTF-8 text (a byte-order
mark excluded), so the record matches what :func:`~rnnlab.data.corpus.load_corpus`
writes for the same file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from rnnlab.config import DataConfig
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError

CHUNK_BYTES = 1 << 20  # 1 MiB of the file at a time: encoding one chunk needs about 40 bytes a character
AUTO_BYTES = 64 << 20  # --mmap auto maps a corpus file of 64 MiB or more (in memory it would take ~40x)
TOKENS = "tokens.bin"  # the token file in the run folder, and its description beside it
TOKENS_META = "tokens.json"


def _open(p: Path) -> IO[bytes]:
    return gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")  # noqa: SIM115 (the caller closes it)


def _chunks(p: Path, chunk_bytes: int) -> Iterator[str]:
    """The text of ``p`` in pieces, decoded incrementally (a character is never cut in two)."""
    if not p.exists():
        raise DataError(f"no such file: {p}")
    if p.is_dir():
        raise DataError(f"{p} is a folder; expected a text file")
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    first = True
    try:
        with _open(p) as f:
            while True:
                raw = f.read(chunk_bytes)
                nul = raw.find(b"\x00")
                if nul >= 0:
                    raise DataError(f"{p} looks binary (a NUL byte at offset {offset + nul}); give a UTF-8 text file")
                pending = len(dec.getstate()[0])  # bytes of a character cut by the previous chunk
                try:
                    text = dec.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    raise DataError(f"{p} is not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset "
                                    f"{offset - pending + e.start}); convert it, e.g. iconv -f latin1 -t utf-8"
                                    ) from None
                if first and text.startswith("\ufeff"):
                    text = text[1:]  # a byte-order mark is not part of the text
                first = first and not text
                if text:
                    yield text
                if not raw:
                    return
                offset += len(raw)
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from None
    except (EOFError, zlib.error):
        raise DataError(f"{p} is a truncated or corrupt gzip file") from None


@dataclass
class TextScan:
    """What one pass over a text file found."""

    path: str
    chars: int  # characters (code points)
    symbols: list[str]  # the distinct characters, sorted by code point
    sha256: str  # of the UTF-8 text without a byte-order mark
    file_bytes: int


def scan_text(path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> TextScan:
    """One pass over ``path`` in chunks: its characters, their count and its checksum."""
    p = Path(path)
    seen: set[str] = set()
    n = 0
    h = hashlib.sha256()
    for text in _chunks(p, chunk_bytes):
        seen.update(text)
        n += len(text)
        h.update(text.encode("utf-8"))
    if n == 0:
        raise DataError(f"{p} is empty")
    return TextScan(str(p), n, sorted(seen), h.hexdigest(), p.stat().st_size)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer that holds every id."""
    return np.dtype(np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def encode_to_file(path: str | os.PathLike[str], vocab: Vocab, dest: str | os.PathLike[str], chars: int,
                   chunk_bytes: int = CHUNK_BYTES) -> np.memmap:
    """Write the ids of ``path``'s characters to ``dest`` (atomically: a temporary file, then a rename)
    and return them as a read-only memory map of ``chars`` ids."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    dtype = id_dtype(len(vocab))
    try:
        out = np.memmap(tmp, dtype=dtype, mode="w+", shape=(chars,))
        at = 0
        for text in _chunks(Path(path), chunk_bytes):
            ids = vocab.encode(text)
            if at + len(ids) > chars:
                raise DataError(f"{path} changed while it was read (more than {chars} characters)")
            out[at:at + len(ids)] = ids
            at += len(ids)
        if at != chars:
            raise DataError(f"{path} changed while it was read ({at} characters, {chars} expected)")
        out.flush()
        del out
        with open(tmp, "rb+") as f:  # on disk before the rename: a crash cannot leave a named file half written
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"cannot write the token file {dest}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.memmap(dest, dtype=dtype, mode="r", shape=(chars,))


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def wants_mmap(cfg: DataConfig) -> bool:
    """Whether ``cfg``'s corpus is read through a memory map (``--mmap yes``, or ``auto`` and a big file)."""
    if cfg.mmap == "no":
        return False
    reasons = []
    if cfg.data is None or Path(cfg.data).is_dir():
        reasons.append("a single --data file")
    if cfg.level != "char":
        reasons.append("--level char")
    if cfg.format != "text":
        reasons.append("--format text")
    if cfg.mmap == "yes":
        if reasons:
            raise ConfigError(f"--mmap yes reads the corpus through a memory map, which needs {' and '.join(reasons)}")
        return True
    if reasons:
        return False
    p = Path(cfg.data)  # type: ignore[arg-type]
    return p.is_file() and p.stat().st_size >= AUTO_BYTES


@dataclass
class MappedCorpus:
    """The two splits of a memory-mapped corpus, its vocabulary and its record (as ``split.json``)."""

    train: np.ndarray  # (N_train,) ids, a view of the token file
    val: np.ndarray  # (N_val,) ids
    vocab: Vocab
    record: dict[str, Any] = field(default_factory=dict)


def map_corpus(cfg: DataConfig, folder: str | os.PathLike[str], vocab: Vocab | None = None,
               expect_sha256: str | None = None, chunk_bytes: int = CHUNK_BYTES) -> MappedCorpus:
    """Scan ``cfg.data``, encode it into ``folder/tokens.bin`` (reused when it already holds this
    text with this vocabulary) and split it. ``vocab``: a resumed run's own; ``expect_sha256``:
    the checksum the run recorded (a changed corpus is refused before anything is written).

    ``tokens.json`` describes the token file, its size and its own SHA-256 included, and is
    written after it: a token file that is partly written (cut short, or its tail never reached
    the disk), damaged or without its description is detected and rebuilt."""
    scan = scan_text(cfg.data, chunk_bytes)  # type: ignore[arg-type]
    if expect_sha256 is not None and scan.sha256 != expect_sha256:
        raise DataError(f"the corpus {cfg.data} has changed since the run started (its checksum differs from "
                        f"split.json); resume needs the same text")
    vocab = vocab or Vocab(scan.symbols, level="char")
    folder = Path(folder)
    dest, meta_path = folder / TOKENS, folder / TOKENS_META
    dtype = id_dtype(len(vocab))
    meta = {"sha256": scan.sha256, "chars": scan.chars, "symbols": vocab.symbols, "dtype": dtype.name,
            "bytes": scan.chars * dtype.itemsize}
    ids: np.ndarray | None = None
    try:
        stored = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
        if isinstance(stored, dict) and {k: stored.get(k) for k in meta} == meta and dest.is_file() \
                and dest.stat().st_size == meta["bytes"] and file_sha256(dest, chunk_bytes) == stored.get("ids_sha256"):
            ids = np.memmap(dest, dtype=dtype, mode="r", shape=(scan.chars,))
    except (OSError, ValueError):
        ids = None  # a damaged token file or description is rebuilt
    if ids is None:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # first: killed while the token file is rewritten, no description fits it
        ids = encode_to_file(cfg.data, vocab, dest, scan.chars, chunk_bytes)  # type: ignore[arg-type]
        meta["ids_sha256"] = file_sha256(dest, chunk_bytes)
        tmp = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, meta_path)
    cut = int(scan.chars * (1.0 - cfg.val_fraction))
    if cut < 2 or scan.chars - cut < 2:
        raise DataError(f"{cfg.data} has {scan.chars} characters: --val-fraction {cfg.val_fraction:g} leaves {cut} to "
                        f"train and {scan.chars - cut} to validate, and each needs at least 2"
                        + (" (give a larger --val-fraction)" if scan.chars - cut < 2 and scan.chars >= 4 else ""))
    record = {"kind": "file", "format": "text", "path": str(cfg.data), "memory_map": str(dest),
              "split": f"first {cut} characters train, last {scan.chars - cut} validate "
                       f"(val_fraction {cfg.val_fraction})",
              "total_chars": scan.chars, "train_chars": cut, "val_chars": scan.chars - cut, "sha256": scan.sha256}
    return MappedCorpus(ids[:cut], ids[cut:], vocab, record)
