"""Every notebook runs top to bottom (nbclient, a real kernel).

The CPU notebooks run as written. The GPU notebook (02) runs with its ``parameters`` cell followed by an
injected cell that points it at a tiny SD pipeline and a tiny ImageReward checkpoint built here, so its
code is exercised end to end without a hub or a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from fkdiff.testing import tiny_imagereward_checkpoint, tiny_sd_pipeline

    root = tmp_path_factory.mktemp("nb-models")
    tiny_sd_pipeline(sample_size=32).save_pretrained(root / "sd")
    tiny_imagereward_checkpoint(root / "imagereward")
    return root


def overrides(name: str, models: Path) -> str | None:
    if name.startswith("02-"):
        return (
            f"MODEL = {str(models / 'sd')!r}\nIMAGEREWARD = {str(models / 'imagereward')!r}\n"
            "PROMPTS = ['a cat', 'a dog']\nK, STEPS, GUIDANCE = 2, 3, 3.0\n"
            "DEVICE, DTYPE = 'cpu', torch.float32"
        )
    return None


def run_notebook(path: Path, injected: str | None, workdir: Path):
    book = nbformat.read(path, as_version=4)
    if injected:
        at = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
        book.cells.insert(at + 1, nbformat.v4.new_code_cell(injected))
    env_backup = dict(os.environ)
    os.environ["MPLBACKEND"] = "Agg"
    try:
        nbclient.NotebookClient(
            book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return book


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_top_to_bottom(name, tiny_models, tmp_path):
    book = run_notebook(NOTEBOOKS / name, overrides(name, tiny_models), tmp_path)
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert sum(c.cell_type == "code" for c in book.cells) >= 3


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        book = json.loads(path.read_text())
        for cell in book["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name
