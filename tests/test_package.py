"""rnnlab as an installable package: the wheel's contents and requirements, and a library that does not print."""

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rnnlab import cli
from rnnlab.nn import kernels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def library_logger():
    """The "rnnlab" logger as it was before the test (the CLI adds its handler to it)."""
    from rnnlab.cli import _LibraryNotes

    lib = logging.getLogger("rnnlab")
    handlers, level = list(lib.handlers), lib.level
    lib.handlers[:] = [h for h in handlers if not isinstance(h, _LibraryNotes)]  # an earlier command's, in this process
    yield lib
    lib.handlers[:] = handlers
    lib.setLevel(level)


def test_the_kernel_build_is_logged_not_printed(tmp_path, monkeypatch, capsys, caplog, library_logger):
    if kernels.why_not() is not None:
        pytest.skip(f"the kernels cannot be built here: {kernels.why_not()}")
    from torch.utils import cpp_extension

    built = []
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path))  # an empty cache: a build is announced
    monkeypatch.setattr(cpp_extension, "load", lambda name, *a, **kw: built.append(kw["build_directory"]))
    with caplog.at_level(logging.INFO, logger="rnnlab.nn.kernels"):
        kernels._load()
    assert built == [str(kernels.build_directory())]
    assert capsys.readouterr() == ("", "")  # nothing printed by the library
    (record,) = [r for r in caplog.records if r.name == "rnnlab.nn.kernels"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"building the fused CPU recurrences once (about 15 s) in {built[0]}"


def test_the_command_line_shows_the_library_notes_as_one_line(capsys, library_logger):
    assert cli.main(["data", "list"]) == 0
    capsys.readouterr()
    logging.getLogger("rnnlab.nn.kernels").info("building the fused CPU recurrences once (about 15 s) in %s", "/x")
    assert capsys.readouterr().err == "rnnlab: building the fused CPU recurrences once (about 15 s) in /x\n"
    assert cli.main(["data", "list"]) == 0  # a second call adds no second handler
    logging.getLogger("rnnlab.nn.kernels").info("note")
    assert capsys.readouterr().err == "rnnlab: note\n"


@pytest.mark.slow
def test_the_wheel_holds_the_page_and_the_kernel_source_and_asks_for_a_torch_range(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "rnnlab", src / "rnnlab", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("rnnlab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {"rnnlab/web/index.html", "rnnlab/nn/csrc/recurrences.cpp", "rnnlab/cli/__init__.py"} <= names
    lab_page = {f"rnnlab/web/lab/{f.name}" for f in (src / "rnnlab" / "web" / "lab").iterdir()}
    assert {"rnnlab/web/lab/index.html", "rnnlab/web/lab/lab.js", "rnnlab/web/lab/lab.css"} <= lab_page <= names
    assert {"rnnlab/lab/__init__.py", "rnnlab/lab/sections/train.py"} <= names
    assert not any("tests/" in n or "benchmarks/" in n for n in names)
    torch_req = [line for line in meta.splitlines() if line.startswith("Requires-Dist: torch")]
    assert torch_req == ["Requires-Dist: torch>=2.6"], torch_req  # a range, no exact pin, no upper bound
    assert "rnnlab = rnnlab.cli:main" in entry


def test_the_exact_torch_pin_lives_in_the_constraints_file_only():
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert "torch==2.13.0" in constraints
    assert "torch==" not in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "-c constraints.txt" in (ROOT / "scripts" / "setup").read_text(encoding="utf-8")
