"""The research tutorial runs top to bottom under papermill with a real kernel, on the sample set, with a tiny model."""

from __future__ import annotations

import nbformat
import papermill as pm
import pytest
from conftest import ROOT

from morningstar_trader.runs import ipc_kernel_manager

TUTORIAL = ROOT / "nbs" / "tutorials" / "research.ipynb"


@pytest.mark.slow
def test_the_research_tutorial_runs_top_to_bottom(tmp_path):
    out = tmp_path / "research.ipynb"
    pm.execute_notebook(
        str(TUTORIAL),
        str(out),
        parameters={"data_dir": str(tmp_path / "data"), "days": 90, "epochs": 2},
        cwd=str(tmp_path),
        progress_bar=False,
        kernel_manager_class=ipc_kernel_manager(),
    )
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    assert any(
        "excess_return_vs_buy_hold" in o.get("data", {}).get("text/html", "") for o in outputs
    )  # the comparison table
    assert (tmp_path / "data" / "processed" / "synthetic").is_dir()
