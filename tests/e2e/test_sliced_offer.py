"""A sliced provider's offer on a devnet: a paid agent with `--simulate-gpu H100 --slices 4`
registers its slice in the Registry (metadata; no contract change) and `gpumarket offers`
(the real CLI) shows it plainly, priced per slice, filtered by the slice's VRAM; a whole-GPU
offer next to it has ``slice: null``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from marketfleet import Fleet, running_fleet

from jupyter_gpumarket.core.offer_meta import parse_offer_metadata

pytestmark = pytest.mark.slow

SPECS = {
    "quarter": (3, 700_000, "eu", ("--simulate-gpu", "H100", "--slices", "4")),
    "whole": (4, 2_500_000, "eu", ("--simulate-gpu", "H100")),
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("sliced-offer"), SPECS) as f:
        yield f


def offers(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    out = fleet.cli("offers", "--json", "--timeout", "10", *args)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_the_offer_states_its_slice_and_the_market_shows_it(fleet: Fleet) -> None:
    quarter_id = fleet.agents["quarter"].offer_id
    raw = fleet.contracts().registry.functions.offers(quarter_id).call()
    meta = parse_offer_metadata(raw[9])
    assert meta["slice"] == "1/4"
    assert meta["simulated"] == "1"
    assert raw[4] == 1  # gpu_count: a slice is of one GPU
    gpu_vram = raw[5]  # the whole GPU's, as before
    assert int(meta["slice_vram"]) == gpu_vram // 4

    listed = {o["id"]: o for o in offers(fleet)}
    q, w = listed[quarter_id], listed[fleet.agents["whole"].offer_id]
    assert q["slice"]["share"] == "1/4"
    assert q["slice"]["vram_mib"] == gpu_vram // 4
    assert q["slice"]["mig_profile"] is None
    assert q["slice"]["label"].startswith("1/4 of an H100")
    assert q["slice"]["label"].endswith(f"{gpu_vram / 4 / 1024:.0f} GB")
    assert q["price_per_hour"] == 700_000  # the price of one slice
    assert q["vram_mib"] == gpu_vram  # an existing key keeps its meaning
    assert q["free_kernels"] is not None
    assert w["slice"] is None

    # a renter who needs more than a slice's VRAM is not offered the slice
    big = {o["id"]: o for o in offers(fleet, "--min-vram", str(gpu_vram // 2))}
    assert quarter_id not in big  # outside the constraints: dropped
    assert big[fleet.agents["whole"].offer_id]["usable"]

    table = fleet.cli("offers", "--timeout", "10")
    assert table.returncode == 0, table.stderr
    assert "1/4 of an H100" in table.stdout
