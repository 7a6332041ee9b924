"""The verification ladder's upper rungs from real evidence, on a devnet fleet of real agents:
`gpumarket offers verify` keeps its verdict and `gpumarket offers --json` shows the offer
``challenged``; a paid lease through the real provisioner ends, the provider settles, the
renter's client rates it on chain (once, in the background) and the offer becomes ``attested``
with a higher reputation. Attested events that Escrow.attest could not have made are skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from marketfleet import RENTER, Fleet, running_fleet

from jupyter_gpumarket.exceptions import ConfigError

from agentproc import environ

pytestmark = pytest.mark.slow

SPECS = {"cpu": (1, 1_000_000, "eu", ())}
HANG = 120.0  # detects a rating that never comes


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("attest"), SPECS) as f:
        f.ids = {name: a.offer_id for name, a in f.agents.items()}
        yield f


def _row(fleet: Fleet, offer_id: int) -> dict[str, Any]:
    out = fleet.cli("offers", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    return rows[offer_id]


def _attested_channels(fleet: Fleet) -> list[Any]:
    c = fleet.contracts()
    return list(c.escrow.events.Attested().get_logs(from_block=0))


def test_verify_then_a_paid_lease_move_the_offer_up_the_ladder(fleet: Fleet) -> None:
    from jupyter_client.manager import KernelManager

    offer_id = fleet.ids["cpu"]
    first = _row(fleet, offer_id)
    assert first["verification"] in ("self-reported", "detected"), first

    verified = fleet.cli("offers", "verify", str(offer_id), "--json", timeout=180)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["verdict"] == "cpu"
    challenged = _row(fleet, offer_id)
    assert challenged["verification"] == "challenged", challenged

    rate = {"GPUMARKET_ATTEST": "1"}  # tests/conftest.py turns ratings off elsewhere
    with environ({**fleet.renter_env, "GPUMARKET_OFFER": str(offer_id), **rate}):
        km = KernelManager(kernel_name="gpumarket")
        km.start_kernel()
        try:
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive("import time; time.sleep(3)", timeout=60)
            assert reply["content"]["status"] == "ok"
            kc.stop_channels()
        finally:
            km.shutdown_kernel(now=False)
    deadline = time.monotonic() + HANG
    while not (events := _attested_channels(fleet)):
        assert time.monotonic() < deadline, "the renter never rated the lease"
        time.sleep(1)
    (event,) = events
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    assert event["args"]["renter"] == dev_account(RENTER).address
    assert event["args"]["score"] == 100
    assert event["args"]["paid"] > 0
    time.sleep(3)
    assert len(_attested_channels(fleet)) == 1  # rated once

    attested = _row(fleet, offer_id)
    assert attested["verification"] == "attested", attested
    assert attested["reputation"] > challenged["reputation"]
    assert set(first) <= set(attested)  # the --json keys stay


def _log(renter: str, provider: str, paid: int, score: int, tflops: int, **kw: Any) -> dict:
    def topic(addr: str) -> bytes:
        return bytes(12) + bytes.fromhex(addr[2:])

    data = b"".join(v.to_bytes(32, "big") for v in (paid, score, tflops))
    entry = {"topics": [b"\x01" * 32, b"\x02" * 32, topic(renter), topic(provider)], "data": data}
    entry.update(kw)
    return entry


RENTER_ADDR = "0x" + "aa" * 20
PROVIDER_ADDR = "0x" + "bb" * 20


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (_log(RENTER_ADDR, PROVIDER_ADDR, 10, 101, 0), "score"),
        (_log(RENTER_ADDR, PROVIDER_ADDR, 10, 2**255, 0), "score"),
        (_log(RENTER_ADDR, PROVIDER_ADDR, 10, 90, 2_000_001), "measured_tflops_x100"),
        (_log(RENTER_ADDR, PROVIDER_ADDR, 2**200, 90, 0), "paid"),
        (_log(RENTER_ADDR, PROVIDER_ADDR, 10, 90, 0, data=b"\x00" * 95), "data bytes"),
        (_log(RENTER_ADDR, PROVIDER_ADDR, 10, 90, 0, topics=[b"\x01" * 32] * 3), "topics"),
        ({"topics": [b"\x01" * 32] * 2 + [b"\xff" * 32, b"\x00" * 32], "data": b""}, "topics"),
        ({"nothing": 1}, "not an event log"),
    ],
)
def test_attested_events_escrow_attest_could_not_make_are_refused(entry: Any, why: str) -> None:
    from jupyter_gpumarket.market.attestations import decode_attested

    with pytest.raises(ConfigError, match=why):
        decode_attested(entry)


def test_a_well_formed_attested_event_decodes(tmp_path: Path) -> None:
    from jupyter_gpumarket.market.attestations import decode_attested

    a = decode_attested(_log(RENTER_ADDR, PROVIDER_ADDR, 10, 90, 2_000_000))
    assert (a.renter, a.provider, a.paid, a.score, a.measured_tflops) == (
        RENTER_ADDR, PROVIDER_ADDR, 10, 90, 20_000.0,
    )  # fmt: skip
