"""MkDocs hook: the benchmarks' committed figures (``benchmarks/results/*.png``) served as ``results/*.png``.

The figures stay where the benchmark scripts write them; the build copies them into the
site, so a page links ``../results/NAME.png`` and no second copy is kept under ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def on_files(files, config):  # noqa: ANN001, ANN201 -- MkDocs' hook signature
    from mkdocs.structure.files import File

    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files
