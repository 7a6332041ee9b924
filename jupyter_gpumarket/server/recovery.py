"""The server extension gets stuck deposits back on its own (what `gpumarket leases close` does).

A lease whose provider never settled keeps the unspent deposit in the escrow until the renter
sends ``requestClose`` and, after the challenge period, ``withdraw``. Once the Jupyter server has
re-adopted its remote kernels, a background task does that for every lease of the renter's
ledger that is over, one step at a time in a worker thread (web3 blocks), recorded in the ledger
like the CLI does. Without ``GPUMARKET_WALLET_PASSWORD`` it logs the commands to run by hand.

``server/recovery_plan.py`` decides which leases to act on and when (no I/O);
:class:`DepositRecovery` is the asyncio shell the extension starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_gpumarket.chain.renter_ledger import FINAL_STATES
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError
from jupyter_gpumarket.procs import pid_alive
from jupyter_gpumarket.server.recovery_plan import LeaseStatus, RecoveryPlanner, lease_in_use

__all__ = ["DepositRecovery"]


def _units(network: str) -> tuple[int | None, str | None]:
    from jupyter_gpumarket.chain.profiles import load_profile

    try:
        profile = load_profile(network)
    except ConfigError:
        return None, None
    return profile.token_decimals, profile.token_symbol


def _amount(network: str, value: int) -> str:
    from jupyter_gpumarket.core.money import format_amount

    decimals, symbol = _units(network)
    if decimals is None:
        return f"{value} base units"
    return format_amount(value, decimals, symbol or "")


@dataclass(frozen=True)
class _Scan:
    records: list[Any]
    live_pids: frozenset[int] = frozenset()
    busy_channels: frozenset[str] = frozenset()
    busy_urls: frozenset[str] = frozenset()

    def in_use(self, record: Any) -> bool:
        return lease_in_use(
            record,
            live_pids=self.live_pids,
            busy_channels=self.busy_channels,
            busy_urls=self.busy_urls,
        )


def _scan(*, all_leases: bool, all_networks: bool = True) -> _Scan:
    """The ledger's leases (all, or those needing recovery; of every network, or of the active
    one), those of the active network reconciled with the chain (chain.reconcile), which owners
    live, and what the kernel records (kernels of live servers, once re-adoption is done) use."""
    from jupyter_gpumarket.chain.reconcile import active_network, reconcile_records
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger, ledger_path
    from jupyter_gpumarket.provisioning import paid_state
    from jupyter_gpumarket.provisioning import records as kernel_records

    if not ledger_path().exists():  # never rented: create nothing in ~/.gpumarket
        return _Scan([])
    ledger = RenterLedger()
    key, profile = active_network()
    leases = ledger.list(None if all_networks or key is None else key)
    leases, _problem = reconcile_records(ledger, leases, profile)
    if not all_leases:
        leases = [r for r in leases if r.state not in FINAL_STATES]
    owners = {r.owner_pid for r in leases if r.owner_pid is not None}
    channels: set[str] = set()
    urls: set[str] = set()
    for kernel in kernel_records.load_all():
        try:
            state = paid_state.load(kernel.kernel_id)
        except ConfigError:  # unreadable: its channel is unknown, its provider is not
            state = None
        if state is not None:
            channels.add(state.channel_id.lower())
        else:
            urls.add(kernel.provider_url)
    return _Scan(
        leases,
        frozenset(pid for pid in owners if pid_alive(pid)),
        frozenset(channels),
        frozenset(urls),
    )


class DepositRecovery:
    """The extension's background task: scan the ledger, take due steps, sleep, repeat.

    ``mode``: "auto" (recovering), "off" (``auto_recover`` is False), "no_password" or
    "no_wallet" (the leases are listed with the command to run by hand).
    """

    def __init__(
        self,
        log: logging.Logger,
        *,
        enabled: bool,
        settle_grace: float,
        rescan: float = 60.0,
    ) -> None:
        self.log = log
        self.planner = RecoveryPlanner(settle_grace=settle_grace)
        self.rescan = rescan
        self._password = os.environ.get("GPUMARKET_WALLET_PASSWORD", "")
        self._wallet = os.environ.get("GPUMARKET_WALLET") or None
        self.mode = "off" if not enabled else "auto" if self._password else "no_password"
        self.message: str | None = None
        self._task: asyncio.Future[None] | None = None
        self._account: Any = None
        self._chains: dict[str, Any] = {}

    # -- lifecycle (the extension calls these) ------------------------------------------------
    def start(self, after: Awaitable[Any] | None = None) -> None:
        """Start the task once ``after`` (the re-adoption of kernels) is done."""
        self._task = asyncio.ensure_future(self._run(after))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- what GET /gpumarket/leases shows ----------------------------------------------------
    async def report(self, *, all_networks: bool = False) -> dict[str, Any]:
        """The leases of the active network (of every network with ``all_networks``),
        reconciled with the chain, with their token units and recovery status."""

        def read() -> tuple[_Scan, dict[str, tuple[int | None, str | None]]]:
            scan = _scan(all_leases=True, all_networks=all_networks)
            return scan, {n: _units(n) for n in {r.network for r in scan.records}}

        scan, units = await asyncio.to_thread(read)
        now = time.time()
        leases = []
        for record in scan.records:
            status = self.planner.status(record, now=now, in_use=scan.in_use(record))
            if self.mode != "auto" and status.status not in ("final", "in_use"):
                status = LeaseStatus("manual")
            final = record.state in FINAL_STATES
            decimals, symbol = units[record.network]
            leases.append(
                {
                    **record.to_json(),
                    "token_decimals": decimals,
                    "token_symbol": symbol,
                    "expected_refund": record.refunded if final else record.deposit - record.spent,
                    "recovery": {
                        **status.to_json(),
                        "command": None if final else f"gpumarket leases close {record.id}",
                    },
                }
            )
        return {"mode": self.mode, "message": self.message, "leases": leases}

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self, after: Awaitable[Any] | None) -> None:
        if after is not None:
            with contextlib.suppress(Exception):  # readopt logs its own failures
                await asyncio.shield(after)  # stopping recovery must not cancel readopt
        if self.mode == "off":
            why = "automatic deposit recovery is off (GpuMarketExtension.auto_recover=False)"
            await self._log_manual(why, logging.INFO, always=True)
            return
        if self.mode == "no_password":
            why = (
                "GPUMARKET_WALLET_PASSWORD is not set, so the server does not recover unspent "
                "deposits (set it to have that done)"
            )
            await self._log_manual(why, logging.INFO, always=False)
            return
        if not await self._unlock():
            return
        failures = 0
        while True:
            try:
                wait = await self._pass()
                failures = 0
            except Exception as exc:  # a broken ledger file: look again later, quietly
                failures += 1
                wait = min(self.rescan * 2 ** (failures - 1), 3600.0)
                self.log.warning("gpumarket deposit recovery: %s; next look in %.0f s", exc, wait)
            await asyncio.sleep(wait)

    async def _unlock(self) -> bool:
        from jupyter_gpumarket.chain.keystore import load_account

        def unlock() -> Any:  # scrypt: about a second
            path = Path(self._wallet).expanduser() if self._wallet else None
            return load_account(self._password, path)

        try:
            self._account = await asyncio.to_thread(unlock)
        except GpuMarketError as exc:
            self.mode = "no_wallet"
            why = f"the wallet does not open, so the server does not recover deposits: {exc}"
            await self._log_manual(why, logging.WARNING, always=True)
            return False
        return True

    async def _log_manual(self, why: str, level: int, *, always: bool) -> None:
        """Say once why nothing is recovered and which leases to close by hand (those no
        running kernel uses); without such leases only when ``always``."""
        self.message = why
        try:
            scan = await asyncio.to_thread(_scan, all_leases=False)
        except GpuMarketError as exc:
            self.log.warning("gpumarket: %s; the lease list is unreadable: %s", why, exc)
            return
        ids = [r.id for r in scan.records if not scan.in_use(r)]
        if ids:
            commands = ", ".join(f"`gpumarket leases close {i}`" for i in ids)
            self.message = (
                f"{why}; {len(ids)} lease(s) may still hold unspent deposits: run {commands}"
            )
        if ids or always:
            self.log.log(level, "gpumarket: %s", self.message)

    async def _pass(self) -> float:
        """One look at the ledger: a step for each due lease; the seconds until the next look."""
        scan = await asyncio.to_thread(_scan, all_leases=False)
        self.planner.forget_except({r.id for r in scan.records})
        for record in self.planner.due(scan.records, now=time.time(), in_use=scan.in_use):
            await self._step(record)
        now = time.time()
        planned = self.planner.next_at(scan.records, now=now, in_use=scan.in_use)
        wait = self.rescan if planned is None else min(self.rescan, planned - now)
        return max(1.0, wait)  # never spin

    async def _step(self, record: Any) -> None:
        """One recovery step in a thread; every failure becomes a retry with backoff."""
        try:
            step, updated, chain_now = await asyncio.to_thread(self._step_blocking, record)
        except Exception as exc:  # RPC down, a race with the CLI, a missing profile, a bug
            self._chains.pop(record.network, None)
            delay = self.planner.failed(record.id, str(exc), now=time.time())
            self.log.warning(
                "gpumarket: deposit recovery of lease %s failed, next try in %.0f s: %s",
                record.id,
                delay,
                exc,
                exc_info=not isinstance(exc, GpuMarketError),
            )
            return
        self.planner.stepped(updated, now=time.time(), chain_now=chain_now)
        if updated.state != "closing":
            self.log.info(
                "gpumarket: lease %s %s: %s back to %s",
                updated.id,
                updated.state,
                _amount(updated.network, updated.refunded),
                updated.renter,
            )
        elif step.tx is not None:
            self.log.info(
                "gpumarket: lease %s: close requested; about %s to withdraw after %s",
                updated.id,
                _amount(updated.network, updated.deposit - updated.spent),
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(step.close_at)),
            )

    def _step_blocking(self, record: Any) -> tuple[Any, Any, int | None]:
        from jupyter_gpumarket.chain.recovery import chain_now, lease_chain, recovery_step
        from jupyter_gpumarket.chain.renter_ledger import RenterLedger

        if record.network not in self._chains:
            self._chains[record.network] = lease_chain(record.network)[0]
        chain = self._chains[record.network]
        step, updated = recovery_step(RenterLedger(), record, chain, self._account)
        return step, updated, chain_now(chain) if step.state == "closing" else None
