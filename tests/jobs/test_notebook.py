"""notebooks/ded_interactive.ipynb runs top to bottom against a real head's Ray client server (ray://):
the head the job tests use (conftest.py).

The notebook's parameter cell is replaced (as papermill would) with this head's client address and a run
root in a temp dir; the kernel gets the head's auth token through its environment.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from cluster_head import REPO

from ded_ray import plan

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

NOTEBOOK = REPO / "notebooks" / "ded_interactive.ipynb"


def parameter_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged `parameters`"
    return tagged[0]


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.extend(str(v) for k, v in out.get("data", {}).items() if k == "text/plain")
    return "".join(parts)


def test_notebook_runs_on_the_cluster_through_ray_client(head, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = parameter_cell(nb)
    nb.cells[index].source = "\n".join([
        f"ADDRESS = {head.client_address!r}",
        f"RUN_ROOT = {str(tmp_path)!r}",
        "RUN_NAME = 'notebook'",
        "CONFIG = 'cluster-test.yaml'",
        "OVERRIDES = ['rollout.samples_per_question=4', 'curate.diversity.per_question=2', "
        "'curate.pass_rate.enabled=false']",
    ])
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute(env=head.env())  # raises CellExecutionError on the first failing cell
    except CellExecutionError as exc:
        raise AssertionError(f"{exc}\n\nThe head's Ray client server logs:\n{head.client_server_logs()}") from None

    text = "\n".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert "connected to Ray" in text
    assert "6 problems" in text
    assert "24 trajectories:" in text  # 6 problems x 4 samples, all accounted for by the funnel
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the distance plot was not drawn"

    # The work happened on the cluster side: the run directory holds the stages and the corpus.
    run = tmp_path / "notebook"
    for stage in (plan.PROBLEMS, plan.ROLLOUT, plan.CORRECTNESS, *plan.QUALITY_FILTERS, plan.DIVERSITY, plan.MIX):
        assert (run / stage.folder / "_SUCCESS").exists(), stage.folder
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["funnel"]["total"] == 24
    assert manifest["corpus"]["rows"] > 0
