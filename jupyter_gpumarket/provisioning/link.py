"""Renter side of the tunnel: one websocket link to a provider agent, on the tunnel loop.

``RemoteLink.open()`` connects, checks the pinned certificate, authenticates and gets a lease.
Kernel messages flow through :meth:`send` / ``on_delivery``; agent requests through
:meth:`start_kernel`, :meth:`signal` and :meth:`stop_kernel`. When the websocket drops, the
link reconnects with jittered backoff and resumes the lease: each side replays what the other
did not receive. Lower-layer errors (OSError, websockets) are mapped to the project's errors
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.filesync import IGNORE_FILE, format_bytes
from jupyter_gpumarket.core.frames import DEFAULT_MAX_FRAME_BYTES, Channel
from jupyter_gpumarket.core.session import TunnelSession
from jupyter_gpumarket.core.telemetry import TelemetryHistory
from jupyter_gpumarket.exceptions import (
    AuthenticationFailed,
    KernelLaunchError,
    LinkLost,
    ProtocolError,
    ProviderRefused,
    ProviderUnreachable,
    SyncTooLarge,
    TunnelError,
)
from jupyter_gpumarket.pinned import connect_pinned
from jupyter_gpumarket.provisioning.agent_inbox import AgentInbox, BlobFetches
from jupyter_gpumarket.wire import SessionPipe

__all__ = ["LinkSettings", "ProviderTarget", "RemoteLink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderTarget:
    url: str
    tls_fingerprint: str
    token: str


@dataclass(frozen=True)
class LinkSettings:
    connect_timeout: float = 15.0
    ping_interval: float = 2.0
    ping_timeout: float = 3.0
    link_grace: float = 120.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # Reconnect backoff: first retry after <= 50 ms, doubling, jittered, never above
    # max_retry, so a link that comes back is used again within ~1 s.
    first_retry: float = 0.05
    max_retry: float = 0.8
    reconnect_timeout: float = 1.5  # per attempt: a black-holed attempt must not block longer


def _closed_error(exc: ConnectionClosed, url: str, paid: bool = False) -> TunnelError:
    rcvd = exc.rcvd
    code, reason = (rcvd.code, rcvd.reason) if rcvd else (1006, "connection lost")
    if code == CloseCode.UNAUTHORIZED and paid:
        return AuthenticationFailed(f"the provider at {url} refused this lease's channel: {reason}")
    if code == CloseCode.UNAUTHORIZED:
        return AuthenticationFailed(
            f"the provider at {url} refused the credentials ({reason}): check "
            "GPUMARKET_DEV_TOKEN (or the provisioner's dev_token) against the provider's token"
        )
    if code in (CloseCode.CAPACITY, CloseCode.PROTOCOL):
        return ProviderRefused(f"the provider at {url} refused the connection: {reason}")
    if code == CloseCode.UNKNOWN_LEASE:
        return LinkLost(f"the provider at {url} no longer has this kernel ({reason})")
    return ProviderUnreachable(f"the provider at {url} closed the connection: {code} {reason}")


_BIG_REPLIES = frozenset({"sync_need", "pull_manifest"})  # replies that may be megabytes
_REPLY_TO = {
    "sync_offer": "sync_need",
    "sync_commit": "sync_done",
    "pull_request": "pull_manifest",
    "fetch_blob": "blob:",
}


class RemoteLink:
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
        self.pipe = SessionPipe(self.session)
        self.lease: str | None = adopt_lease
        self._adopt = adopt_lease is not None
        self.paid = paid  # provisioning.paid.PaidLease: answers the provider's challenge
        self.agent_info: dict[str, Any] = {}
        self.generation = 0
        self.exit_code: int | None = None
        self.exit_reason = ""
        self.dead_reason: str | None = None
        self.lost_since: float | None = None
        self.reconnects = 0
        self.reconnect_attempt = 0  # attempts since the link went down (0: it is up)
        self._on_delivery = on_delivery
        self._on_notice = on_notice or (lambda text: None)
        self._closing = False
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

    async def _connect(self, timeout: float) -> ClientConnection:
        url, s = self.target.url, self.settings
        ws = await connect_pinned(
            url,
            self.target.tls_fingerprint,
            unreachable=lambda exc: (
                f"cannot reach the provider at {url}: {exc}; check that it runs and the URL"
            ),
            mismatch=lambda shown: (
                f"the provider at {url} presented certificate {shown}, not the "
                f"pinned {self.target.tls_fingerprint}: someone may be in the middle, or the "
                "provider made a new certificate — check GPUMARKET_TLS_FINGERPRINT against "
                "the provider's ready file or registry entry"
            ),
            open_timeout=timeout,
            max_size=s.max_frame_bytes,
            compression=None,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            max_queue=64,
        )
        try:
            hello = control.Hello(
                token=self.target.token,
                lease=self.lease,
                last_received=self.session.last_received,
                adopt=self._adopt,
                channel=self.paid.channel_hex if self.paid is not None else None,
            )
            await ws.send(control.dump(hello).decode())
            raw = await asyncio.wait_for(ws.recv(), timeout)
            if self.paid is not None:
                challenge = control.parse_text(raw, paymsgs.AuthChallenge)
                await ws.send(control.dump(self.paid.answer(challenge)).decode())
                raw = await asyncio.wait_for(ws.recv(), timeout)
            welcome = control.parse_welcome(raw)
        except ConnectionClosed as exc:
            raise _closed_error(exc, url, self.paid is not None) from None
        except (TimeoutError, ProtocolError) as exc:
            await ws.close()
            raise ProviderRefused(f"the provider at {url} did not answer the hello: {exc}") from exc
        except BaseException:
            await ws.close()
            raise
        if self.lease is not None and welcome.lease != self.lease:
            await ws.close()
            raise LinkLost(f"the provider at {url} answered for another lease")
        self.lease = welcome.lease
        self.agent_info = welcome.agent
        if self._adopt:
            if not welcome.agent.get("kernel_alive"):
                await ws.close()
                raise LinkLost(f"the provider at {url} has lease {self.lease} but no kernel in it")
            self.session.adopt(welcome.last_received, welcome.replay_from)
            self.generation = int(welcome.agent.get("generation", 1))
            self._adopt = False
        self.pipe.attach(ws, welcome.last_received)
        return ws

    def _run(self, ws: ClientConnection) -> None:
        self.lost_since = None
        self.reconnect_attempt = 0
        self._reader = asyncio.ensure_future(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
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
        pipe.detach(ws)
        if self._closing:
            return
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None and rcvd.code in (1000, CloseCode.UNKNOWN_LEASE, CloseCode.SHUTDOWN):
            self._die(f"the provider ended the kernel's lease ({rcvd.code} {rcvd.reason})")
            return
        log.warning("link to %s lost; reconnecting", self.target.url)
        self.lost_since = time.monotonic()
        self._reconnector = asyncio.ensure_future(self._reconnect())

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
        assert self.lost_since is not None
        while not self._closing:
            if time.monotonic() - self.lost_since > s.link_grace:
                self._die(f"the provider was unreachable for more than {s.link_grace:.0f} s")
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
                self._die(str(exc))
                return
            self.reconnects += 1
            log.info("link to %s resumed after %.2f s", self.target.url, self.downtime)
            self._run(ws)
            return

    @property
    def downtime(self) -> float:
        return 0.0 if self.lost_since is None else time.monotonic() - self.lost_since

    def _die(self, reason: str) -> None:
        log.error("remote kernel lost: %s", reason)
        self._on_notice(f"[gpumarket] the remote kernel is lost: {reason}")
        self.dead_reason = reason
        if self.exit_code is None:
            self.exit_code = -1
            self.exit_reason = reason
        self._exited.set()
        if self._started is not None and not self._started.done():
            self._started.set_exception(LinkLost(reason))

    # -- agent requests ----------------------------------------------------------------------
    def _expects_big(self) -> bool:
        return not _BIG_REPLIES.isdisjoint(self._waiters)

    @property
    def dropped_bytes(self) -> int:
        """Blob bytes the provider sent that nobody asked for (dropped, never kept)."""
        return self._blobs.dropped_bytes

    def _on_chunk(self, msg: control.BlobChunk, extra: Sequence[bytes]) -> None:
        done = self._blobs.on_chunk(msg, extra)
        if isinstance(done, ProtocolError):
            fut = self._waiters.pop(f"blob:{msg.sha256}", None)
            if fut is not None and not fut.done():
                fut.set_exception(done)
        elif done is not None:
            self._resolve(f"blob:{msg.sha256}", done)

    def _dispatch(self, msg: Any, extra: Sequence[bytes]) -> None:
        if isinstance(msg, control.BlobChunk):
            self._on_chunk(msg, extra)
        elif msg.op in self._waiters:
            self._resolve(msg.op, msg)
        elif isinstance(msg, control.KernelStarted):
            self.generation = msg.generation
            self.exit_code = None
            self._exited.clear()
            if self._started is not None and not self._started.done():
                self._started.set_result(msg)
        elif isinstance(msg, control.KernelExited):
            if msg.generation >= self.generation:
                self.exit_code = msg.code
                self.exit_reason = msg.reason
                self._exited.set()
                if msg.reason:  # the provider stopped it (disk quota, payment, ...): say why
                    self._on_notice(f"[gpumarket] the provider stopped the kernel: {msg.reason}")
        elif isinstance(msg, control.Telemetry):
            self.telemetry.add(msg.sample)
        elif isinstance(msg, paymsgs.VoucherAck):
            if self.paid is not None:
                self.paid.on_ack(msg.amount)
        elif isinstance(msg, paymsgs.PaymentNotice):
            log.warning("provider: %s", msg.message)
            self._on_notice(f"[gpumarket] provider: {msg.message}")
        elif isinstance(msg, control.Refused):
            log.error("provider refused %s: %s", msg.request, msg.message)
            for op, fut in list(self._waiters.items()):
                reply = _REPLY_TO.get(msg.request, "")
                if not fut.done() and reply and op.startswith(reply):
                    fut.set_exception(
                        ProviderRefused(f"provider refused {msg.request}: {msg.message}")
                    )
                    del self._waiters[op]
            if msg.request == "start_kernel" and self._started and not self._started.done():
                self._started.set_exception(KernelLaunchError(msg.message))

    def _resolve(self, key: str, value: Any) -> None:
        fut = self._waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def send(self, channel: Channel, parts: Sequence[Any]) -> None:
        self.pipe.send(channel, parts)

    async def request(
        self, msg: Any, reply_op: str, timeout: float, data: bytes | None = None
    ) -> Any:
        """Send an AGENT request and wait for the reply op (or the refusal)."""
        if self.dead_reason:
            raise LinkLost(self.dead_reason)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[reply_op] = fut
        self.send_agent(msg, data)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ProviderRefused(
                f"the provider did not answer {msg.op} within {timeout:.0f} s"
            ) from None
        finally:
            self._waiters.pop(reply_op, None)

    def send_agent(self, msg: Any, data: bytes | None = None) -> None:
        payload = control.dump(msg)
        if len(payload) > control.MAX_CONTROL_BYTES:  # the provider would refuse it
            raise SyncTooLarge(
                f"the {msg.op} message is {format_bytes(len(payload))}, above the "
                f"{format_bytes(control.MAX_CONTROL_BYTES)} a control message carries (a file "
                f"list with too many or too long names): exclude files in {IGNORE_FILE}"
            )
        self.pipe.send(Channel.AGENT, [payload, *([data] if data is not None else [])])

    async def fetch_blob(self, sha256: str, size: int, timeout: float) -> list[bytes]:
        """The chunks of one blob of the last pull manifest, which declared ``size`` bytes:
        a provider that sends more fails the fetch (ProtocolError) instead of filling memory."""
        self._blobs.expect(sha256, size)
        try:
            return await self.request(control.FetchBlob(sha256=sha256), f"blob:{sha256}", timeout)
        finally:
            self._blobs.forget(sha256)

    async def drained(self, limit: int, timeout: float) -> None:
        """Wait until at most ``limit`` bytes we sent are unacknowledged (flow control).

        Raises :class:`ProviderRefused` when the provider acknowledges nothing for ``timeout``
        seconds (a provider that stops acknowledging must not hang the launch forever).
        """
        loop = asyncio.get_running_loop()
        unacked = self.session.unacked_bytes
        deadline = loop.time() + timeout
        while unacked > limit:
            if self.dead_reason:
                raise LinkLost(self.dead_reason)
            now = self.session.unacked_bytes
            if now < unacked:  # progress: the provider acknowledged something
                unacked, deadline = now, loop.time() + timeout
            elif loop.time() > deadline:
                raise ProviderRefused(
                    f"the provider acknowledged none of the last {format_bytes(now)} of files "
                    f"sent to it for {timeout:.0f} s, so the upload was stopped: try another "
                    "provider, or raise GpuMarketProvisioner.launch_timeout on a slow link"
                )
            await asyncio.sleep(0.005)

    async def start_kernel(
        self, key: str, env: dict[str, str], timeout: float, kernel_args: tuple[str, ...] = ()
    ) -> None:
        if self.dead_reason:
            raise LinkLost(self.dead_reason)
        self._started = asyncio.get_running_loop().create_future()
        self.pipe.send_control(control.StartKernel(key=key, env=env, kernel_args=kernel_args))
        try:
            await asyncio.wait_for(self._started, timeout)
        except TimeoutError:
            raise KernelLaunchError(
                f"the provider did not start the kernel within {timeout:.0f} s"
            ) from None

    def signal(self, signum: int) -> None:
        self.pipe.send_control(control.Signal(signum=signum))

    def stop_kernel(self, *, end_lease: bool = False) -> None:
        self.pipe.send_control(control.StopKernel(end_lease=end_lease))

    async def wait_exit(self) -> int:
        await self._exited.wait()
        assert self.exit_code is not None
        return self.exit_code

    async def close(self, *, end_lease: bool = True, timeout: float = 5.0) -> None:
        """End the lease (the agent stops the kernel and wipes its dir) and close."""
        if self._closing:
            return
        self._closing = True
        ws = self.pipe.ws
        if end_lease and ws is not None and self.dead_reason is None:
            self.stop_kernel(end_lease=True)
            # The agent closes the link once the kernel is gone; wait for that, bounded.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await ws.wait_closed()
        for task in (self._reconnector, self._reader):
            if task is not None:
                task.cancel()
        self._inbox.close()
        if ws is not None:
            await ws.close()
        self.pipe.close()
