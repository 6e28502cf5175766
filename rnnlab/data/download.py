"""Fetching the standard corpora, checksum verified: the library behind ``rnnlab data``.

:data:`CORPORA` names every corpus rnnlab knows how to fetch. Each :class:`Source`
pins one file at one commit, so its bytes never change, together with the sha256
and size of the file you end up with. ``rnnlab data list`` prints them;
``rnnlab data download NAME`` calls :func:`download`.

Where the file goes
    ``<dest>/<name>/<filename>``, where ``<dest>`` is the ``dest_dir`` argument if
    given, else ``$RNNLAB_DATA`` if set, else ``~/.cache/rnnlab/data``. For example
    ``~/.cache/rnnlab/data/tinyshakespeare/input.txt``.

What :func:`download` does
    1. If the final file is already there with the right sha256, it returns its
       path and makes no request. If it is there with another sha256 (edited,
       truncated, from another source) it raises :class:`~rnnlab.errors.DownloadError`
       and leaves it alone: delete it and run again. It never overwrites a file.
    2. Otherwise it streams the URL (``urllib.request``, no extra dependency) in
       chunks into a hidden temporary file in the same folder, with a tqdm progress
       bar on stderr and a timeout on every socket operation.
    3. It checks the sha256 of what arrived. A source with a ``postprocess`` step
       (``warpeace``: drop the byte-order mark, turn ``\\r`` line ends into ``\\n``)
       checks the raw download against ``raw_sha256``, applies the step, then checks
       the result against ``sha256``; so a mirror serving an already cleaned copy is
       refused too, rather than accepted by luck.
    4. It moves the file into place with :func:`os.replace`, which is atomic: the
       final path holds either nothing or the complete, verified file.

On any failure (unknown name, network error, HTTP error, timeout, checksum
mismatch, disk error), and when Ctrl-C or SIGTERM stops it, the temporary file is removed and a
:class:`~rnnlab.errors.DownloadError` is raised, whose one-line message names the
corpus, the URL and the problem (for a checksum: the expected and the actual
sha256 and size). ``url=`` fetches from a mirror or a local server instead; the
checksums still apply, so a mirror cannot hand you different text.

The data layer does not import torch, and neither does this module.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rnnlab import __version__
from rnnlab.errors import DownloadError

TIMEOUT = 60.0  # seconds without a byte (connect, or any one read) before giving up
CHUNK = 1 << 16  # bytes per read: small enough for a smooth progress bar
ENV_VAR = "RNNLAB_DATA"  # overrides the default destination folder
DEFAULT_DIR = Path("~/.cache/rnnlab/data")  # expanded when used, so $HOME is read then


@dataclass(frozen=True)
class Source:
    """One downloadable corpus file, pinned by URL and checksum."""

    name: str  # the key in CORPORA and the name of its sub-folder
    url: str  # a URL that never changes (pinned to a commit)
    sha256: str  # of the final file, after postprocess
    size: int  # bytes of the final file
    filename: str  # the final file's name inside <dest>/<name>/
    description: str  # one line, shown by `rnnlab data list`
    postprocess: Callable[[bytes], bytes] | None = None  # raw download -> final bytes; None: kept as is
    raw_sha256: str | None = None  # of the raw download; required with postprocess
    raw_size: int | None = None  # bytes of the raw download (for the progress bar when no Content-Length)

    def __post_init__(self) -> None:
        if (self.postprocess is None) != (self.raw_sha256 is None):
            raise ValueError(f"Source {self.name!r}: give postprocess and raw_sha256 together, or neither")


def strip_bom_and_cr(raw: bytes) -> bytes:
    """Drop a leading UTF-8 byte-order mark and replace every ``\\r`` by ``\\n``.

    Karpathy's ``warpeace_input.txt`` starts with a BOM and ends its lines with a bare
    CR; after this step it is plain UTF-8 with LF line ends, and nothing else changes
    (the byte count drops by exactly 3).
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.replace(b"\r", b"\n")


_SOURCES = (
    Source(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/"
            "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
        filename="input.txt",
        description="Shakespeare subset from Karpathy's char-rnn (ASCII, 65 characters)",
    ),
    Source(
        name="warpeace",
        url="https://raw.githubusercontent.com/ThingsOfBeam/Corpus/"
            "9aad26592097f5ac852cb11b60bf250f01a39fca/warpeace_input.txt",
        sha256="e9d70cc7d26da7bb53c09a90844647f75cd2ef081b6aa358290a8cf7184d889b",
        size=3_196_231,
        filename="warpeace_input.txt",
        description="Tolstoy, War and Peace, char-rnn's warpeace_input.txt (BOM dropped, CR -> LF)",
        postprocess=strip_bom_and_cr,
        raw_sha256="0139dcd32c37853541e8710281c32d823bb8ea86a86578916305bad06e3da0ea",
        raw_size=3_196_234,
    ),
)

CORPORA: dict[str, Source] = {s.name: s for s in _SOURCES}


def data_dir(dest_dir: str | os.PathLike[str] | None = None) -> Path:
    """The destination folder: ``dest_dir``, else ``$RNNLAB_DATA``, else ``~/.cache/rnnlab/data``."""
    if dest_dir is not None:
        return Path(dest_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DIR.expanduser()


def get_source(name: str) -> Source:
    """The :class:`Source` called ``name``, or a :class:`DownloadError` listing the known names."""
    try:
        return CORPORA[name]
    except KeyError:
        raise DownloadError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}") from None


