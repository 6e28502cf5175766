"""What the benchmark scripts share (they run as scripts, so this folder is on sys.path)."""

from __future__ import annotations


def split_rnnlab_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[script options] -- [rnnlab train options]`` -> the two lists."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
