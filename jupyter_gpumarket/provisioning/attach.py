"""`gpumarket kernels attach`: serve a loopback shim for a remote kernel from this process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal

from jupyter_gpumarket import statefile
from jupyter_gpumarket.exceptions import TunnelError
from jupyter_gpumarket.provisioning import records
from jupyter_gpumarket.provisioning.link import ProviderTarget, RemoteLink
from jupyter_gpumarket.provisioning.shim import ZmqShim
from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

__all__ = ["serve_attached"]


async def _via_tunnel_process(record: records.KernelRecord) -> TunnelClient | None:
    """The kernel's tunnel process, if one still runs (its server is gone): control it
    instead of opening a second link that would take the lease away from it."""
    if not record.tunnel_socket or not record.tunnel_pid:
        return None
    target = ProviderTarget(record.provider_url, record.tls_fingerprint, record.token)
    try:
        client = await TunnelClient.connect(record.tunnel_socket, record.tunnel_pid, target)
    except OSError:
        return None
    try:
        await client.hello(record.lease)
    except TunnelError:
        client.detach()
        return None
    return client


async def _serve(record: records.KernelRecord, ready: asyncio.Event | None = None) -> None:
    client = await _via_tunnel_process(record)
    if client is not None:
        try:
            await _publish(record, client.ports, ready)
        finally:
            client.detach()  # its grace runs again until a server re-adopts it
        return
    shim: ZmqShim | None = None
    target = ProviderTarget(record.provider_url, record.tls_fingerprint, record.token)
    link = RemoteLink(
        target,
        lambda ch, parts: shim.deliver(ch, parts),  # type: ignore[union-attr]
        adopt_lease=record.lease,
    )
    shim = ZmqShim(link.send)
    try:
        await link.open()
        await _publish(record, shim.ports, ready)
    finally:
        await link.close(end_lease=False)  # detach: the kernel keeps running
        await shim.close()


async def _publish(
    record: records.KernelRecord, ports: dict[str, int], ready: asyncio.Event | None
) -> None:
    """Write the connection file, say where it is, serve until Ctrl-C."""
    path = records.records_dir() / f"kernel-{record.kernel_id}-attached.json"
    info = {
        "transport": "tcp",
        "ip": "127.0.0.1",
        **ports,
        "key": record.key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": record.kernel_name,
    }
    statefile.write_json(path, info, durable=False)
    records.save(dataclasses.replace(record, connection_file=str(path), server_pid=os.getpid()))
    print(path, flush=True)
    print(f"jupyter console --existing {path}   (Ctrl-C here detaches)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def serve_attached(record: records.KernelRecord) -> None:
    asyncio.run(_serve(record))