def corpus_path(name: str, dest_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`download` puts corpus ``name`` (whether or not it is there yet)."""
    src = get_source(name)
    return data_dir(dest_dir) / src.name / src.filename


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _describe(e: BaseException) -> str:
    """A short, readable reason for a network or disk error."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        return _describe(reason) if isinstance(reason, BaseException) else f"cannot connect: {reason}"
    if isinstance(e, IncompleteRead):  # a chunked transfer cut off
        return f"the connection closed early ({len(e.partial):,d} bytes of a chunk read); try again"
    if isinstance(e, TimeoutError):
        return "timed out (no data for the timeout period)"
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _mismatch(what: str, expected: str, got: str, expected_size: int | None, got_size: int) -> str:
    """'<what> mismatch: expected sha256 ... (N bytes), got ... (M bytes)'."""
    exp = expected + (f" ({expected_size:,d} bytes)" if expected_size is not None else "")
    return f"{what} mismatch: expected sha256 {exp}, got {got} ({got_size:,d} bytes)"


def _fetch(url: str, tmp: Path, desc: str, size_hint: int | None, progress: bool,
           timeout: float) -> tuple[str, int, int | None]:
    """Stream ``url`` into the new file ``tmp``; return its sha256, its size and the announced Content-Length."""
    h = hashlib.sha256()
    n = 0
    req = urllib.request.Request(url, headers={"User-Agent": f"rnnlab/{__version__}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "xb") as f:
        header = resp.headers.get("Content-Length") if resp.headers else None
        length = int(header) if header and header.isdigit() else None
        with tqdm(total=length or size_hint, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                  disable=not progress, leave=False) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    return h.hexdigest(), n, length


def download(name: str, dest_dir: str | os.PathLike[str] | None = None, url: str | None = None,
             progress: bool = True, timeout: float = TIMEOUT) -> Path:
    """Fetch corpus ``name`` if it is not already there, verify it, and return its path.

    Args:
        name: a key of :data:`CORPORA`.
        dest_dir: destination folder (default: ``$RNNLAB_DATA``, else ``~/.cache/rnnlab/data``);
            the file lands in ``<dest_dir>/<name>/<filename>``.
        url: fetch from here instead of the pinned URL (a mirror, a local server);
            the checksums still apply.
        progress: show a tqdm progress bar on stderr.
        timeout: seconds to wait for a connection or for any one read.

    Raises:
        DownloadError: unknown name, an existing file with the wrong checksum, or any
            network, HTTP, checksum or disk failure; nothing is left behind.
    """
    src = get_source(name)
    url = url or src.url
    final = data_dir(dest_dir) / src.name / src.filename

    def fail(problem: str) -> DownloadError:
        return DownloadError(f"cannot download {src.name} from {url}: {problem}")

    if final.exists():
        try:
            got = file_sha256(final)
        except OSError as e:
            raise DownloadError(f"{src.name}: cannot read the existing {final}: {_describe(e)}") from None
        if got == src.sha256:
            return final
        raise DownloadError(
            f"{src.name}: {final} already exists but is not the expected file "
            f"(sha256 {got}, expected {src.sha256}); delete it and download again")

    folder = final.parent
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # the folders this call makes, deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"cannot create folder {folder}: {_describe(e)}") from None

    # Hidden, unique, in the same folder, so that os.replace is a rename on one file system.
    tmp = folder / f".{src.filename}.{secrets.token_hex(6)}.part"
    restore_sigterm = _sigterm_exits()  # SIGTERM, like Ctrl-C, runs the clean-up below
    try:
        raw_sha, raw_n, length = _fetch(url, tmp, src.name, src.raw_size or src.size, progress, timeout)
        if length is not None and raw_n != length:  # http.client returns short reads silently
            raise fail(f"the connection closed after {raw_n:,d} of {length:,d} bytes; try again")
        if src.postprocess is None:
            if raw_sha != src.sha256:
                raise fail(_mismatch("checksum", src.sha256, raw_sha, src.size, raw_n))
        else:
            if raw_sha != src.raw_sha256:
                raise fail(_mismatch("raw download checksum", src.raw_sha256 or "", raw_sha, src.raw_size, raw_n))
            data = src.postprocess(tmp.read_bytes())
            tmp.write_bytes(data)
            got = hashlib.sha256(data).hexdigest()
            if got != src.sha256:
                raise fail(_mismatch("post-processed checksum", src.sha256, got, src.size, len(data)))
        os.replace(tmp, final)
    except DownloadError:
        raise
    except (OSError, HTTPException, ValueError) as e:
        # OSError covers URLError/HTTPError, timeouts, resets and disk errors;
        # HTTPException a malformed or cut response; ValueError a malformed URL.
        raise fail(_describe(e)) from None
    finally:
        tmp.unlink(missing_ok=True)
        if not final.exists():
            for made in created:  # leave no empty folder behind either (--dir's own, too)
                try:
                    made.rmdir()
                except OSError:
                    break
        restore_sigterm()
    return final


def _sigterm_exits() -> Callable[[], None]:
    """Make SIGTERM raise ``SystemExit(143)`` (the status its default action gives) instead of ending the
    process at once, so that a download stopped by ``kill`` or a scheduler removes its temporary file as
    one stopped by Ctrl-C does. Returns the function that puts the previous handler back. Only the main
    thread can set a handler; elsewhere nothing changes."""
    def exit_cleanly(signum: int, frame: Any) -> None:  # noqa: ARG001
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, exit_cleanly)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)


__all__ = ["CORPORA", "DEFAULT_DIR", "ENV_VAR", "Source", "corpus_path", "data_dir", "download", "file_sha256",
           "get_source", "strip_bom_and_cr"]
