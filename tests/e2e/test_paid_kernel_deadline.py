"""Issue 16 item 8, the last part: a paid lease that never starts a kernel frees its slot.

A renter with a real channel holds a lease on a one-slot paid provider and never starts a
kernel, keeping the lease busy with small file-sync requests (each used to reset the lease's
idle clock, so only a 600 s floor ended it). Another renter is refused while the slot is held;
once the provider's kernel deadline (``--kernel-deadline``, 6 s here) passes, the lease ends
with a notice saying why and the other renter gets the slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from paidclient import Linked, Refused, open_channel, paid_hello

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.frames import Channel

from marketproc import Market, running_market

pytestmark = pytest.mark.slow

DEPOSIT = 20_000  # marketproc's price (1,000/s): ten voucher intervals
KERNEL_DEADLINE = 6.0
HANG = 60.0  # detects a lease that is never ended (the old floor was 600 s)
SHA = hashlib.sha256(b"x").hexdigest()


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(
        tmp_path_factory.mktemp("deadline"),
        "--max-kernels", "1", "--kernel-deadline", str(KERNEL_DEADLINE),
    ) as m:  # fmt: skip
        yield m


def _dev(i: int) -> Any:
    from jupyter_gpumarket.chain.dev_accounts import dev_account

    return dev_account(i)


def _provider() -> str:
    return str(_dev(1).address)


async def _keep_busy(holder: Linked) -> list[Any]:
    """Small file-sync requests every half second until the agent ends the lease; the
    notices it sent (the link's end is the return)."""
    notices: list[Any] = []
    offer = control.SyncOffer(manifest={"files": {"a.txt": [1, SHA, 1]}})

    async def reader() -> None:
        while True:
            delivery = holder.session.receive(await holder.ws.recv())
            if delivery is not None and delivery.channel is Channel.AGENT:
                msg = control.parse_agent_message(delivery.parts[0])
                if isinstance(msg, paymsgs.PaymentNotice):
                    notices.append(msg)

    read = asyncio.ensure_future(reader())
    try:
        while not read.done():
            await holder.ws.send(holder.session.send(Channel.AGENT, [control.dump(offer)]))
            await asyncio.wait([read], timeout=0.5)
    finally:
        read.cancel()
    return notices


def test_a_lease_that_never_starts_a_kernel_frees_its_slot(market: Market) -> None:
    url = market.ready["url"]
    held = open_channel(market.devnet.profile, _dev(7), _provider(), DEPOSIT)
    other = open_channel(market.devnet.profile, _dev(8), _provider(), DEPOSIT)

    async def attack() -> tuple[Any, list[Any], float, Any]:
        async with paid_hello(url, *held) as holder:
            assert isinstance(holder, Linked), holder
            start = time.monotonic()
            busy = asyncio.ensure_future(_keep_busy(holder))
            await asyncio.sleep(1)
            async with paid_hello(url, *other) as refused:  # the only slot is held
                pass
            notices = await asyncio.wait_for(busy, HANG)
            ended_after = time.monotonic() - start
        async with paid_hello(url, *other) as got:
            if isinstance(got, Linked):
                await got.ws.close()
        return refused, notices, ended_after, got

    refused, notices, ended_after, got = asyncio.run(attack())
    assert isinstance(refused, Refused), refused
    assert refused.code == CloseCode.CAPACITY, refused
    assert ended_after >= KERNEL_DEADLINE - 1  # ended by the deadline, not by a refusal
    assert any(
        n.level == "stop" and "no kernel was started in this lease" in n.message for n in notices
    ), notices
    assert isinstance(got, Linked), f"the slot was not freed: {got}"
