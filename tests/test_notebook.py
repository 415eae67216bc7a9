"""The tutorial notebook runs top to bottom (with tiny budgets), so it never goes stale."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QITER_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Run in a temporary folder: the notebook writes data, runs and videos next to itself.
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert (tmp_path / "data" / "CartPole-v1_data.npz").exists()
    assert (tmp_path / "logs" / "videos" / "DQN_CartPole-v1.mp4").exists()
    assert any((tmp_path / "runs" / "notebook-double-nstep" / "checkpoints").iterdir())
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]


def test_tutorial_notebook_starts_with_tabular_q_learning() -> None:
    """The tutorials start with tabular Q-learning: so does the notebook, before any FQI or DQN cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    first_tabular = next(i for i, src in enumerate(code) if "q_learning(" in src)
    first_fqi = next(i for i, src in enumerate(code) if "fitted_q_iteration(" in src)
    assert first_tabular < first_fqi
    assert any("value_iteration(" in src for src in code[:first_fqi])
