"""The API reference's docstring markup (docs/hooks/sphinx_markup.py): Sphinx roles become optional
cross-references to the right identifiers, maths becomes MathML, and no docstring of the package keeps either
as raw text."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("latex2mathml")
griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).resolve().parents[1]
RAW = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|math):`|\.\. math::")


def _hook():
    spec = importlib.util.spec_from_file_location("sphinx_markup", ROOT / "docs" / "hooks" / "sphinx_markup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_become_cross_references_to_their_identifiers():
    convert = _hook().convert
    out = convert("See :class:`~rnnlab.nn.cells.Cell`, :func:`rnnlab.train.train`, :meth:`step`, :data:`KINDS`, "
                  ":func:`the engine <rnnlab.engine.run_job>`, :class:`RunConfig` and :mod:`torch.nn`.",
                  where="rnnlab.checkpoint", in_class="rnnlab.checkpoint.Checkpoint",
                  imported={"RunConfig": "rnnlab.config.RunConfig"})
    refs = re.findall(r'<autoref identifier="([^"]+)" optional><code>([^<]+)</code></autoref>', out)
    assert refs == [("rnnlab.nn.cells.Cell", "Cell"), ("rnnlab.train.train", "rnnlab.train.train()"),
                    ("rnnlab.checkpoint.Checkpoint.step", "step()"), ("rnnlab.checkpoint.KINDS", "KINDS"),
                    ("rnnlab.engine.run_job", "the engine"), ("rnnlab.config.RunConfig", "RunConfig"),
                    ("torch.nn", "torch.nn")]
    assert not RAW.search(out)


def test_maths_becomes_mathml_inline_and_aligned_blocks():
    convert = _hook().convert
    out = convert("The state :math:`h_t` is\n\n.. math::\n    i_t &= \\sigma(z) \\\\\n    h_t &= o_t\n\nafter.")
    inline, block = re.findall(r"<math [^>]*display=\"(\w+)\"", out)[:2], out.split("\n")
    assert inline == ["inline", "block"]
    assert "<msub><mi>h</mi><mi>t</mi></msub>" in out and out.count("<mtr>") == 2  # two aligned rows
    assert block[-1] == "after." and "\n\n<math" in out  # a paragraph of its own
    assert not RAW.search(out)


def test_no_docstring_of_the_package_keeps_raw_markup():
    convert = _hook().convert
    package = griffe.load("rnnlab", search_paths=[str(ROOT)], resolve_aliases=False)
    seen = 0

    def walk(obj):
        nonlocal seen
        if obj.is_alias:
            return
        if obj.docstring is not None:
            seen += 1
            where = obj.path if obj.is_module else obj.module.path
            assert not RAW.search(convert(obj.docstring.value, where)), obj.path
        for member in obj.members.values():
            walk(member)

    walk(package)
    assert seen > 300
