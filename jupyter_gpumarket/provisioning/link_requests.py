"""The agent-request half of :class:`~.link.RemoteLink`: requests on the AGENT channel and
their replies (start, signal and stop the kernel, file sync, blob fetches), the kernel's exit
code, the provider's telemetry, vouchers' acks and notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.filesync import IGNORE_FILE, format_bytes
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession
from jupyter_gpumarket.core.telemetry import TelemetryHistory
from jupyter_gpumarket.exceptions import (
    KernelLaunchError,
    LinkLost,
    ProtocolError,
    ProviderRefused,
    SyncTooLarge,
)
from jupyter_gpumarket.provisioning.agent_inbox import BlobFetches
from jupyter_gpumarket.wire import SessionPipe

__all__ = ["AgentRequests"]

log = logging.getLogger(__name__)

_BIG_REPLIES = frozenset({"sync_need", "pull_manifest"})  # replies that may be megabytes
_REPLY_TO = {
    "sync_offer": "sync_need",
    "sync_commit": "sync_done",
    "pull_request": "pull_manifest",
    "fetch_blob": "blob:",
}


class AgentRequests:
    """Requests to the agent and what it tells unasked; RemoteLink sets the attributes."""

    pipe: SessionPipe
    session: TunnelSession
    paid: Any
    generation: int
    exit_code: int | None
    exit_reason: str
    telemetry: TelemetryHistory
    _on_notice: Callable[[str], None]
    _started: asyncio.Future[control.KernelStarted] | None
    _waiters: dict[str, asyncio.Future[Any]]
    _blobs: BlobFetches
    _exited: asyncio.Event

    @property
    def dead_reason(self) -> str | None:
        raise NotImplementedError

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
        if len(payload) > control.MAX_REQUEST_BYTES:  # the provider would refuse it
            raise SyncTooLarge(
                f"the {msg.op} message is {format_bytes(len(payload))}, above the "
                f"{format_bytes(control.MAX_REQUEST_BYTES)} a control message carries: send a "
                f"smaller environment or fewer kernel options, or exclude files in {IGNORE_FILE}"
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
