"""Bringing a remote kernel's connection up for the provisioner: the loopback shim and the link
to the provider wired to each other, the escrow channel of a paid offer, and the connection
info the KernelManager gets (the shim's ports, the session key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.core.pinning import normalize_fingerprint
from jupyter_gpumarket.provisioning.link import LinkSettings, ProviderTarget, RemoteLink
from jupyter_gpumarket.provisioning.shim import ZmqShim

if TYPE_CHECKING:  # the payment stack (web3, eth-*) loads only for paid kernels
    from jupyter_client.connect import KernelConnectionInfo  # (jupyter_client: not in a tunnel)

    from jupyter_gpumarket.provisioning.paid_run import PaidRun
    from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelShim

__all__ = ["connection_info", "open_link", "open_paid"]


async def open_link(
    target: ProviderTarget,
    key: str,
    settings: LinkSettings,
    log: logging.Logger | logging.LoggerAdapter[Any],
    adopt_lease: str | None = None,
    paid_run: PaidRun | None = None,
    observe: Callable[[str], None] | None = None,
    *,
    payer: Any = None,
) -> tuple[RemoteLink, ZmqShim]:
    """On the tunnel loop: shim + link, wired to each other; both closed if the link fails.
    ``observe`` sees every notice too (the launch states' warnings). ``payer`` answers a
    paid provider's challenge where no PaidRun is here (a tunnel process's ProcessPayer)."""
    shim: ZmqShim | None = None
    key_bytes = key.encode()

    def notice(text: str) -> None:
        log.warning(text)
        if observe is not None:
            observe(text)
        if shim is not None:
            shim.notify(text, key_bytes)

    link = RemoteLink(
        target,
        lambda ch, parts: shim.deliver(ch, parts),  # type: ignore[union-attr]
        settings,
        on_notice=notice,
        adopt_lease=adopt_lease,
        paid=paid_run.lease if paid_run is not None else payer,
    )
    if paid_run is not None:
        paid_run.bind(link, notice)
    shim = ZmqShim(link.send)
    if paid_run is not None and paid_run.lease.offer.unsandboxed:
        shim.announce(paid_run.lease.offer.unsandboxed_warning, key_bytes)
    try:
        await link.open()
    except BaseException:
        await shim.close()
        await link.close(end_lease=False)
        raise
    return link, shim


async def open_paid(prov: GpuMarketProvisioner, offer: Any = None) -> None:
    """Open the escrow channel for ``offer`` (else the one GPUMARKET_OFFER picks; chain, in
    a thread), connect with it."""
    password, budget, initial_hours = prov._paid_settings()
    from jupyter_gpumarket.core.launch_state import LaunchEventType
    from jupyter_gpumarket.provisioning import (
        launch_flow,
        paid,  # web3 only for paid kernels
    )
    from jupyter_gpumarket.provisioning.paid_run import PaidRun
    from jupyter_gpumarket.provisioning.persist import bind_persist

    setting = prov._setting
    prov._progress("opening an escrow channel")
    launch_flow.step(prov, LaunchEventType.OPEN_CHANNEL)
    if setting("GPUMARKET_WALLET_MODE", "") == "browser":
        from jupyter_gpumarket.provisioning.browser_lease import open_browser_lease

        lease = await open_browser_lease(
            prov,
            network=setting("GPUMARKET_NETWORK", prov.network),
            offer_spec=setting("GPUMARKET_OFFER", prov.offer),
            renter=setting("GPUMARKET_BROWSER_ADDRESS", ""),
            budget=int(budget),
            initial_hours=initial_hours,
            offer=offer,
        )
        prov._paid = PaidRun(lease)
        launch_flow.note_lease(prov, lease)
        offer = lease.offer
        target = ProviderTarget(offer.endpoint, normalize_fingerprint(offer.tls_fingerprint), "")
        launch_flow.step(prov, LaunchEventType.CONNECT)
        await prov._on_link(prov._open(target, paid_run=prov._paid))
        return
    lease = await asyncio.to_thread(
        paid.open_paid_lease,
        network=setting("GPUMARKET_NETWORK", prov.network),
        offer_spec=setting("GPUMARKET_OFFER", prov.offer),
        budget=int(budget),
        wallet=setting("GPUMARKET_WALLET", prov.wallet) or None,
        password=password,
        grant=setting("GPUMARKET_GRANT", prov.grant),
        auto_top_up=setting("GPUMARKET_AUTO_TOP_UP", "1" if prov.auto_top_up else "").lower()
        in ("1", "true", "yes"),
        initial_hours=initial_hours,
        offer=offer,
    )
    prov._paid = PaidRun(lease)
    bind_persist(lease, prov.kernel_id)
    launch_flow.note_lease(prov, lease)
    offer = lease.offer
    target = ProviderTarget(offer.endpoint, normalize_fingerprint(offer.tls_fingerprint), "")
    prov._progress(f"connecting to offer {offer.offer_id} at {offer.endpoint}")
    launch_flow.step(prov, LaunchEventType.CONNECT)
    await prov._on_link(prov._open(target, paid_run=prov._paid))


def connection_info(shim: ZmqShim | TunnelShim, key: str, kernel_name: str) -> KernelConnectionInfo:
    """What the KernelManager connects to: the loopback shim, signed with the session key."""
    ports = shim.ports
    return {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "shell_port": ports["shell_port"],
        "iopub_port": ports["iopub_port"],
        "stdin_port": ports["stdin_port"],
        "control_port": ports["control_port"],
        "hb_port": ports["hb_port"],
        # bytes, as LocalProvisioner returns it (the TypedDict says str)
        "key": key.encode(),  # type: ignore[typeddict-item]
        "signature_scheme": "hmac-sha256",
        "kernel_name": kernel_name,
    }
