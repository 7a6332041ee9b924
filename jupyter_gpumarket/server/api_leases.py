"""``DELETE leases/{lease_id}``: stop the kernel that runs on a lease (if this server runs it),
which sends the last voucher and records the end; then wait (bounded) for the provider's
settlement and answer what the lease cost and what came back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError

__all__ = ["SETTLE_WAIT_S", "kernel_of_lease", "lease_outcome", "read_lease"]

SETTLE_WAIT_S = 20.0


def kernel_of_lease(kernel_manager: Any, lease_id: str) -> str | None:
    """The id of this server's kernel whose paid lease is ``lease_id``."""
    from jupyter_gpumarket.provisioning import GpuMarketProvisioner

    for kernel_id in list(kernel_manager.list_kernel_ids()):
        provisioner = getattr(kernel_manager.get_kernel(kernel_id), "provisioner", None)
        if not isinstance(provisioner, GpuMarketProvisioner):
            continue
        paid = getattr(provisioner, "_paid", None)
        if paid is not None and getattr(paid.lease, "record_id", None) == lease_id:
            return str(kernel_id)
    return None


def read_lease(lease_id: str, *, reconcile: bool) -> Any:
    """The ledger's record (``reconcile``: first checked against its chain); ConfigError when
    no lease has that id."""
    from jupyter_gpumarket.chain.profiles import load_profile
    from jupyter_gpumarket.chain.reconcile import reconcile_records
    from jupyter_gpumarket.chain.renter_ledger import RenterLedger

    ledger = RenterLedger()
    record = ledger.get(lease_id)
    if reconcile:
        try:
            profile = load_profile(record.network)
        except ConfigError:
            return record
        (record,), _ = reconcile_records(ledger, [record], profile)
    return record


def _units(network: str) -> dict[str, Any] | None:
    from jupyter_gpumarket.chain.profiles import load_profile

    try:
        p = load_profile(network)
    except ConfigError:
        return None
    return {"symbol": p.token_symbol, "decimals": p.token_decimals}


def lease_outcome(record: Any, kernel_id: str | None) -> dict[str, Any]:
    from jupyter_gpumarket.chain.renter_ledger import FINAL_STATES

    final = record.state in FINAL_STATES
    if final:
        message = None
    elif record.state in ("opened", "running"):
        message = (
            "this lease's kernel does not run under this server; stop it where it runs "
            f"(or `gpumarket leases close {record.id}` once it is stopped)"
        )
    else:
        message = (
            "stopped; the provider has not settled yet: the server recovers the deposit "
            f"(or run `gpumarket leases close {record.id}`)"
        )
    return {
        "lease_id": record.id,
        "status": record.state,
        "charged": record.spent,
        "refund": record.refunded if final else max(0, record.deposit - record.spent),
        "deposit": record.deposit,
        "billed_seconds": record.billed_seconds,
        "txs": record.txs,
        "token": _units(record.network),
        "kernel_id": kernel_id,
        "message": message,
    }


async def stop_lease(kernel_manager: Any, lease_id: str) -> dict[str, Any]:
    """Stop the lease's kernel here (if any) and wait for the settlement (bounded)."""
    from jupyter_gpumarket.chain.renter_ledger import FINAL_STATES

    record = await asyncio.to_thread(read_lease, lease_id, reconcile=False)
    kernel_id = kernel_of_lease(kernel_manager, record.id)
    if kernel_id is not None:
        await kernel_manager.shutdown_kernel(kernel_id)
    deadline = time.monotonic() + (SETTLE_WAIT_S if kernel_id is not None else 0.0)
    while True:
        try:
            record = await asyncio.to_thread(read_lease, record.id, reconcile=True)
        except GpuMarketError:
            break
        if record.state in FINAL_STATES or time.monotonic() >= deadline:
            break
        await asyncio.sleep(1.0)
    return lease_outcome(record, kernel_id)
