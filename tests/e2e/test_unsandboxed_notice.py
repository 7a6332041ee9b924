"""An unsandboxed offer's warning reaches the notebook itself, not only the server's log."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentproc import environ
from marketproc import running_market

pytestmark = pytest.mark.slow


def test_the_first_cell_of_an_unsandboxed_lease_shows_the_warning(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print('first')"),
        nbformat.v4.new_code_cell("print('second')"),
    ]
    with running_market(tmp_path) as market, environ(market.renter_env):
        NotebookClient(nb, kernel_name="gpumarket", timeout=120).execute()
    first = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    second = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    offer = market.ready["offer_id"]
    assert f"offer {offer} is UNSANDBOXED" in first
    assert "do not put secrets in this kernel" in first
    assert "first" in first
    assert "UNSANDBOXED" not in second  # told once, not on every cell
    assert second.strip() == "second"
