"""Renter side of the tunnel: one websocket link to a provider agent, on the tunnel loop.

``RemoteLink.open()`` connects, checks the pinned certificate, authenticates and gets a lease.
Kernel messages flow through :meth:`send` / ``on_delivery``; agent requests through
:meth:`start_kernel`, :meth:`signal` and :meth:`stop_kernel`. When the websocket drops, the
link reconnects with jittered backoff and resumes the lease: each side replays what the other
did not receive. A link that falls silent (a stall) is reported lost after the liveness timeout
and a new connection is sought, but the silent one stays open: if the path returns, what it
held arrives at once and the link is up again without a handshake (a revival); if a new
connection is made first, the silent one is aborted. Where the link stands (opening, up, lost
since when, dead and why, closing) is core.link_state's table; the connect and handshake are
link_connect's, the agent requests link_requests'. Lower-layer errors of the connect are
mapped in link_connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.link_state import LinkEvent, LinkState, LinkStatus
from jupyter_gpumarket.core.session import TunnelSession
from jupyter_gpumarket.core.telemetry import TelemetryHistory
from jupyter_gpumarket.exceptions import (
    LinkLost,
    ProtocolError,
    ProviderRefused,
    ProviderUnreachable,
    TunnelError,
)
from jupyter_gpumarket.provisioning.agent_inbox import AgentInbox, BlobFetches
from jupyter_gpumarket.provisioning.link_connect import (
    LinkSettings,
    LinkSocket,
    ProviderTarget,
    connect,
)
from jupyter_gpumarket.provisioning.link_requests import AgentRequests
from jupyter_gpumarket.wire import SessionPipe

__all__ = ["LinkSettings", "ProviderTarget", "RemoteLink"]

log = logging.getLogger(__name__)


class RemoteLink(AgentRequests):
    """One lease on one provider, across reconnects."""

    def __init__(
        self,
        target: ProviderTarget,
        on_delivery: Callable[[Channel, Sequence[bytes]], None],
        settings: LinkSettings | None = None,
        on_notice: Callable[[str], None] | None = None,
        adopt_lease: str | None = None,
        paid: Any = None,
    ) -> None:
        self.target = target
        self.settings = settings or LinkSettings()
        self.session = TunnelSession(max_frame_bytes=self.settings.max_frame_bytes)
        self.pipe = SessionPipe(
            self.session,
            interval=self.settings.ping_interval,
            silence_timeout=self.settings.ping_timeout,
            on_dead=self._on_silent,
            on_revived=self._on_revived,
        )
        self.lease: str | None = adopt_lease
        self.status = LinkStatus.opening(adopt=adopt_lease is not None)  # core.link_state
        self.paid = paid  # provisioning.paid.PaidLease: answers the provider's challenge
        self.agent_info: dict[str, Any] = {}
        self.generation = 0
        self.exit_code: int | None = None
        self.exit_reason = ""
        self.reconnects = 0
        self.reconnect_attempt = 0  # attempts since the link went down (0: it is up)
        self.stalls = 0  # times the provider fell silent (the link was reported lost)
        self.revivals = 0  # silent links that came back before a new connection was made
        self._on_delivery = on_delivery
        self._on_notice = on_notice or (lambda text: None)
        self._reader: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._started: asyncio.Future[control.KernelStarted] | None = None
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._inbox = AgentInbox(self._dispatch, self._expects_big)
        self._blobs = BlobFetches()
        self._exited = asyncio.Event()
        self.telemetry = TelemetryHistory()  # the provider's samples (control.Telemetry)

    # -- connecting ------------------------------------------------------------------------
    async def open(self) -> None:
        """First connection; errors are final (wrong pin, token, unreachable)."""
        ws = await self._connect(self.settings.connect_timeout)
        self._run(ws)

    # -- state (core.link_state) -------------------------------------------------------------
    @property
    def dead_reason(self) -> str | None:
        return self.status.dead_reason

    @property
    def lost_since(self) -> float | None:
        return self.status.lost_since

    @property
    def _closing(self) -> bool:
        return self.status.closing

    async def _connect(self, timeout: float) -> LinkSocket:
        hello = control.Hello(
            token=self.target.token,
            lease=self.lease,
            last_received=self.session.last_received,
            adopt=self.status.adopting,
            channel=self.paid.channel_hex if self.paid is not None else None,
        )
        ws, opened = await connect(self.target, self.settings, hello, timeout, self.paid)
        welcome = opened.welcome
        self.lease = welcome.lease
        self.agent_info = welcome.agent
        if opened.adopted:
            self.session.adopt(welcome.last_received, welcome.replay_from)
            self.generation = opened.generation
        old = self.pipe.attach(ws, welcome.last_received)
        if old is not None:  # a silent link kept open in case it came back: it did not
            old.transport.abort()
        return ws

    def _run(self, ws: LinkSocket) -> None:
        self.reconnect_attempt = 0
        self.status.handle(LinkEvent.CONNECTED)
        self._reader = asyncio.ensure_future(self._read(ws))

    async def _read(self, ws: LinkSocket) -> None:
        pipe, deliver, gaps = self.pipe, self._on_delivery, self.session.gaps
        known_gaps = len(gaps)
        try:
            async for data in ws:
                if isinstance(data, str):
                    raise ProtocolError("text message from the provider after the welcome")
                delivery = pipe.receive(data)
                if len(gaps) != known_gaps:
                    self._report_gaps(gaps[known_gaps:])
                    known_gaps = len(gaps)
                if delivery is None:
                    continue
                if delivery.channel is Channel.AGENT:
                    self._inbox.receive(delivery.parts)
                else:
                    deliver(delivery.channel, delivery.parts)
        except ProtocolError as exc:
            log.error("provider sent bad data, dropping the link: %s", exc)
            await ws.close(CloseCode.PROTOCOL, "bad frame")
        except ConnectionClosed:
            pass
        if not pipe.detach(ws) or self._closing:
            return  # replaced by a new connection, or closed by the renter
        rcvd = ws.close_rcvd
        if rcvd is not None and rcvd.code in (1000, CloseCode.UNKNOWN_LEASE, CloseCode.SHUTDOWN):
            reason = f"the provider ended the kernel's lease ({rcvd.code} {rcvd.reason})"
            self._die(LinkEvent.ENDED, reason)
            return
        if self.status.state is not LinkState.UP:
            return  # fell silent before it closed: already reconnecting (or dead)
        log.warning("link to %s lost; reconnecting", self.target.url)
        self.status.handle(LinkEvent.LOST, now=time.monotonic())
        self._reconnector = asyncio.ensure_future(self._reconnect())

    def _on_silent(self, ws: Any, silent: float) -> None:
        if self.pipe.ws is not ws or self.status.state is not LinkState.UP:
            return
        self.stalls += 1
        log.warning(
            "no byte from the provider at %s for %.1f s; reconnecting (the silent link stays "
            "open in case it comes back)",
            self.target.url,
            silent,
        )
        self.status.handle(LinkEvent.LOST, now=time.monotonic())
        self._reconnector = asyncio.ensure_future(self._reconnect())

    def _on_revived(self, ws: Any) -> None:
        if self.pipe.ws is not ws or self.status.state is not LinkState.LOST:
            return
        if self._reconnector is not None:
            self._reconnector.cancel()  # an attempt under way closes its own connection
            self._reconnector = None
        self.revivals += 1
        log.info("link to %s is back after %.2f s of silence", self.target.url, self.downtime)
        self.reconnect_attempt = 0
        self.status.handle(LinkEvent.CONNECTED)

    def _report_gaps(self, gaps: Sequence[Any]) -> None:
        lost = sum(g.count for g in gaps)
        text = (
            f"[gpumarket] {lost} kernel message(s) were lost while the link to the provider was "
            "down: the provider's replay buffer overflowed (raise `gpumarket provider serve "
            "--replay-buffer-mb`). Output above may be incomplete."
        )
        log.warning(text)
        self._on_notice(text)

    async def _reconnect(self) -> None:
        s = self.settings
        delay = s.first_retry
        while self.status.state is LinkState.LOST:
            if self.downtime > s.link_grace:
                reason = f"the provider was unreachable for more than {s.link_grace:.0f} s"
                self._die(LinkEvent.GRACE_EXPIRED, reason)
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            self.reconnect_attempt += 1  # the launch state's "reconnecting (attempt n)"
            try:
                ws = await self._connect(s.reconnect_timeout)
            except (ProviderUnreachable, ProviderRefused) as exc:
                log.info("reconnect to %s failed: %s", self.target.url, exc)
                delay = min(delay * 2, s.max_retry)
                continue
            except TunnelError as exc:
                self._die(LinkEvent.FAILED, str(exc))
                return
            if self._closing:  # closed while this attempt was under way
                await ws.close()
                return
            self.reconnects += 1
            log.info("link to %s resumed after %.2f s", self.target.url, self.downtime)
            self._run(ws)
            return

    @property
    def downtime(self) -> float:
        return 0.0 if self.lost_since is None else time.monotonic() - self.lost_since

    def _die(self, event: LinkEvent, reason: str) -> None:
        log.error("remote kernel lost: %s", reason)
        reconnector = self._reconnector
        if reconnector is not None and reconnector is not asyncio.current_task():
            reconnector.cancel()
        ws = self.pipe.ws
        if ws is not None and self.status.state is LinkState.LOST:
            ws.transport.abort()  # a silent link kept open in case it came back
        self._on_notice(f"[gpumarket] the remote kernel is lost: {reason}")
        self.status.handle(event, reason=reason)
        if self.exit_code is None:
            self.exit_code = -1
            self.exit_reason = reason
        self._exited.set()
        if self._started is not None and not self._started.done():
            self._started.set_exception(LinkLost(reason))

    async def close(self, *, end_lease: bool = True, timeout: float = 5.0) -> None:
        """End the lease (the agent stops the kernel and wipes its dir) and close."""
        if self._closing:
            return
        was_up = self.status.state is LinkState.UP  # not a silent link kept in case
        self.status.handle(LinkEvent.CLOSE)
        ws = self.pipe.ws
        if end_lease and ws is not None and was_up:
            self.pipe.unbound()
            self.stop_kernel(end_lease=True)
            # The agent closes the link once the kernel is gone; wait for that, bounded.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await ws.wait_closed()
        for task in (self._reconnector, self._reader):
            if task is not None:
                task.cancel()
        self._inbox.close()
        if ws is not None and not was_up:
            ws.transport.abort()  # silent: a closing handshake would wait for nothing
        elif ws is not None:
            await ws.close()
        self.pipe.close()
