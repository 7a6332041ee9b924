"""Renter side of notebook file sync: push the notebook dir at launch, pull results back.

Runs on the tunnel loop; disk work (scan, hashing, writing) goes to a worker thread so the
tunnel keeps moving kernel messages meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import (
    Manifest,
    PullPlan,
    check_cap,
    format_bytes,
    plan_pull,
    plan_upload,
)
from jupyter_gpumarket.filescan import read_chunks, scan, write_verified
from jupyter_gpumarket.provisioning.link import RemoteLink

__all__ = ["PushResult", "offer", "pull", "push"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
IN_FLIGHT = 8 * CHUNK  # unacknowledged bytes allowed on the link while uploading
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PushResult:
    manifest: Manifest
    sent_bytes: int
    reused_bytes: int


async def push(
    link: RemoteLink, cwd: Path, *, cap_bytes: int, timeout: float, progress: Progress
) -> PushResult:
    """Make the remote working dir hold the notebook dir's files (content-addressed)."""
    progress(f"scanning {cwd}")
    manifest = await asyncio.to_thread(
        scan, cwd, (), cap_bytes, cap_hint="GpuMarketProvisioner.sync_cap_bytes"
    )
    need = await offer(link, manifest.to_json(), timeout)
    plan = plan_upload(manifest, manifest.hashes() - set(need.missing))
    total = plan.total_bytes
    progress(
        f"syncing {len(manifest)} files ({format_bytes(manifest.total_bytes)}): "
        f"sending {format_bytes(total)}, {format_bytes(plan.reused_bytes)} already there"
    )
    sent = 0
    for blob in plan.blobs:
        chunks = read_chunks(cwd, blob.path, CHUNK)
        chunk = await asyncio.to_thread(next, chunks, b"")
        while True:
            following = await asyncio.to_thread(next, chunks, None)
            last = following is None
            link.send_agent(control.BlobChunk(sha256=blob.sha256, last=last), chunk)
            sent += len(chunk)
            await link.drained(IN_FLIGHT, timeout)
            if last:
                break
            chunk = following
    await link.request(control.SyncCommit(), "sync_done", timeout)
    progress(f"synced {len(manifest)} files, {format_bytes(sent)} sent")
    return PushResult(manifest, sent, plan.reused_bytes)


async def offer(link: RemoteLink, manifest: dict[str, Any], timeout: float) -> Any:
    """Offer a manifest's wire form in pages (each cheap for the provider to parse) and
    return the provider's answer to the last: its sync_need, or a refusal raised."""
    pages = await asyncio.to_thread(control.sync_offer_pages, manifest)
    for page in pages[:-1]:
        link.send_agent(page)
        await link.drained(IN_FLIGHT, timeout)
    return await link.request(pages[-1], "sync_need", timeout)


async def pull(
    link: RemoteLink,
    cwd: Path,
    at_launch: Manifest,
    *,
    cap_bytes: int,
    timeout: float,
    progress: Progress,
) -> PullPlan:
    """Bring back files the kernel created or changed; never overwrite a local edit.

    The provider's manifest is parsed and planned on a worker thread (the tunnel loop keeps
    carrying every kernel's messages); a plan above ``cap_bytes`` fails before any byte is
    fetched, and each blob may bring at most the size its manifest entry declared.
    """
    reply = await link.request(control.PullRequest(), "pull_manifest", timeout)
    remote = await asyncio.to_thread(Manifest.from_json, reply.manifest)
    local_now = await asyncio.to_thread(
        scan, cwd, (), max(at_launch.total_bytes, 1) * 4 + 10**9, previous=at_launch
    )
    plan = await asyncio.to_thread(plan_pull, remote, local_now, at_launch)
    check_cap(
        ((item.local_path, item.size) for item in plan.items),
        cap_bytes,
        where="the remote working dir",
        cap_hint="GpuMarketProvisioner.sync_cap_bytes (it also caps pulls)",
    )
    for conflict in plan.conflicts:
        log.warning(conflict.message)
    if plan.items:
        progress(f"pulling {len(plan.items)} files ({format_bytes(plan.total_bytes)})")
    for item in plan.items:
        chunks = await link.fetch_blob(item.sha256, item.size, timeout)
        await asyncio.to_thread(write_verified, cwd, item.local_path, chunks, item.sha256)
    return plan
