"""The asyncio shell around :class:`~jupyter_gpumarket.core.session.TunnelSession`.

Both ends of the tunnel (agent lease, renter link) use one :class:`SessionPipe`: it frames
outgoing messages in order, writes them to whichever websocket is attached right now, sends
lone ACK frames when data arrived that no outgoing frame acknowledged, and on reattach drops its
queue and replays from the session's buffer instead (the queue only ever holds frames that are
also in the replay buffer, so nothing is lost or sent twice).

Two more jobs, each decided in ``core`` and only carried out here:

- flow control (:class:`~jupyter_gpumarket.core.flow.FlowWindow`): at most a few seconds of
  the link's measured rate is written ahead of the peer's acks; ACK frames jump the queue;
- liveness (:class:`~jupyter_gpumarket.core.liveness.Liveness`): bytes counted as the transport
  delivers them (:class:`CountingClientConnection` / :class:`CountingServerConnection`), probes
  and heartbeats when quiet. When the peer fell silent the shell is told (``on_dead``) and, if
  it takes revivals (``on_revived``), the connection stays open and probed until it carries
  bytes again or the shell attaches another; else it is aborted (no closing handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.flow import FlowWindow
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.liveness import (
    DEFAULT_INTERVAL,
    DEFAULT_SILENCE_TIMEOUT,
    Liveness,
    LivenessAction,
)
from jupyter_gpumarket.core.session import Delivery, TunnelSession
from jupyter_gpumarket.wire_send import send_buffers

__all__ = [
    "ACK_DELAY",
    "CLOSE_TIMEOUT",
    "CountingClientConnection",
    "CountingServerConnection",
    "SessionPipe",
    "Socket",
]

log = logging.getLogger(__name__)

ACK_DELAY = 0.05  # a lone ACK goes out this long after data that no reply acknowledged
CLOSE_TIMEOUT = 1.0  # a closing handshake never waits longer for a peer (websockets: 10 s)
_TICK = 0.25  # liveness checks per second: detection within silence_timeout + this
_SEQ = struct.Struct("!Q")  # a frame's seq, at offset 4 (core.frames.HEADER)


class _Counting:
    """Counts bytes where the transport hands them over, before any message is complete."""

    rx_at = 0.0  # time.monotonic() of the last bytes received
    rx_bytes = 0

    def data_received(self, data: bytes) -> None:
        self.rx_at = time.monotonic()
        self.rx_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]


class CountingClientConnection(_Counting, ClientConnection):
    @property
    def close_rcvd(self) -> Any:
        """The close frame the peer sent (``.code``, ``.reason``), None if none arrived
        (provisioning.fastws's connection has the same)."""
        return self.protocol.close_rcvd


class CountingServerConnection(_Counting, ServerConnection):
    pass


class Socket(Protocol):
    """What the pipe uses of a websocket: websockets' Connection, or provisioning.fastws's."""

    @property
    def transport(self) -> asyncio.Transport: ...

    async def send(self, message: bytes) -> None: ...

    def ping(self) -> Awaitable[Any]: ...

    def pong(self) -> Awaitable[Any]: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    async def wait_closed(self) -> None: ...


class SessionPipe:
    """Frames, flow control and liveness for one session, across connections.

    ``interval`` / ``silence_timeout`` configure liveness (``interval=None`` turns it off);
    ``on_dead(ws, silent_s)`` is called when a connection fell silent. Without ``on_revived``
    the connection is then aborted; with it, it stays attached (writes go on, bounded by the
    flow window) and ``on_revived(ws)`` is called if bytes arrive on it again: the owner
    decides meanwhile whether to replace it (:meth:`attach` returns the one replaced).
    """

    def __init__(
        self,
        session: TunnelSession,
        *,
        interval: float | None = DEFAULT_INTERVAL,
        silence_timeout: float = DEFAULT_SILENCE_TIMEOUT,
        on_dead: Callable[[Socket, float], None] | None = None,
        on_revived: Callable[[Socket], None] | None = None,
        flow: FlowWindow | None = None,
    ) -> None:
        self.session = session
        self.ws: Socket | None = None
        self.flow = flow or FlowWindow()
        self.interval = interval
        self.silence_timeout = silence_timeout
        self.on_dead = on_dead
        self.on_revived = on_revived
        self._sending_to: Socket | None = None  # the websocket the writer awaits, if any
        self._outbox: deque[list[bytes]] = deque()  # frames as buffers (send_parts)
        self._ack_wanted = False
        self._bounded = True
        self._wake = asyncio.Event()
        self._writer = asyncio.ensure_future(self._write_loop())
        self._watcher: asyncio.Task[None] | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.liveness: Liveness | None = None

    # -- the websocket ---------------------------------------------------------------------
    def attach(self, ws: Socket, peer_last_received: int) -> Socket | None:
        """Write to ``ws`` from now on, starting with what the peer has not received; the
        websocket attached before, if another (the caller closes it)."""
        replay = self.session.replay_parts_after(peer_last_received)
        old, self.ws = self.ws, ws
        if self._sending_to is not None and self._sending_to is not ws:
            # the writer waits on a connection that may never drain again (a stalled one):
            # start a new writer; the frame it held is in the replay queued below
            self._writer.cancel()
            self._writer = asyncio.ensure_future(self._write_loop())
            self._sending_to = None
        self.flow.reset()
        self._outbox.clear()
        self._outbox.extend(replay)
        self._wake.set()
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self.interval is not None:
            self.liveness = Liveness(
                time.monotonic(), interval=self.interval, silence_timeout=self.silence_timeout
            )
            self._watcher = asyncio.ensure_future(self._watch(ws, self.liveness))
        return old if old is not ws else None

    def detach(self, ws: Socket | None = None) -> bool:
        """Stop writing to ``ws`` (or whatever is attached). True if it was attached."""
        if ws is not None and self.ws is not ws:
            return False
        self.ws = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        return True

    async def _write_loop(self) -> None:
        session, flow, outbox = self.session, self.flow, self._outbox
        while True:
            ws = self.ws
            sendable = outbox and (not self._bounded or flow.may_write(_size(outbox[0])))
            if ws is None or not (self._ack_wanted or sendable):
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._ack_wanted:
                self._ack_wanted = False
                buffers = [session.ack_frame()]
            else:
                buffers = outbox.popleft()
                seq = _SEQ.unpack_from(buffers[0], 4)[0]
                flow.on_written(seq, _size(buffers), time.monotonic())
            self._sending_to = ws
            try:
                await send_buffers(ws, buffers)
            except ConnectionClosed:
                continue  # a data frame stays in the replay buffer; sent again on reattach
            finally:
                if self._sending_to is ws:
                    self._sending_to = None
            if self.liveness is not None and self.ws is ws:
                self.liveness.sent(time.monotonic())

    async def _watch(self, ws: Socket, live: Liveness) -> None:
        probe: asyncio.Future[Any] | None = None
        while self.ws is ws:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            live.received(getattr(ws, "rx_at", now))
            action = live.poll(now)
            if action is LivenessAction.DEAD:
                if self.on_dead is not None:
                    self.on_dead(ws, live.silent_for(now))
                if self.on_revived is None:
                    ws.transport.abort()  # no closing handshake: the peer is not listening
                    return
                continue
            if action is LivenessAction.REVIVED:
                if self.on_revived is not None:
                    self.on_revived(ws)
                continue
            if action is LivenessAction.NOTHING or (probe is not None and not probe.done()):
                continue  # a ping or pong still waits for the socket: never block the watch
            probe = asyncio.ensure_future(ws.ping() if action is LivenessAction.PING else ws.pong())
            probe.add_done_callback(_ignore_result)

    # -- traffic ---------------------------------------------------------------------------
    def send(self, channel: Channel, parts: Sequence[Any]) -> None:
        self._outbox.append(self.session.send_parts(channel, parts))
        self._wake.set()

    def send_control(self, msg: Any) -> None:
        self.send(Channel.AGENT, [control.dump(msg)])

    def receive(self, data: bytes) -> Delivery | None:
        """Feed one binary websocket message; ProtocolError on bad input."""
        session = self.session
        acked = session.peer_acked
        delivery = session.receive(data)
        if session.peer_acked != acked:
            self.flow.on_acked(session.peer_acked, time.monotonic())
            self._wake.set()
        if session.ack_due():
            self._want_ack()
        elif session.ack_pending and self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_ack)
        return delivery

    def _want_ack(self) -> None:
        self._ack_wanted = True
        self._wake.set()

    def _flush_ack(self) -> None:
        self._ack_timer = None
        if self.session.ack_pending:
            self._want_ack()

    def unbound(self) -> None:
        """Write everything queued regardless of acks (closing: the last request, say ending
        the lease, must reach a peer that stopped acknowledging what came before it)."""
        self._bounded = False
        self._wake.set()

    @property
    def queued_bytes(self) -> int:
        """Bytes framed but not yet written (held back by the flow window or a cut)."""
        return sum(_size(buffers) for buffers in self._outbox)

    async def drain(self, timeout: float = 2.0) -> None:
        """Write what is queued to the attached websocket (best effort, bounded)."""
        ws = self.ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(timeout):
                while self._outbox:
                    await send_buffers(ws, self._outbox.popleft())

    def close(self) -> None:
        self._writer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        self.ws = None


def _size(buffers: list[bytes]) -> int:
    return sum(len(b) for b in buffers)


def _ignore_result(fut: asyncio.Future[Any]) -> None:
    """A probe's outcome is not needed (bytes received are the evidence); never leave an
    exception unretrieved, the ping's pong waiter included."""
    if fut.cancelled() or fut.exception() is not None:
        return
    waiter = fut.result()
    if isinstance(waiter, asyncio.Future):
        waiter.add_done_callback(lambda w: None if w.cancelled() else w.exception())
