"""A course-private provider (`provider serve --course-pool POOL`): its offer is listed only
for that course, and its agent serves no lease another payer opened to it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentproc import environ
from marketproc import Market, running_market

pytestmark = pytest.mark.slow

POOL = "0x" + "ab" * 32


@pytest.fixture
def market(tmp_path: Path):
    with running_market(tmp_path, "--course-pool", POOL) as m:
        yield m


def test_a_private_offer_is_hidden_and_serves_only_its_course(market: Market) -> None:
    from jupyter_gpumarket.market.index import OfferIndex

    index = OfferIndex(market.devnet.profile, path=market.home / "idx.json")
    index.refresh()
    assert index.offers() == []  # public lists (routing, `gpumarket offers`) do not show it
    (private,) = index.offers(course_pool=POOL)
    assert index.offers(course_pool="0x" + "cd" * 32) == []
    # the market's renter filter finds nothing ...
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('ran')")]
    with environ(market.renter_env), pytest.raises(Exception, match="offer"):
        NotebookClient(nb, kernel_name="gpumarket", timeout=60).execute()
    # ... and a wallet-paid lease asked for by the offer's id is refused by the agent
    env = {**market.renter_env, "GPUMARKET_OFFER": str(private.offer_id)}
    with environ(env), pytest.raises(Exception, match="serves only"):
        NotebookClient(nb, kernel_name="gpumarket", timeout=60).execute()
