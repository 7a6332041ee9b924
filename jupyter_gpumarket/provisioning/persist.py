"""What of a remote kernel outlives the Jupyter server: its record (provider, lease, session
key) and a paid kernel's channel state, saved while it runs, and the re-adoption of both by a
restarted server (the kernel kept running, and a paid one kept paying from the same channel).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_client.connect import KernelConnectionInfo

from jupyter_gpumarket.exceptions import ConfigError, TunnelError
from jupyter_gpumarket.provisioning import paid_state, records
from jupyter_gpumarket.provisioning.link import ProviderTarget
from jupyter_gpumarket.provisioning.loop_thread import loop_thread

if TYPE_CHECKING:
    from jupyter_gpumarket.provisioning.provisioner import GpuMarketProvisioner

__all__ = ["bind_persist", "link_info", "reattach", "resume_paid", "save_record"]


def bind_persist(lease: Any, kernel_id: str | None) -> None:
    """Make the paid lease save its channel state under ``kernel_id`` whenever it changes."""
    if kernel_id:
        lease.persist = lambda: paid_state.save(lease.snapshot(kernel_id))


def save_record(prov: GpuMarketProvisioner) -> None:
    """Record the running remote kernel (and flush a paid one's channel state)."""
    link = prov._link
    if link is None or not prov.kernel_id or link.lease is None:
        return
    if prov._paid is not None:
        prov._paid.lease.persist_now()
    records.save(
        records.KernelRecord(
            kernel_id=prov.kernel_id,
            kernel_name=getattr(prov.parent, "kernel_name", "gpumarket"),
            provider_url=link.target.url,
            tls_fingerprint=link.target.tls_fingerprint,
            token=link.target.token,
            lease=link.lease,
            key=prov._key,
            cwd=str(prov._cwd) if prov._cwd else None,
            connection_file=getattr(prov.parent, "connection_file", None),
            server_pid=os.getpid(),
            created=time.time(),
            tunnel_socket=str(getattr(link, "socket_path", "") or "") or None,
            tunnel_pid=getattr(link, "pid", None),
        )
    )


async def reattach(
    prov: GpuMarketProvisioner, record: records.KernelRecord
) -> KernelConnectionInfo:
    """A restarted Jupyter server takes over a remote kernel that kept running (a paid
    one keeps paying from the same channel, with its saved session key)."""
    target = ProviderTarget(record.provider_url, record.tls_fingerprint, record.token)
    prov._key = record.key
    if record.cwd:
        prov._cwd = Path(record.cwd)
    try:
        state = paid_state.load(prov.kernel_id)
        if state is not None:
            await resume_paid(prov, state)
        if not await _readopt_tunnel(prov, record, target):
            await prov._on_link(prov._open(target, adopt_lease=record.lease, paid_run=prov._paid))
    except BaseException:
        await prov._teardown(end_lease=False)
        records.forget(prov.kernel_id)
        paid_state.forget(prov.kernel_id)
        raise
    if prov._paid is not None:  # the kernel kept running (and billing) all along
        loop_thread().loop.call_soon_threadsafe(prov._paid.kernel_started)
    prov.log.info("re-adopted remote kernel %s (lease %s)", prov.kernel_id, record.lease)
    save_record(prov)
    return prov._connection_info()


async def _readopt_tunnel(
    prov: GpuMarketProvisioner, record: records.KernelRecord, target: ProviderTarget
) -> bool:
    """Take over the tunnel process that outlived its server (True), if it still runs. A
    paid kernel's process kept answering its provider's challenges meanwhile; the resumed
    PaidRun (resume_paid) pays through it from now on."""
    if not record.tunnel_socket or not record.tunnel_pid:
        return False
    from jupyter_gpumarket.provisioning import tunnel_paid
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient, TunnelShim

    try:
        client = await TunnelClient.connect(
            record.tunnel_socket,
            record.tunnel_pid,
            target,
            on_notice=prov._process_notice,
            on_progress=prov._progress,
        )
    except OSError:  # gone (its grace expired): a fresh link adopts the lease instead
        return False
    paid_run = prov._paid
    if paid_run is not None:
        tunnel_paid.pay_through(client, paid_run, loop_thread().loop, prov._process_notice)
    try:
        ports = await client.hello(record.lease)
        if paid_run is not None:
            tunnel_paid.check_adopted(client.paid, paid_run.lease)
    except TunnelError:  # another lease's process, or a dying one: leave it alone
        client.detach()
        return False
    prov._link, prov._shim = client, TunnelShim(ports)
    if paid_run is not None:
        tunnel_paid.announce_unsandboxed(client, paid_run.lease)
    # The same ports as the connection file the crashed server wrote: jupyter_client then
    # trusts the file and skips loading it into the KernelManager, so load it here.
    load = getattr(prov.parent, "load_connection_info", None)
    if load is not None:
        load(prov._connection_info())
    return True


async def resume_paid(prov: GpuMarketProvisioner, state: paid_state.PaidState) -> None:
    """Unlock the wallet again and resume paying from the saved channel."""
    password = prov._setting("GPUMARKET_WALLET_PASSWORD", "")
    if not password:
        raise ConfigError(
            "set GPUMARKET_WALLET_PASSWORD so the restarted server can keep paying for "
            f"kernel {prov.kernel_id} (its lease's deposit comes back with `gpumarket "
            "leases close` otherwise)"
        )
    from jupyter_gpumarket.provisioning import paid  # web3 only for paid kernels
    from jupyter_gpumarket.provisioning.paid_run import PaidRun

    lease = await asyncio.to_thread(paid.resume_paid_lease, state, password)
    prov._paid = PaidRun(lease)
    bind_persist(lease, prov.kernel_id)


def link_info(link: Any) -> dict[str, Any]:
    """What get_provisioner_info adds about the live link (empty without one)."""
    if link is None:
        return {}
    return {
        "provider_url": link.target.url,
        "tls_fingerprint": link.target.tls_fingerprint,
        "lease": link.lease,
        "generation": link.generation,
    }
