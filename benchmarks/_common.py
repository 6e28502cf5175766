"""What the benchmark scripts share (they run as scripts, so this folder is on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def split_rnnlab_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[script options] -- [rnnlab train options]`` -> the two lists."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def write_results(out: Path, res: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> None:
    """``res`` as JSON to ``out`` and as Markdown beside it (``.md``); the Markdown is printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"written to {out}")
