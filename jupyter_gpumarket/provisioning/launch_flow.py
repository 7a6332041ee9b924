"""The provisioner's side of the launch states: where each step begins, the confirmation
before the wallet signs, and how a launch ends (ready, failed, cancelled, a receipt).

Every function takes the provisioner and finds its kernel's tracker in the process's
:func:`~jupyter_gpumarket.provisioning.launch_events.hub`.

Confirm before paying: a paid launch waits in ``confirming`` for ``POST
launches/{kernel_id}/confirm`` when GPUMARKET_CONFIRM=1, or when GPUMARKET_CONFIRM is unset,
the provisioner's ``confirm`` trait is on (default) and a UI watches the server's event
stream (someone can confirm). It does not wait when the notebook's stored selection has a
``confirmed_quote`` that covers the launch, or with GPUMARKET_CONFIRM=0 / ``confirm=False``.
Without a UI (nbclient, papermill, CI, a plain KernelManager) nobody could confirm, so the
launch goes on as configured (GPUMARKET_* as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.core.launch_state import EndReason, LaunchEvent, LaunchEventType
from jupyter_gpumarket.core.quote import Quote, make_quote
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, LaunchCancelled
from jupyter_gpumarket.provisioning.launch_events import LaunchTracker, hub, stored_selection

if TYPE_CHECKING:
    from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

__all__ = [
    "begin",
    "confirm_paid",
    "confirmation_required",
    "ended",
    "failed",
    "note_lease",
    "notice",
    "ready",
    "step",
    "tracker",
]

_E = LaunchEventType


def _kernel_id(prov: GpuMarketProvisioner) -> str:
    if not prov.kernel_id:
        prov.kernel_id = str(uuid.uuid4())
    return str(prov.kernel_id)


def tracker(prov: GpuMarketProvisioner) -> LaunchTracker:
    """This kernel's tracker (a new launch when none is known)."""
    kernel_id = _kernel_id(prov)
    found = hub().get(kernel_id)
    if found is None:
        found = hub().begin(kernel_id, (prov._launch_env or {}).get("JPY_SESSION_NAME"))
    return found


def begin(prov: GpuMarketProvisioner) -> None:
    """pre_launch: a fresh launch starts ``choosing``; a restart of a live kernel starts
    the kernel again on the same lease."""
    kernel_id = _kernel_id(prov)
    notebook = (prov._launch_env or {}).get("JPY_SESSION_NAME")
    current = hub().get(kernel_id)
    if current is not None and current.state.value in ("ready", "busy", "low_funds"):
        current.watch_task()
        current.step(_E.START_KERNEL)
        return
    t = hub().begin(kernel_id, notebook, prov.log)
    t.watch_task()


def step(prov: GpuMarketProvisioner, kind: LaunchEventType) -> None:
    """A launch step begins; LaunchCancelled when the user cancelled meanwhile."""
    tracker(prov).step(kind)


