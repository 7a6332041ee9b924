"""server.recovery_plan.RecoveryPlanner: which leases the server recovers, when (no I/O)."""

from __future__ import annotations

import dataclasses

import pytest

from jupyter_gpumarket.chain.renter_ledger import LeaseRecord
from jupyter_gpumarket.exceptions import ConfigError
from jupyter_gpumarket.server.recovery_plan import RecoveryPlanner, lease_in_use

NOW = 1_000_000.0
URL = "wss://gpu.example:8443"


def lease(lease_id: str = "a1", state: str = "stopped", **kw) -> LeaseRecord:
    fields = {
        "id": lease_id,
        "offer_id": 1,
        "provider": "0x" + "22" * 20,
        "provider_url": URL,
        "network": "devnet",
        "renter": "0x" + "11" * 20,
        "channel_id": "0x" + "ab" * 32,
        "state": state,
        "created_at": NOW - 7200,
        "started_at": None,
        "ended_at": None,
        "billed_seconds": 0,
        "price_per_hour": 3_600_000,
        "deposit": 5_000_000,
        "spent": 10_000,
        "refunded": 0,
        "close_at": None,
        "owner_pid": 4242,
    }
    return LeaseRecord(**{**fields, **kw})


def never(_record: LeaseRecord) -> bool:
    return False


@pytest.mark.parametrize(
    ("state", "owner_alive", "kernel", "in_use"),
    [
        ("open", True, None, True),  # its server is starting or running the kernel
        ("running", True, None, True),
        ("open", False, "pays from it", True),  # re-adopted (or being re-adopted) by a server
        ("open", False, "same provider", True),  # a kernel there that says nothing of channels
        ("open", False, "pays another", False),  # another lease's kernel on the same provider
        ("open", False, None, False),  # its server crashed and nobody took the kernel back
        ("running", False, None, False),
        ("stopped", True, "pays from it", False),  # over on the renter's side whatever runs
        ("closing", True, "pays from it", False),
    ],
)
def test_a_lease_is_in_use_while_its_kernel_may_run(
    state: str, owner_alive: bool, kernel: str | None, in_use: bool
) -> None:
    record = lease(state=state)
    channels = {
        "pays from it": {record.channel_id},
        "pays another": {"0x" + "cd" * 32},
    }.get(kernel or "", set())
    urls = {URL} if kernel == "same provider" else set()
    live = {4242} if owner_alive else {1}
    got = lease_in_use(record, live_pids=live, busy_channels=channels, busy_urls=urls)
    assert got is in_use


def test_a_lease_recorded_before_owners_counts_as_ownerless() -> None:
    record = lease(state="open", owner_pid=None, provider_url=None)
    assert not lease_in_use(record, live_pids={4242}, busy_channels=set(), busy_urls={URL})


def test_statuses_follow_the_table() -> None:
    planner = RecoveryPlanner(settle_grace=600)
    assert planner.status(lease(state="settled"), now=NOW, in_use=False).status == "final"
    assert planner.status(lease(state="open"), now=NOW, in_use=True).status == "in_use"
    waiting = planner.status(lease(ended_at=NOW - 60), now=NOW, in_use=False)
    assert (waiting.status, waiting.next_at) == ("waiting", NOW + 540)
    assert planner.status(lease(ended_at=NOW - 600), now=NOW, in_use=False).status == "due"
    assert planner.status(lease(ended_at=None), now=NOW, in_use=False).status == "due"
    assert planner.status(lease(state="open"), now=NOW, in_use=False).status == "due"
    closing = planner.status(lease(state="closing", close_at=int(NOW) + 99), now=NOW, in_use=False)
    assert (closing.status, closing.next_at) == ("closing", NOW)  # not looked at yet: now


