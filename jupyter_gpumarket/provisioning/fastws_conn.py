"""The picows (Cython) client websocket of the renter's link: the subset of websockets'
ClientConnection that the link, its connect and SessionPipe use (send, recv, iteration,
close, wait_closed, ping, pong, transport, close_rcvd), with websockets' exceptions.

Messages are whole (fragments reassembled, ``max_size`` applied to the total: more is refused
with 1009), text and binary apart (bad UTF-8: 1007); the receive queue pauses reading the
transport at ``max_queue`` messages and resumes at a quarter of it; a closing handshake never
waits longer than ``close_timeout`` for the peer. Connecting is provisioning.fastws's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from typing import Any

from picows import WSListener, WSMsgType, WSTransport
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import OK_CLOSE_CODES, Close

__all__ = ["CountingProtocol", "PicowsConnection"]

log = logging.getLogger(__name__)

_NO_STATUS = 1005  # a close frame without a code (RFC 6455 7.1.5)
_TOO_BIG = 1009
_BAD_TEXT = 1007
_PROTOCOL_ERROR = 1002
_OK = {int(code) for code in OK_CLOSE_CODES}  # a close with these raises ConnectionClosedOK


class CountingProtocol(asyncio.BufferedProtocol):
    """Between the TLS transport and picows' protocol: counts bytes as they arrive.

    Until the pin is checked and picows' protocol attached, bytes are read and dropped (the
    server speaks only after the upgrade request, which is not sent before the check).
    """

    def __init__(self) -> None:
        self.inner: Any = None
        self.rx_at = 0.0
        self.rx_bytes = 0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._scratch = bytearray(4096)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def get_buffer(self, sizehint: int) -> Any:
        if self.inner is None:
            return self._scratch
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.rx_at = time.monotonic()
        self.rx_bytes += nbytes
        if self.inner is not None:
            self.inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class PicowsConnection(WSListener):
    """One client websocket over picows; the subset of websockets' ClientConnection the
    tunnel uses (send, recv, iteration, close, wait_closed, ping, pong, transport)."""

    def __init__(self, *, max_size: int, max_queue: int, close_timeout: float) -> None:
        super().__init__()
        self.max_size = max_size
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # the TLS one
        self._ws: WSTransport | None = None
        self._counter: CountingProtocol | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: deque[bytes | str] = deque()
        self.peak_queue = 0  # the most messages ever queued (tests check the bound)
        self._reading_paused = False
        self._writing_paused: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._frag_type: WSMsgType | None = None
        self._frag: list[bytes] = []
        self._frag_size = 0
        self._rcvd: Close | None = None
        self._sent: Close | None = None
        self._rcvd_then_sent: bool | None = None
        self._closed = self._loop.create_future()  # done when the transport is gone
        self._reaper: asyncio.Task[None] | None = None

    # -- counters and state ---------------------------------------------------------------
    @property
    def rx_at(self) -> float:
        return self._counter.rx_at if self._counter is not None else 0.0

    @property
    def rx_bytes(self) -> int:
        return self._counter.rx_bytes if self._counter is not None else 0

    @property
    def close_rcvd(self) -> Close | None:
        """The close frame the peer sent (code, reason), None if none arrived."""
        return self._rcvd

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _closing(self) -> bool:
        return self._closed.done() or self._sent is not None or self._rcvd is not None

    def _exc(self) -> ConnectionClosed:
        rcvd, sent = self._rcvd, self._sent
        both = rcvd is not None and sent is not None
        then = self._rcvd_then_sent if both else None
        if both and rcvd.code in _OK and sent.code in _OK:  # type: ignore[union-attr]
            return ConnectionClosedOK(rcvd, sent, then)
        return ConnectionClosedError(rcvd, sent, then)

    # -- picows callbacks -----------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        self._reaper = self._loop.create_task(self._reap(transport))

    @staticmethod
    async def _reap(transport: WSTransport) -> None:
        """picows keeps the error that made it disconnect (a frame too big …) for
        wait_disconnected(); it is reported through the close frames, so retrieve it."""
        with contextlib.suppress(Exception):
            await transport.wait_disconnected()

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        kind = frame.msg_type
        if kind is not WSMsgType.CLOSE and transport.is_close_frame_sent:
            # picows failed the connection itself (a frame over max_size) and may still parse
            # what follows; nothing after a close frame we sent is delivered.
            return
        if frame.payload_size > self.max_size:
            self._fail(_TOO_BIG, f"message over {self.max_size} bytes")
        elif kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
            if self._frag_type is not None:
                self._fail(_PROTOCOL_ERROR, "expected a continuation frame")
            elif frame.fin:
                self._deliver(kind, frame.get_payload_as_bytes())
            else:
                self._frag_type, self._frag = kind, [frame.get_payload_as_bytes()]
                self._frag_size = frame.payload_size
        elif kind is WSMsgType.CONTINUATION:
            if self._frag_type is None:
                self._fail(_PROTOCOL_ERROR, "unexpected continuation frame")
                return
            self._frag_size += frame.payload_size
            if self._frag_size > self.max_size:
                self._fail(_TOO_BIG, f"message over {self.max_size} bytes")
                return
            self._frag.append(frame.get_payload_as_bytes())
            if frame.fin:
                kind, data = self._frag_type, b"".join(self._frag)
                self._frag_type, self._frag, self._frag_size = None, [], 0
                self._deliver(kind, data)
        elif kind is WSMsgType.CLOSE:
            self._on_close_frame(transport, frame)
        # PING: picows answers it; PONG: bytes arrived, which is all liveness needs.

    def _deliver(self, kind: WSMsgType, data: bytes) -> None:
        if self._closing():
            return  # nothing after a close frame, or after we failed the connection
        message: bytes | str = data
        if kind is WSMsgType.TEXT:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self._fail(_BAD_TEXT, "invalid UTF-8 in a text message")
                return
        queue = self._queue
        queue.append(message)
        if len(queue) > self.peak_queue:
            self.peak_queue = len(queue)
        if len(queue) >= self.max_queue and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _on_close_frame(self, transport: WSTransport, frame: Any) -> None:
        code = int(frame.get_close_code()) or _NO_STATUS
        self._rcvd = Close(code, frame.get_close_reason() if code != _NO_STATUS else "")
        self._adopt_picows_close(transport)
        if self._sent is None:  # the peer closes: echo its close frame, then hang up
            self._sent = self._rcvd
            self._rcvd_then_sent = True
            transport.send(WSMsgType.CLOSE, frame.get_payload_as_bytes())
        self._hang_up()
        self._wake()

    def _adopt_picows_close(self, transport: WSTransport) -> None:
        """The close frame picows sent itself (it failed the connection: a frame too big …),
        as if sent here, before any close frame received."""
        handshake = transport.close_handshake
        if self._sent is None and handshake is not None and handshake.sent is not None:
            self._sent = Close(handshake.sent.code.value, handshake.sent.reason)
            self._rcvd_then_sent = False

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._adopt_picows_close(transport)
        if self._sent is not None and self._sent.code == _TOO_BIG:
            log.warning(
                "the peer sent a message over the %d byte limit: closed the link with 1009",
                self.max_size,
            )
        if not self._closed.done():
            self._closed.set_result(None)
        if self._writing_paused is not None and not self._writing_paused.done():
            self._writing_paused.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        if self._writing_paused is None or self._writing_paused.done():
            self._writing_paused = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writing_paused is not None and not self._writing_paused.done():
            self._writing_paused.set_result(None)

    # -- failing and closing --------------------------------------------------------------
    def _fail(self, code: int, reason: str) -> None:
        """Close with ``code`` at once (bad input), not waiting for the peer's answer."""
        if self._sent is None and self._ws is not None and not self._closed.done():
            self._sent = Close(code, reason)
            self._rcvd_then_sent = None if self._rcvd is None else True
            self._ws.send(WSMsgType.CLOSE, struct.pack("!H", code) + reason.encode())
        self._frag, self._frag_type = [], None
        self._hang_up()
        self._wake()

    def _hang_up(self) -> None:
        """Close the transport (TLS close_notify), aborting it if that takes too long."""
        if self._closed.done():
            return
        if self._reading_paused:  # let the peer's close answer in
            self._reading_paused = False
            self.transport.resume_reading()
        self.transport.close()
        self._loop.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        if not self._closed.done():
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake: send a close frame, wait up to ``close_timeout`` for the
        peer's (then hang up), abort the transport past it."""
        if not self._closing() and self._ws is not None:
            self._sent = Close(code, reason)
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
            self._ws.send(WSMsgType.CLOSE, struct.pack("!H", code) + reason.encode())
        elif self._closed.done():
            return
        try:
            async with asyncio.timeout(self.close_timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.transport.abort()
            await asyncio.shield(self._closed)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # -- traffic --------------------------------------------------------------------------
    async def send(self, message: bytes | bytearray | memoryview | str) -> None:
        if self._closing() or self._ws is None:
            raise self._exc()
        if isinstance(message, str):
            self._ws.send(WSMsgType.TEXT, message.encode())
        else:
            self._ws.send(WSMsgType.BINARY, message)
        paused = self._writing_paused
        if paused is not None and not paused.done():
            await asyncio.shield(paused)  # the transport's buffer is over its high-water mark
            if self._closed.done():
                raise self._exc()

    async def recv(self) -> bytes | str:
        queue = self._queue
        while not queue:
            if self._closing():
                raise self._exc()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = queue.popleft()
        if self._reading_paused and len(queue) <= self.max_queue // 4:
            self._reading_paused = False
            self.transport.resume_reading()
        return message

    def __aiter__(self) -> PicowsConnection:
        return self

    async def __anext__(self) -> bytes | str:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def ping(self, data: bytes = b"") -> None:
        if not self._closing() and self._ws is not None:
            self._ws.send_ping(data)

    async def pong(self, data: bytes = b"") -> None:
        if not self._closing() and self._ws is not None:
            self._ws.send_pong(data)
