"""The notebook guide (docs/guides/notebook.ipynb) runs top to bottom in a Jupyter kernel, on a tiny budget."""

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "guides" / "notebook.ipynb"


@pytest.mark.slow
def test_the_notebook_guide_runs_and_shows_its_figures(tmp_path, monkeypatch):
    nb = nbformat.read(shutil.copy(NOTEBOOK, tmp_path / "notebook.ipynb"), as_version=4)
    for cell in nb.cells:  # the stored outputs are the docs' copy: run from nothing
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    monkeypatch.setenv("RNNLAB_NOTEBOOK_BUDGET", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's run folder, removed by its last cell
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "execute_result" and "image/png" in o.data]
    assert len(figures) == 2  # the run's curves and the gradient norms, each a returned Figure
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "bits per character" in text and "\ndef " in text
    assert not list(tmp_path.glob("rnnlab-notebook-*"))  # the run folder is gone
