"""The fused CPU recurrences (``csrc/recurrences.cpp``): built once on first use, loaded as ``torch.ops.rnnlab``.

Python's loop over time costs the Elman and GRU fast paths (:mod:`rnnlab.nn.sequence`)
more than their arithmetic at small hidden sizes: every step is half a dozen ATen calls,
each with its own dispatch and its own pass over memory, each too small for a second
thread. The C++ file runs the same loop with one matrix product per step and one
vectorized, multi-threaded pass for all the element-wise work of the step.

It is compiled by :func:`torch.utils.cpp_extension.load` (a C++ compiler and ``ninja``
are needed; ``ninja`` is a dependency of rnnlab) into a cache folder keyed by the source,
the flags and the versions of torch and Python, so it is built once per machine, in
about 15 s, and loaded from there afterwards. It is optional: where it cannot be built
(no compiler, a CPU without AVX2, ``RNNLAB_KERNELS=0``) the Python loops run instead,
which compute the same function (the tests hold the two to float64 round-off). The build is
reported through :mod:`logging` (logger ``rnnlab.nn.kernels``, level INFO; the command line
shows it on stderr), a failed build by a warning.

    >>> from rnnlab.nn import kernels
    >>> kernels.available()        # builds on first call; False where it cannot
    >>> with kernels.disabled():   # the Python loops, e.g. as a benchmark's baseline
    ...     ...
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "recurrences.cpp"
ENV = "RNNLAB_KERNELS"  # "0": never build or use the kernels
CACHE_ENV = "RNNLAB_KERNELS_DIR"  # where builds are kept (default: ~/.cache/rnnlab/kernels)
NAME = "rnnlab_recurrences"
# AVX2 and FMA: the ISA the wheel's own kernels use on these machines; CPU_CAPABILITY selects ATen's 256-bit
# Vectorized; OpenMP makes at::parallel_for (compiled into this file) use torch's thread pool.
CFLAGS = ["-O3", "-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2", "-fopenmp"]
LDFLAGS = ["-fopenmp"]

log = logging.getLogger(__name__)  # the one-time build is reported here (INFO), never printed
_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_off = threading.local()


def why_not() -> str | None:
    """Why the kernels cannot be built here (None: nothing known against it)."""
    if os.environ.get(ENV, "1") == "0":
        return f"{ENV}=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"built for x86-64 only, this is {platform.machine()}"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"needs AVX2, torch reports {torch.backends.cpu.get_cpu_capability()}"
    if shutil.which(os.environ.get("CXX", "c++")) is None and not _built():
        return "no C++ compiler (c++ or $CXX) on PATH"
    return None


def _built() -> bool:
    try:
        return (build_directory() / f"{NAME}.so").exists()
    except (OSError, RuntimeError):  # no home folder to find the cache in
        return False


def build_directory() -> Path:
    """The cache folder for this source, these flags and these torch and Python versions."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CFLAGS + LDFLAGS).encode(), torch.__version__.encode(),
                 sys.version.encode()):
        key.update(part)
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnlab" / "kernels"
    return Path(root) / key.hexdigest()[:16]


def _load() -> bool:
    reason = why_not()
    if reason is not None:
        return False
    try:
        if shutil.which("ninja") is None:  # the ninja wheel's binary, where the venv's bin is not on PATH
            import ninja

            os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
        where = build_directory()
        if (where / f"{NAME}.so").exists():  # built before: load it as it is (the folder may be read-only)
            try:
                torch.ops.load_library(str(where / f"{NAME}.so"))
                if hasattr(torch.ops.rnnlab, "gru_forward"):
                    return True
            except (OSError, RuntimeError):  # a truncated or foreign file: build again below
                pass
        else:  # the library does not print: the command line shows INFO records of the "rnnlab" logger on stderr
            log.info("building the fused CPU recurrences once (about 15 s) in %s", where)
        where.mkdir(parents=True, exist_ok=True)
        from torch.utils import cpp_extension  # imported here: slow to import, and needed only to build

        cpp_extension.load(NAME, [str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                           build_directory=str(where), is_python_module=False, verbose=False)
    except Exception as e:  # noqa: BLE001 -- any build or load failure means: use the Python loops
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        warnings.warn(f"rnnlab: the fused CPU recurrences could not be built ({first}); "
                      f"using the Python loops, which are slower. Set {ENV}=0 to skip the attempt.", stacklevel=3)
        return False
    return hasattr(torch.ops.rnnlab, "gru_forward")


def available() -> bool:
    """Whether ``torch.ops.rnnlab`` may be used now: built and loaded (on the first call), and not
    switched off by :func:`disabled` in this thread."""
    global _loaded
    if getattr(_off, "depth", 0):
        return False
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block (in this thread), :mod:`rnnlab.nn.sequence` runs its Python loops."""
    _off.depth = getattr(_off, "depth", 0) + 1
    try:
        yield
    finally:
        _off.depth -= 1