def confirmation_required(prov: GpuMarketProvisioner) -> bool:
    """Whether a paid launch waits for the user's confirmation (see the module doc)."""
    setting = prov._setting("GPUMARKET_CONFIRM", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting:
        raise ConfigError(f"GPUMARKET_CONFIRM={setting[:20]!r} must be 0 or 1 (unset: auto)")
    return bool(prov.confirm) and hub().ui_attached


def _quote(prov: GpuMarketProvisioner, offer: Any) -> Quote:
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile

    _, budget, hours = prov._paid_settings()
    network = prov._setting("GPUMARKET_NETWORK", prov.network)
    profile = load_profile(network) if network else active_profile()
    return make_quote(
        offer.offer_id,
        offer.price_per_hour,
        int(budget),
        hours,
        profile.token_symbol,
        profile.token_decimals,
    )


async def confirm_paid(prov: GpuMarketProvisioner, offer: Any) -> None:
    """Before the wallet signs for ``offer``: wait in ``confirming`` unless nothing needs to
    be confirmed (GPUMARKET_CONFIRM=0, no UI) or a stored confirmed quote covers it."""
    t = tracker(prov)
    t.offer_id = offer.offer_id
    quote = await asyncio.to_thread(_quote, prov, offer)
    t.quote = quote
    if not confirmation_required(prov):
        return
    if t.confirmed is not None and t.confirmed.covers(quote):
        return
    selection = stored_selection(t.notebook)
    confirmed = (selection or {}).get("confirmed_quote")
    if confirmed is not None:
        with contextlib.suppress(ConfigError):
            if Quote.from_json(confirmed).covers(quote):
                return
    await t.wait_confirmed(quote, prov.confirm_timeout)


def note_lease(prov: GpuMarketProvisioner, lease: Any) -> None:
    """A paid lease's channel is open: its id and the gas its transactions used."""
    t = tracker(prov)
    t.lease, t.lease_id, t.offer_id = lease, lease.record_id, lease.offer.offer_id
    with contextlib.suppress(GpuMarketError, OSError, KeyError):
        record = lease.ledger.get(lease.record_id)
        t.gas_used += sum(int(tx.get("gas_used", 0)) for tx in record.txs)


def ready(prov: GpuMarketProvisioner) -> None:
    t = tracker(prov)
    t.link = prov._link
    t.step(_E.KERNEL_READY)
    spend = t.spend()
    if spend is not None:
        hub().publish(spend)


def failed(prov: GpuMarketProvisioner, exc: BaseException) -> BaseException:
    """After a launch failed (torn down, recorded): ``ended``/cancelled or ``failed`` at the
    step it was in; the exception to raise (LaunchCancelled for a cancel)."""
    t = hub().get(_kernel_id(prov))
    if t is None:
        return exc
    if t.cancel_requested or isinstance(exc, LaunchCancelled):
        note = (
            "; the deposit goes back when the provider settles at 0 (or `gpumarket leases close`)"
            if t.lease_id
            else ""
        )
        t.cancelled(note)
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        return LaunchCancelled(
            f"the launch of kernel {t.kernel_id} was cancelled: nothing was billed; start "
            "the kernel again to launch"
        )
    if t.machine.cancellable:
        text = str(exc)[:500] or type(exc).__name__
        t.handle(LaunchEvent(_E.FAIL, message=text))
    return exc


def notice(prov: GpuMarketProvisioner, text: str) -> None:
    """A notice of the link or the lease (provider payment notices, the 80 % warning, a
    top-up, a lost link): a ``warning`` event; low funds when it is about money."""
    t = hub().get(_kernel_id(prov))
    if t is None:
        return
    code = _notice_code(text)
    t.warn(code, text.removeprefix("[gpumarket] "))
    live = t.state.value in ("ready", "busy")
    if code in ("payment", "low_funds") and live:
        t.handle(LaunchEvent(_E.FUNDS_LOW, message=text.removeprefix("[gpumarket] ")))
    elif code == "top_up" and "topped up" in text and t.state.value == "low_funds":
        t.handle(LaunchEvent(_E.FUNDS_OK))


def _notice_code(text: str) -> str:
    if text.startswith("[gpumarket] provider: "):
        return "payment"  # the agent's PaymentNotice: a late voucher, a deposit running out
    if "% of this lease's" in text or "is spent" in text:
        return "low_funds"
    if "top" in text and "channel" in text:
        return "top_up"
    if "is lost" in text:
        return "lost"
    return "notice"


def ended(prov: GpuMarketProvisioner) -> None:
    """cleanup (not a restart): the receipt of a paid lease, then ``ended``."""
    t = hub().get(_kernel_id(prov))
    if t is None:
        return
    lease = t.lease
    reason = EndReason.CULLED if t.culled else EndReason.STOPPED
    if lease is not None and t.machine.state.value not in ("ended", "failed"):
        if lease.stopped_for_budget:
            deposit = "deposit" in lease.stopped_for_budget
            reason = EndReason.DEPOSIT_USED if deposit else EndReason.BUDGET
        spent = int(lease.schedule.signed)
        txs: list[Any] = []
        with contextlib.suppress(GpuMarketError, OSError, KeyError):
            txs = list(lease.ledger.get(lease.record_id).txs)
        seconds = int(lease.clock.billed_seconds(_monotonic()))
        t.receipt(seconds, spent, max(0, int(lease.deposit) - spent), txs)
    link = t.link
    if reason is EndReason.STOPPED and link is not None and link.dead_reason:
        reason = EndReason.PROVIDER_GONE
    t.end(reason)


def _monotonic() -> float:
    import time

    return time.monotonic()
