"""The renter's handling of AGENT messages from a provider: order, bounded waits, bounded blobs."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from jupyter_gpumarket.core import control
from jupyter_gpumarket.exceptions import ProtocolError
from jupyter_gpumarket.provisioning.agent_inbox import (
    INLINE_PARSE_BYTES,
    MAX_BACKLOG_BYTES,
    AgentInbox,
    BlobFetches,
)

SHA = hashlib.sha256(b"x").hexdigest()
MB = 1 << 20


def _big_manifest() -> bytes:
    files = {f"dir/file{i:06d}.txt": [1, SHA, 1] for i in range(INLINE_PARSE_BYTES // 40)}
    raw = control.dump(control.PullManifest(manifest={"files": files}))
    assert len(raw) > INLINE_PARSE_BYTES
    return raw


async def _settle(inbox: AgentInbox) -> None:
    for _ in range(2000):
        if inbox._backlog is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the backlog was never drained")


async def test_a_big_message_is_parsed_off_the_loop_and_order_is_kept() -> None:
    seen: list[str] = []

    def dispatch(msg: Any, extra: Sequence[bytes]) -> None:
        seen.append(msg.op)

    inbox = AgentInbox(dispatch)
    inbox.receive([_big_manifest()])
    inbox.receive([control.dump(control.KernelExited(generation=1, code=0))])
    assert seen == []  # the small one waits behind the big one
    await _settle(inbox)
    assert seen == ["pull_manifest", "kernel_exited"]
    inbox.receive([b"not json"])  # logged and dropped
    inbox.receive([control.dump(control.KernelExited(generation=2, code=0))])
    assert seen == ["pull_manifest", "kernel_exited", "kernel_exited"]


async def test_a_flood_behind_a_big_message_is_bounded() -> None:
    inbox = AgentInbox(lambda msg, extra: None)
    inbox.receive([_big_manifest()])
    junk = b"\0" * MB
    header = control.dump(control.BlobChunk(sha256=SHA, last=False))
    for _ in range(200):
        inbox.receive([header, junk])
        assert inbox._backlog_bytes <= MAX_BACKLOG_BYTES
    assert inbox.dropped_bytes > 100 * MB
    await _settle(inbox)
    assert inbox._backlog_bytes == 0


def test_blob_bytes_are_kept_only_when_asked_and_only_up_to_the_declared_size() -> None:
    blobs = BlobFetches()
    chunk = control.BlobChunk(sha256=SHA, last=False)
    last = control.BlobChunk(sha256=SHA, last=True)
    assert blobs.on_chunk(last, [b"x" * MB]) is None  # nobody asked
    assert blobs.dropped_bytes == MB
    blobs.expect(SHA, 3)
    assert blobs.on_chunk(chunk, [b"ab"]) is None
    assert blobs.on_chunk(last, [b"c"]) == [b"ab", b"c"]
    blobs.expect(SHA, 1)
    error = blobs.on_chunk(chunk, [b"xx"])
    assert isinstance(error, ProtocolError)
    assert "more than the 1 B its manifest declared" in str(error)
    assert blobs.on_chunk(last, [b"y" * MB]) is None  # the rest is dropped
    assert blobs.dropped_bytes == 2 * MB


async def test_big_messages_nobody_waits_for_are_dropped_unparsed() -> None:
    seen: list[str] = []
    waiting = [False]

    def dispatch(msg: Any, extra: Sequence[bytes]) -> None:
        seen.append(msg.op)
        waiting[0] = False  # the reply resolves the one request

    inbox = AgentInbox(dispatch, lambda: waiting[0])
    big = _big_manifest()
    inbox.receive([big])  # unsolicited: never parsed (json.loads would hold the GIL)
    assert inbox._backlog is None
    assert inbox.dropped_bytes == len(big)
    waiting[0] = True
    inbox.receive([big])
    inbox.receive([big])  # a second reply to one request: dropped once the first is taken
    await _settle(inbox)
    assert seen == ["pull_manifest"]
    assert inbox.dropped_bytes == 2 * len(big)
