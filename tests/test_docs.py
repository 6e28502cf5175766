"""The documentation's generated command-line reference (docs/hooks/cli_reference.py)."""

import argparse
import importlib.util
from pathlib import Path

from rnnlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_parsers(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _all_parsers(sub, (*path, name))


def test_the_cli_reference_has_every_command_and_option_of_the_parser():
    page = _hook().cli_markdown()
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 15  # train, sample, ..., and the actions of ngram, classify, data, tasks, scratch
    for path, parser in parsers:
        name = " ".join(path)
        head = f"## rnnlab {name} {{#rnnlab-{'-'.join(path)}}}"
        assert head in page, name
        section = page.split(head, 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in section, (name, flag)


def test_the_cli_reference_is_the_same_at_any_terminal_width(monkeypatch):
    hook = _hook()
    monkeypatch.setenv("COLUMNS", "40")
    narrow = hook.cli_markdown()
    monkeypatch.setenv("COLUMNS", "200")
    assert hook.cli_markdown() == narrow
    import os

    assert os.environ["COLUMNS"] == "200"  # restored
