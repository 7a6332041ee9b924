"""provisioning.lease_record: the provisioner's writes to the renter's ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jupyter_gpumarket.chain.renter_ledger import NetworkKey, RenterLedger
from jupyter_gpumarket.core.renter_lease_state import RenterEvent
from jupyter_gpumarket.provisioning.lease_record import ProgressWriter, record_ended, record_started


class CountingLedger(RenterLedger):
    """The real ledger, counting the progress statements it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def progress(self, lease_id: str, **kw: Any) -> bool:
        self.writes += 1
        return super().progress(lease_id, **kw)


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CountingLedger:
    monkeypatch.setenv("GPUMARKET_HOME", str(tmp_path / "home"))
    return CountingLedger()


def _lease(ledger: RenterLedger) -> str:
    return ledger.create(
        provider="0x" + "22" * 20,
        channel_id=bytes(range(32)),
        network="devnet",
        renter="0x" + "11" * 20,
        price_per_hour=3600,
        deposit=10_000,
        network_key=NetworkKey(31337, "0x" + "ee" * 20),
    ).id


def test_vouchers_every_second_do_not_write_every_second(ledger: CountingLedger) -> None:
    lease_id = _lease(ledger)
    record_started(ledger, lease_id, 1000.0)
    writer = ProgressWriter(ledger, lease_id, every=3600)
    for second in range(1, 31):  # thirty vouchers in a burst
        writer.write(second, second, 10_000)
    assert ledger.writes == 1  # the first one; the rest wait for the interval
    row = ledger.get(lease_id)
    assert (row.state, row.started_at, row.billed_seconds, row.spent) == ("running", 1000.0, 1, 1)
    often = ProgressWriter(ledger, lease_id, every=0)
    assert often.write(5, 5, 10_000)
    assert not often.write(5, 5, 10_000)  # nothing changed: nothing written
    assert ledger.writes == 2


def test_the_end_of_a_lease_the_chain_closed_first_keeps_the_chains_numbers(
    ledger: CountingLedger,
) -> None:
    lease_id = _lease(ledger)
    record_started(ledger, lease_id, 1000.0)
    ledger.transition(lease_id, RenterEvent.CHAIN_SETTLED, spent=60, refunded=9_940)
    record_ended(ledger, lease_id, billed_seconds=90, spent=90, refunded=9_910)
    record_started(ledger, lease_id, 2000.0)  # late news of a restart: ignored too
    row = ledger.get(lease_id)
    assert (row.state, row.spent, row.refunded, row.started_at) == ("settled", 60, 9_940, 1000.0)
    assert not ProgressWriter(ledger, lease_id, every=0).write(99, 99, 10_000)
    assert ledger.get(lease_id).spent == 60
