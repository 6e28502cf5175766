"""MkDocs hook: the command-line reference, generated from rnnlab's argparse parser at build time.

``reference/cli.md`` is not a file in ``docs/``: :func:`cli_markdown` writes it from
:func:`rnnlab.cli.build_parser` on every build, one section per command and action with its
``--help`` text, so the page cannot drift from the options the command accepts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

PAGE = "reference/cli.md"
WIDTH = "100"  # argparse wraps its help to $COLUMNS: a fixed width makes every build write the same page


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every parser below ``parser`` in the order the help lists them: (words after rnnlab, parser, one-line help)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name, "")
                yield from _commands(sub, (*path, name))


def cli_markdown() -> str:
    """The reference page: an index of the commands, then each command's ``--help`` as printed."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from rnnlab.cli import build_parser

        root = build_parser()
        commands = list(_commands(root, ()))
        lines = ["# Command line reference", "",
                 "Generated from the `rnnlab` command's own parser when the documentation is built: "
                 "each section is what `rnnlab ... --help` prints.", "",
                 "| command | what it does |", "|---|---|"]
        for path, _, text in commands:
            name = " ".join(path)
            lines.append(f"| [`rnnlab {name}`](#{_anchor(path)}) | {text} |")
        lines += ["", "## rnnlab", "", "```text", root.format_help().rstrip(), "```", ""]
        for path, parser, _ in commands:
            lines += [f"## rnnlab {' '.join(path)} {{#{_anchor(path)}}}", "", "```text",
                      parser.format_help().rstrip(), "```", ""]
        return "\n".join(lines)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _anchor(path: tuple[str, ...]) -> str:
    return "rnnlab-" + "-".join(path)


def on_files(files, config):  # noqa: ANN001, ANN201 -- MkDocs' hook signature
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=cli_markdown()))
    return files
