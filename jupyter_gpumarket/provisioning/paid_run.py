"""A paid kernel's billing while it runs, on the tunnel loop: start at ready, stream a voucher
every interval (topping the channel up when allowed), stop at the budget, send the last voucher
at the end. The lease itself (state, signing, records) is :class:`.paid.PaidLease`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.core import paymsgs

if TYPE_CHECKING:  # the payment stack (web3, eth-*) loads only with a paid lease
    from jupyter_gpumarket.provisioning.paid import PaidLease

__all__ = ["PaidRun", "stream_vouchers"]


async def _top_up(lease: PaidLease, amount: int, send: Any, notice: Any) -> None:
    from jupyter_gpumarket.exceptions import GpuMarketError

    notice(f"[gpumarket] topping up the channel by {amount} base units (auto top-up)")
    try:
        tx_hash = await asyncio.to_thread(lease.top_up, amount)
    except GpuMarketError as exc:
        notice(f"[gpumarket] top-up failed (retried at the next voucher): {exc}")
        return
    send(paymsgs.DepositChanged(tx_hash=tx_hash))
    notice(f"[gpumarket] channel topped up: deposit now {lease.deposit} base units")


async def stream_vouchers(lease: PaidLease, send: Any, notice: Any, stop: Any) -> None:
    """Every interval: sign and send what is due; top up when allowed and low; warn at 80 %;
    stop at the budget."""
    top_ups: set[asyncio.Task[None]] = set()
    pay_now = lease.resumed  # a re-adopted kernel's vouchers are late already: catch up first
    await asyncio.to_thread(lease.record_started, time.time())
    while True:
        if not pay_now:
            await asyncio.sleep(lease.schedule.interval)
        pay_now = False
        voucher, warn, stop_message, top_up = lease.tick()
        if top_up:
            task = asyncio.ensure_future(_top_up(lease, top_up, send, notice))
            top_ups.add(task)
            task.add_done_callback(top_ups.discard)
        if voucher is not None:
            send(voucher)
            lease.vouchers_sent += 1
            await asyncio.to_thread(lease.record_progress)
        if warn:
            notice(f"[gpumarket] {warn}")
        if stop_message:
            notice(f"[gpumarket] {stop_message}")
            stop()
            return


class PaidRun:
    """Glue between a PaidLease and its link, on the tunnel loop: billing starts when the
    provider reports the kernel started (its sockets are up and it answers kernel_info; the
    provider's clock starts at the same moment, so both sides count the same seconds, even
    when no front end connects for a while), vouchers stream every interval, the last one goes
    out at the end."""

    def __init__(self, lease: PaidLease) -> None:
        self.lease = lease
        self.link: Any = None
        self._notice: Any = lambda text: None
        self._waiting_ready = True
        self._task: asyncio.Task[None] | None = None

    @property
    def ever_ready(self) -> bool:
        """Whether a kernel of this lease ever answered (billing started)."""
        return self._task is not None

    def bind(self, link: Any, notice: Any) -> None:
        self.link, self._notice = link, notice

    def kernel_started(self) -> None:
        if self._waiting_ready:
            self._waiting_ready = False
            self.lease.clock.kernel_ready(time.monotonic())
            self.lease.persist_now()  # billing runs: a re-adopting server must know from when
            if self._task is None:
                self._task = asyncio.ensure_future(
                    stream_vouchers(self.lease, self.link.send_agent, self._notice, self._stop)
                )

    def _stop(self) -> None:
        self.link.stop_kernel()

    def kernel_restarting(self) -> None:
        """Between a kernel's exit and the next one's ready, nothing is billed."""
        self.lease.clock.kernel_stopped(time.monotonic())
        self._waiting_ready = True
        self.lease.persist_now()

    async def finish(self, timeout: float = 5.0) -> None:
        """Send the final voucher, wait (bounded) for the provider's ack, record the lease."""
        if self._task is not None:
            self._task.cancel()
        voucher = self.lease.final_voucher()
        if voucher is not None and self.link is not None and not self.link.dead_reason:
            self.link.send_agent(voucher)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.lease.acked < voucher.amount:
                        self.lease.ack_event.clear()
                        await self.lease.ack_event.wait()
        await asyncio.to_thread(self.lease.record_end)
