"""The ``rnnlab`` command line: a thin shell over the library.

Each command's options are one typed dataclass, from which its parser is generated
(:mod:`rnnlab.cli.common`): the library's configs where the library takes one (a run's
``--hidden-size`` is :class:`~rnnlab.config.ModelConfig`'s ``hidden_size``), and a dataclass
beside the command otherwise. A section's options are applied only where given, on top of
the defaults, or, with ``--resume``, on top of the run's own saved config. A module per group
of commands registers its parsers and holds its commands; errors the user can cause print
one line and exit non-zero; nothing here trains or samples by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from rnnlab.cli import classify, data, gradients, ngram, paths, scratch, serve, tasks, train
from rnnlab.cli.classify import classify_config_from_args
from rnnlab.cli.common import FMT, from_args, warn
from rnnlab.cli.train import run_config_from_args
from rnnlab.config import seed_problems
from rnnlab.errors import ConfigError, RnnlabError

# the order of the commands in ``rnnlab --help``
GROUPS = (train, ngram, classify, gradients, tasks, scratch, paths, serve, data)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnlab", formatter_class=FMT,
                                description="Recurrent language models: train, sample, evaluate.",
                                epilog="run 'rnnlab COMMAND --help' for each command's options and examples")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return p


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    warn(str(message), file)


class _LibraryNotes(logging.Handler):
    """The library's log records (e.g. the kernels' one-time build) as one ``rnnlab:`` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"rnnlab: {record.getMessage()}", file=sys.stderr, flush=True)


def _show_library_notes() -> None:
    lib = logging.getLogger("rnnlab")
    if not any(isinstance(h, _LibraryNotes) for h in lib.handlers):
        lib.addHandler(_LibraryNotes(logging.INFO))
        lib.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    _show_library_notes()
    import warnings

    show = warnings.showwarning
    warnings.showwarning = _one_line_warning  # a user sees one line, not our source file and line
    try:
        bad_seed = seed_problems("seed", getattr(ns, "seed", None))  # every --seed, also of commands with no config
        if bad_seed:
            raise ConfigError(bad_seed)
        for name in ("plot", "json_out"):  # an output that cannot be written is refused before the work
            if getattr(ns, name, None):
                from rnnlab.plots import check_writable

                check_writable(getattr(ns, name))
        return ns.func(from_args(ns, ns.options))
    except RnnlabError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except (MemoryError, RuntimeError) as e:  # a size asked for that this machine cannot hold: one line, no traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if not (isinstance(e, MemoryError) or "can't allocate memory" in first or "out of memory" in first.lower()):
            raise
        print(f"rnnlab: error: not enough memory for the sizes asked for ({first[:200]})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rnnlab sample ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        warnings.showwarning = show


__all__ = ["build_parser", "classify_config_from_args", "main", "run_config_from_args"]
