"""notebooks/course-educator.ipynb and course-student.ipynb, executed against a devnet with a
real provider; their outputs are checked (what CI runs for the course notebooks)."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentproc import environ
from marketproc import Market, running_market

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture
def market(tmp_path: Path):
    with running_market(tmp_path, "--relay-fee", "1000") as m:
        yield m


def _run(name: str, env: dict[str, str], cwd: Path) -> str:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    with environ(env):
        NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(cwd)}}).execute()
    return _outputs(nb)


def _outputs(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o["output_type"] != "error", o
            out.append(o.get("text", ""))
    return "".join(out)


def test_the_course_notebooks_run_end_to_end(market: Market, tmp_path: Path) -> None:
    from jupyter_gpumarket.chain.dev_accounts import dev_account
    from jupyter_gpumarket.chain.keystore import create_keystore

    create_keystore("edu", private_key=dev_account(3).key, path=tmp_path / "edu.json")
    edu_env = {
        "GPUMARKET_HOME": str(tmp_path / "educator"),
        "GPUMARKET_NETWORK": str(market.profile),
        "GPUMARKET_WALLET": str(tmp_path / "edu.json"),
        "GPUMARKET_WALLET_PASSWORD": "edu",
        "COURSE_NAME": "nb-course",
    }
    # the educator's notebook up to its report; the student joins; then the educator closes
    edu = nbformat.read(NOTEBOOKS / "course-educator.ipynb", as_version=4)
    client = NotebookClient(edu, timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    with environ(edu_env), client.setup_kernel():
        for i, cell in enumerate(edu.cells[:-2]):
            client.execute_cell(cell, i)
        with (tmp_path / "codes.csv").open() as fh:
            ada = next(csv.DictReader(fh))
        student_env = {
            "GPUMARKET_HOME": str(tmp_path / "ada"),
            "GPUMARKET_NETWORK": str(market.profile),
            "GPUMARKET_WALLET": str(tmp_path / "ada" / "wallet.json"),
            "GPUMARKET_WALLET_PASSWORD": "ada",
            "GPUMARKET_GRANT": ada["code"],
        }
        student = _run("course-student.ipynb", student_env, tmp_path)
        for i, cell in enumerate(edu.cells[-2:], start=len(edu.cells) - 2):
            client.execute_cell(cell, i)
    out = _outputs(edu)
    assert "course nb-course pool 0x" in out
    assert "codes issued: 3" in out
    assert "student\taddress\tcap\tspent\tremaining\tleases\tseconds" in out
    assert "returned 30000000 base units; still held by running leases: 0" in out
    assert "(new)" in student
    assert "credit    5000000 of 5000000 base units left" in student
    assert "offer     1 " in student
    assert "GPU Market kernel installed: True" in student