def test_only_due_leases_are_stepped_and_the_next_wake_is_the_earliest_plan() -> None:
    planner = RecoveryPlanner(settle_grace=600)
    records = [
        lease("due1", ended_at=NOW - 3600),
        lease("wait", ended_at=NOW - 100),
        lease("used", state="open"),
        lease("done", state="withdrawn"),
        lease("due2", state="open"),
    ]

    def in_use(r: LeaseRecord) -> bool:
        return r.id == "used"

    assert [r.id for r in planner.due(records, now=NOW, in_use=in_use)] == ["due1", "due2"]
    # the steps: due1's close is requested (withdraw at close_at), due2 was settled already
    records[0] = lease("due1", state="closing", close_at=int(NOW) + 300)
    records[4] = lease("due2", state="settled")
    planner.stepped(records[0], now=NOW, chain_now=int(NOW))
    planner.stepped(records[4], now=NOW, chain_now=None)
    assert planner.due(records, now=NOW, in_use=in_use) == []
    # "wait" waits for the settle grace (NOW + 500), due1 for close_at + margin (NOW + 302)
    assert planner.next_at(records, now=NOW, in_use=in_use) == NOW + 302
    assert [r.id for r in planner.due(records, now=NOW + 302, in_use=in_use)] == ["due1"]
    assert [r.id for r in planner.due(records, now=NOW + 500, in_use=in_use)] == ["due1", "wait"]
    assert planner.due(records, now=NOW + 10**6, in_use=lambda r: True) == []
    assert planner.next_at(records[2:4], now=NOW, in_use=in_use) is None  # nothing planned


def test_close_at_counts_in_chain_time_and_is_looked_at_again_within_the_cap() -> None:
    planner = RecoveryPlanner(settle_grace=0, retry_cap=600, withdraw_margin=2)
    closing = lease(state="closing", close_at=5_000)
    # the chain's clock is 4,990 while ours says NOW: withdraw in 10 s (+2), not at close_at
    planner.stepped(closing, now=NOW, chain_now=4_990)
    assert planner.status(closing, now=NOW, in_use=False).next_at == NOW + 12
    planner.stepped(dataclasses.replace(closing, close_at=4_990 + 86_400), now=NOW, chain_now=4_990)
    assert planner.status(closing, now=NOW, in_use=False).next_at == NOW + 600  # capped
    planner.stepped(closing, now=NOW, chain_now=9_999)  # already past: soon
    assert planner.status(closing, now=NOW, in_use=False).next_at == NOW + 2


def test_failures_back_off_exponentially_up_to_the_cap_and_reset_on_success() -> None:
    planner = RecoveryPlanner(settle_grace=0, retry_base=5, retry_cap=60)
    record = lease()
    delays = [planner.failed(record.id, "rpc down", now=NOW) for _ in range(6)]
    assert delays == [5, 10, 20, 40, 60, 60]
    status = planner.status(record, now=NOW, in_use=False)
    assert (status.status, status.next_at, status.error) == ("retrying", NOW + 60, "rpc down")
    assert planner.due([record], now=NOW + 59, in_use=never) == []
    assert planner.due([record], now=NOW + 60, in_use=never) == [record]
    planner.stepped(dataclasses.replace(record, state="withdrawn"), now=NOW, chain_now=None)
    assert planner.failed(record.id, "again", now=NOW) == 5


def test_a_retrying_lease_that_became_in_use_is_left_alone() -> None:
    planner = RecoveryPlanner(settle_grace=0)
    record = lease(state="open")
    planner.failed(record.id, "rpc down", now=NOW)
    assert planner.due([record], now=NOW + 3600, in_use=lambda r: True) == []


def test_forgotten_leases_lose_their_backoff() -> None:
    planner = RecoveryPlanner(settle_grace=0, retry_base=5)
    planner.failed("a1", "x", now=NOW)
    planner.failed("b2", "x", now=NOW)
    planner.forget_except({"b2"})
    assert planner.failed("a1", "x", now=NOW) == 5
    assert planner.failed("b2", "x", now=NOW) == 10


def test_bad_delays_are_refused() -> None:
    with pytest.raises(ConfigError, match="retry_cap >= retry_base"):
        RecoveryPlanner(retry_base=10, retry_cap=5)
    with pytest.raises(ConfigError, match="settle_grace=-1"):
        RecoveryPlanner(settle_grace=-1)
