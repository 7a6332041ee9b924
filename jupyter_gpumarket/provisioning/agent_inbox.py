"""What the renter does with the provider's AGENT messages before acting on them.

Two defences against a provider, both on the tunnel loop that every kernel's messages share:

- :class:`AgentInbox` parses a big AGENT message (a pull manifest) on a worker thread, so the
  loop keeps carrying kernel messages meanwhile, and only while the renter waits for a reply
  that can be big (``json.loads`` holds the GIL even on a thread: unsolicited big messages are
  dropped unparsed, so a provider cannot keep the loop that every kernel shares busy). AGENT
  messages that arrive during the parse wait behind it, so their order is kept.
- :class:`BlobFetches` keeps blob bytes only for a blob being fetched, and only up to the size
  the provider's manifest declared for it: chunks nobody asked for are dropped (counted), and
  a blob that grows past its declared size fails its fetch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import format_bytes
from jupyter_gpumarket.exceptions import ProtocolError

__all__ = ["INLINE_PARSE_BYTES", "MAX_BACKLOG_BYTES", "AgentInbox", "BlobFetches"]

log = logging.getLogger(__name__)

# An AGENT message bigger than this is parsed on a worker thread.
INLINE_PARSE_BYTES = 256 * 1024
# What may wait behind it. An honest provider sends nothing big meanwhile (the renter asks
# for blobs only after the manifest); a provider that floods the wait is cut off there.
MAX_BACKLOG_BYTES = 64 * 1024 * 1024


def _parse(parts: Sequence[bytes]) -> Any:
    """One AGENT message from the provider, or None (logged) when it is malformed."""
    try:
        return control.parse_agent_message(parts[0])
    except (IndexError, ValueError, ProtocolError) as exc:
        log.error("bad agent message from the provider: %s", exc)
        return None


class AgentInbox:
    """Hands each AGENT message, parsed, to ``dispatch(msg, extra_parts)``, in order;
    big ones only while ``expects_big()`` says a reply that can be big is awaited."""

    def __init__(
        self,
        dispatch: Callable[[Any, Sequence[bytes]], None],
        expects_big: Callable[[], bool] = lambda: True,
    ) -> None:
        self._dispatch = dispatch
        self._expects_big = expects_big
        self._backlog: collections.deque[Sequence[bytes]] | None = None
        self._backlog_bytes = 0
        self._parser: asyncio.Task[None] | None = None
        self.dropped_bytes = 0  # AGENT message bytes dropped: unsolicited, or the backlog full

    def receive(self, parts: Sequence[bytes]) -> None:
        if self._backlog is not None:  # a big message is being parsed: keep the order
            size = sum(len(p) for p in parts)
            if self._backlog_bytes + size > MAX_BACKLOG_BYTES:
                if not self.dropped_bytes:
                    log.error("the provider flooded the link while a manifest was parsed")
                self.dropped_bytes += size
                return
            self._backlog_bytes += size
            self._backlog.append(parts)
        elif parts and len(parts[0]) > INLINE_PARSE_BYTES:
            if not self._unsolicited(parts):
                self._backlog = collections.deque([parts])
                self._backlog_bytes = sum(len(p) for p in parts)
                self._parser = asyncio.ensure_future(self._drain())
        elif (msg := _parse(parts)) is not None:
            self._dispatch(msg, parts[1:])

    async def _drain(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            while backlog:
                parts = backlog.popleft()
                self._backlog_bytes -= sum(len(p) for p in parts)
                if parts and len(parts[0]) > INLINE_PARSE_BYTES:
                    if self._unsolicited(parts):
                        continue
                    msg = await asyncio.to_thread(_parse, parts)
                else:
                    msg = _parse(parts)
                if msg is not None:
                    self._dispatch(msg, parts[1:])
        finally:
            self._backlog = None

    def _unsolicited(self, parts: Sequence[bytes]) -> bool:
        if self._expects_big():
            return False
        log.error(
            "dropped a %d-byte message from the provider that nothing asked for", len(parts[0])
        )
        self.dropped_bytes += sum(len(p) for p in parts)
        return True

    def close(self) -> None:
        if self._parser is not None:
            self._parser.cancel()


@dataclass
class _Incoming:
    """A blob being fetched: what its manifest declared, what arrived so far."""

    size: int
    received: int = 0
    chunks: list[bytes] = field(default_factory=list)


class BlobFetches:
    """The blobs being fetched now, each bounded by its declared size."""

    def __init__(self) -> None:
        self._incoming: dict[str, _Incoming] = {}
        self.dropped_bytes = 0  # blob bytes the provider sent that nobody asked for

    def expect(self, sha256: str, size: int) -> None:
        self._incoming[sha256] = _Incoming(size)

    def forget(self, sha256: str) -> None:
        self._incoming.pop(sha256, None)

    def on_chunk(
        self, msg: control.BlobChunk, extra: Sequence[bytes]
    ) -> list[bytes] | ProtocolError | None:
        """The blob's chunks once its last one arrived, an error once it outgrew its size,
        else None (more to come, or dropped)."""
        size = sum(len(x) for x in extra)
        incoming = self._incoming.get(msg.sha256)
        if incoming is None:  # nobody asked: dropped, never kept
            if not self.dropped_bytes:
                log.warning("the provider sent blob data nobody asked for; dropping it")
            self.dropped_bytes += size
            return None
        incoming.received += size
        if incoming.received > incoming.size:
            del self._incoming[msg.sha256]
            return ProtocolError(
                f"the provider sent more than the {format_bytes(incoming.size)} its manifest "
                f"declared for blob {msg.sha256[:12]}…; the file was not written (pull again; "
                "if it repeats, the provider is misbehaving)"
            )
        incoming.chunks.extend(bytes(x) for x in extra)
        if not msg.last:
            return None
        del self._incoming[msg.sha256]
        return incoming.chunks
