"""One renter's lease on the agent: tunnel session, working dir, kernel generations.

A lease outlives websocket connections (the renter may reconnect and resume within the client
grace) and kernel processes (a restart starts a new generation in the same working dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from websockets.asyncio.server import ServerConnection

from jupyter_gpumarket.agent.blocking import BlockingRunner
from jupyter_gpumarket.agent.bridge import KernelBridge
from jupyter_gpumarket.agent.files import FILE_OPS, LeaseFiles
from jupyter_gpumarket.agent.filestore import BlobStore
from jupyter_gpumarket.agent.gpu import gpu_env
from jupyter_gpumarket.agent.gpu_slices import VramReader, watch_vram
from jupyter_gpumarket.agent.kernels import KernelProcess, KernelSettings, build_kernel_env
from jupyter_gpumarket.agent.slots import KernelSlot
from jupyter_gpumarket.agent.telemetry import stream as stream_telemetry
from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.gpu_slices import GpuSlice
from jupyter_gpumarket.core.session import TunnelSession
from jupyter_gpumarket.exceptions import GpuMarketError
from jupyter_gpumarket.wire import SessionPipe

if TYPE_CHECKING:
    from jupyter_gpumarket.agent.payments import LeasePayment

__all__ = ["Lease"]

log = logging.getLogger(__name__)

_MAX_PENDING = 1000
FILE_OP_TIMEOUT = 300.0  # one file-sync op (laying out a whole sync included)
END_LOCK_WAIT = 5.0  # how long ending a lease waits for the operation in progress


class Lease:
    """Everything the agent holds for one renter."""

    def __init__(
        self,
        *,
        root: Path,
        context: zmq.asyncio.Context,
        settings: KernelSettings,
        gpus: tuple[int, ...],
        client_grace: float,
        on_end: Callable[[Lease], None],
        store: BlobStore,
        max_frame_bytes: int,
        replay_limit_bytes: int,
        slot: KernelSlot | None = None,
        payment: LeasePayment | None = None,
        keepalive: float | None = 1.0,
        silence_timeout: float = 8.0,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.payment = payment  # paid providers: billing clock + voucher state
        self.slot = slot  # the kernel's uid (sandbox) and CPU share; the server hands it out
        self.dir = root / self.id
        self.workdir = self.dir / "work"
        self.workdir.mkdir(parents=True, mode=0o700)
        self.gpus = gpus
        self.gpu_slice: GpuSlice | None = None  # a shared GPU's slice (use_slice)
        self._vram_reader: VramReader | None = None
        self._slice_grace: float | None = None
        self.session = TunnelSession(
            max_frame_bytes=max_frame_bytes, replay_limit_bytes=replay_limit_bytes
        )
        self.pipe = SessionPipe(
            self.session,
            interval=keepalive,
            silence_timeout=silence_timeout,
            on_dead=self._on_silent,
            on_revived=self._on_revived,
        )
        self.files = LeaseFiles(
            store, self.dir, self.workdir, quota_bytes=settings.effective_limits.disk_bytes
        )
        self._file_ops = BlockingRunner(FILE_OP_TIMEOUT, "file operation")
        self._context = context
        self._settings = settings
        self._client_grace = client_grace
        self._on_end = on_end
        self._grace_timer: asyncio.TimerHandle | None = None
        self._silent: object = None  # the renter's connection while it is silent (kept open)
        self._tasks: set[asyncio.Future[None]] = set()
        self._kernel: KernelProcess | None = None
        self._bridge: KernelBridge | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._pending: list[tuple[Channel, tuple[bytes, ...]]] = []
        self._op_lock = asyncio.Lock()
        self.generation = 0
        self.ended = False
        self._held: list[tuple[Channel, tuple[bytes, ...]]] = []  # shell while payment paused
        self._created = self._idle_since = time.monotonic()  # no kernel, no file op since
        if payment is not None:
            payment.claim()  # one lease per channel
            self._spawn(self._watch_payment())
        self._spawn(stream_telemetry(self))

    # -- connection ------------------------------------------------------------------------
    async def attach(self, ws: ServerConnection, peer_last_received: int, welcome: str) -> None:
        """Send ``welcome`` on ``ws``, then make it the lease's connection and replay what the
        renter has not received. ProtocolError if the renter claims frames never sent."""
        self.session.replay_after(peer_last_received)  # validate before answering
        await ws.send(welcome)  # strictly before any replayed frame
        old = self.pipe.attach(ws, peer_last_received)
        if old is not None and old is self._silent:
            old.transport.abort()  # silent: a closing handshake would wait on it
        elif old is not None:
            self._spawn(old.close(control.CloseCode.REPLACED, "replaced by a new link"))
        self._silent = None
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _on_silent(self, ws: object, silent: float) -> None:
        """The renter fell silent: the client grace starts, but the connection stays open
        (a stalled path that returns delivers what it held, with no new handshake)."""
        if self.ended or self.pipe.ws is not ws:
            return
        log.warning(
            "lease %s: no byte from the renter for %.1f s; keeping it %.0f s",
            self.id,
            silent,
            self._client_grace,
        )
        self._silent = ws
        self._start_grace()

    def _on_revived(self, ws: object) -> None:
        if self.pipe.ws is not ws or self._silent is not ws:
            return
        log.info("lease %s: the renter's silent link is back", self.id)
        self._silent = None
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _start_grace(self) -> None:
        if self._grace_timer is not None:
            return  # already running (the link fell silent before it closed)
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_later(
            self._client_grace, lambda: self._spawn(self._grace_expired())
        )

    def detach(self, ws: ServerConnection) -> None:
        """The connection closed: keep the kernel for the client grace, then end the lease."""
        if self.ended or not self.pipe.detach(ws):
            return
        if self._silent is ws:
            self._silent = None  # its grace already runs
        log.info("lease %s: renter disconnected; keeping it %.0f s", self.id, self._client_grace)
        self._start_grace()

    async def _grace_expired(self) -> None:
        self._grace_timer = None
        ws = self.pipe.ws
        if not self.ended and (ws is None or ws is self._silent):
            log.warning("lease %s: renter gone longer than the grace; stopping it", self.id)
            await self.end()  # closes a silent connection too (bounded by its close timeout)

    def send_control(self, msg: Any) -> None:
        self.pipe.send_control(msg)

    @property
    def renter_connected(self) -> bool:
        """A renter's connection is attached and not silent (telemetry is sent only then)."""
        ws = self.pipe.ws
        return ws is not None and ws is not self._silent and not self.ended

    @property
    def kernel(self) -> KernelProcess | None:
        return self._kernel

    @property
    def kernel_alive(self) -> bool:
        return self._kernel is not None and self._kernel.exit_code is None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- frames from the renter --------------------------------------------------------------
    def on_frame(self, data: bytes) -> int:
        """Handle one binary message from the renter; the bytes of control message it parsed
        (the link paces itself by them). Raises ProtocolError on bad input."""
        delivery = self.pipe.receive(data)
        if delivery is None:
            return 0
        if delivery.channel is Channel.AGENT:
            payload, *extra = delivery.parts or (b"",)
            msg = control.parse_request(payload)  # small: it is parsed on the shared loop
            self._spawn(self._handle_op(msg, extra))
            return len(payload)
        if (
            delivery.channel is Channel.SHELL
            and self.payment is not None
            and not self.payment.executions_allowed
        ):
            self._held.append((delivery.channel, delivery.parts))  # runs once vouchers arrive
        elif self._bridge is not None:
            self._bridge.send(delivery.channel, delivery.parts)
        elif len(self._pending) < _MAX_PENDING:
            self._pending.append((delivery.channel, delivery.parts))
        return 0

    async def _handle_op(self, msg: Any, extra: list[bytes]) -> None:
        async with self._op_lock:
            if isinstance(msg, (*FILE_OPS, control.StartKernel)):
                self._idle_since = time.monotonic()  # a launch under way (vouchers do not count)
            try:
                if isinstance(msg, FILE_OPS):
                    replies = await self._file_ops.run(self.files.handle, msg, extra)
                    for reply, data in replies:
                        self.pipe.send(
                            Channel.AGENT,
                            [control.dump(reply), *([data] if data is not None else [])],
                        )
                elif isinstance(msg, paymsgs.Voucher):
                    self._on_voucher(msg)
                elif isinstance(msg, paymsgs.DepositChanged):
                    if self.payment is None:
                        raise GpuMarketError("this provider is in dev mode: it has no channels")
                    # an RPC read: off the op queue, so vouchers are not held behind it
                    self._spawn(self.payment.refresh_deposit())
                elif isinstance(msg, control.StartKernel):
                    await self._start_kernel(msg)
                elif isinstance(msg, control.Signal):
                    if self._kernel is not None:
                        self._kernel.signal(msg.signum)
                elif isinstance(msg, control.StopKernel):
                    await self._stop_kernel()
                    if msg.end_lease:
                        self._spawn(self.end())
                else:
                    raise GpuMarketError(f"{msg.op} is not a request the agent takes")
            except (GpuMarketError, OSError) as exc:
                log.warning("lease %s: %s failed: %s", self.id, msg.op, exc)
                self.send_control(control.Refused(request=msg.op, message=str(exc)))
            finally:
                if isinstance(msg, FILE_OPS):
                    self._idle_since = time.monotonic()

    # -- kernel generations ------------------------------------------------------------------
    async def _start_kernel(self, msg: control.StartKernel) -> None:
        await self._stop_kernel()
        env = build_kernel_env(
            os.environ,
            msg.env,
            workdir=self.workdir,
            gpu_env=self.gpu_slice.env() if self.gpu_slice else gpu_env(self.gpus),
            settings=self._settings,
        )
        kernel = KernelProcess(
            workdir=self.workdir,
            key=msg.key,
            env=env,
            settings=self._settings,
            slot=self.slot,
            gpus=self.gpus,
            on_warning=lambda text: self.send_control(
                paymsgs.PaymentNotice(level="warn", message=text)  # a provider notice
            ),
            kernel_args=msg.kernel_args,
            gpu_devices=self.gpu_slice.devices if self.gpu_slice else (),
        )
        try:
            await kernel.start()
        except BaseException:
            kernel.cleanup()
            raise
        self.generation += 1
        self._kernel = kernel
        self._bridge = KernelBridge(self._context, kernel.endpoint, self._from_kernel)
        for channel, parts in self._pending:
            self._bridge.send(channel, parts)
        self._pending.clear()
        self._waiter = asyncio.ensure_future(self._watch(kernel, self.generation))
        if self.gpu_slice is not None and self._vram_reader is not None:
            self._spawn(self._watch_slice(kernel))
        log.info("lease %s: kernel generation %d pid %s", self.id, self.generation, kernel.pid)
        if self.payment is not None:
            self.payment.kernel_ready()
        self.send_control(control.KernelStarted(generation=self.generation, gpus=self.gpus))

    def use_slice(
        self, gpu_slice: GpuSlice, reader: VramReader | None, grace: float | None = None
    ) -> None:
        """The lease's kernels run on ``gpu_slice``; ``reader`` watches their GPU memory."""
        self.gpu_slice, self._vram_reader, self._slice_grace = gpu_slice, reader, grace

    async def _watch_slice(self, kernel: KernelProcess) -> None:
        assert self.gpu_slice is not None
        assert self._vram_reader is not None
        await watch_vram(
            kernel,
            self.gpu_slice,
            self._vram_reader,
            lambda text: self.send_control(paymsgs.PaymentNotice(level="warn", message=text)),
            grace=self._slice_grace,
            uid=self.slot.uid if self.slot is not None else None,
        )

    def _from_kernel(self, channel: Channel, parts: list[zmq.Frame]) -> None:
        self.pipe.send(channel, parts)

    async def _watch(self, kernel: KernelProcess, generation: int) -> None:
        code = await kernel.wait()
        log.info("lease %s: kernel generation %d exited with %s", self.id, generation, code)
        if self._kernel is kernel:
            await self._drop_kernel()
        self._idle_since = time.monotonic()
        if self.payment is not None:
            self.payment.kernel_stopped()  # restarts are not billed
        self.send_control(
            control.KernelExited(generation=generation, code=code, reason=kernel.stop_reason)
        )

    async def _drop_kernel(self) -> None:
        kernel, bridge = self._kernel, self._bridge
        self._kernel = self._bridge = None
        if bridge is not None:
            await bridge.close()
        if kernel is not None:
            kernel.cleanup()

    async def _stop_kernel(self) -> None:
        kernel, waiter = self._kernel, self._waiter
        if kernel is None:
            return
        await kernel.stop()
        if waiter is not None:
            await waiter  # sends KernelExited and drops the bridge

    # -- payment -------------------------------------------------------------------------------
    def _on_voucher(self, msg: paymsgs.Voucher) -> None:
        if self.payment is None:
            raise GpuMarketError("this provider is in dev mode: it takes no vouchers")
        for reply in self.payment.on_voucher(msg):
            self.send_control(reply)
        if self.payment.executions_allowed and self._held:
            held, self._held = self._held, []
            for channel, parts in held:
                if self._bridge is not None:
                    self._bridge.send(channel, parts)

    async def _watch_payment(self) -> None:
        assert self.payment is not None
        while not self.ended:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.payment.recheck_due(now):
                self._spawn(self.payment.recheck())  # the channel on chain: off this loop
            action = self.payment.poll() or self._kernel_wait(now)
            if action is None:
                continue
            level, message = action
            log.warning("lease %s: %s", self.id, message)
            self.send_control(paymsgs.PaymentNotice(level=level, message=message))
            if level == "stop":
                self._spawn(self.end())
                return

    def _kernel_wait(self, now: float) -> tuple[str, str] | None:
        """A paid lease holds a kernel slot: without a kernel (and no file transfer of a
        launch) for the payment grace, or without ever starting one for ten graces, it ends."""
        assert self.payment is not None
        terms = self.payment.payments.terms
        grace = terms.grace
        deadline = terms.kernel_deadline or max(10 * grace, 600.0)
        if self.generation == 0 and now - self._created > deadline:  # file ops or not
            return "stop", (
                f"no kernel was started in this lease within {deadline:.0f} s: the provider "
                "ends it and frees its slot"
            )
        if self.kernel_alive or self._op_lock.locked():
            return None
        if now - self._idle_since > grace:
            return "stop", (
                f"no kernel in this lease for {grace:.0f} s: the provider ends it and frees "
                "its slot; start a new lease to run a kernel"
            )
        return None

    async def end(self) -> None:
        """Stop the kernel, close the link, settle, wipe the lease's dir. Idempotent."""
        if self.ended:
            return
        self.ended = True
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        locked = False
        try:  # an op stuck in the kernel must not hold up the end (or the agent's SIGTERM)
            locked = await asyncio.wait_for(self._op_lock.acquire(), END_LOCK_WAIT)
        except TimeoutError:
            log.warning("lease %s: an operation is still running; ending anyway", self.id)
        try:
            await self._stop_kernel()
        finally:
            if locked:
                self._op_lock.release()
        if self.payment is not None and not self.payment.settled:
            self.payment.kernel_stopped()
            self.payment.settled = True
            await self.payment.payments.settle(self.payment.channel.channel_id)
        if self.payment is not None:
            self.payment.release()
        await self.pipe.drain()  # the last control messages (KernelExited) reach the renter
        ws = self.pipe.ws
        self.pipe.close()
        if ws is not None:
            await ws.close(1000, "lease ended")
        shutil.rmtree(self.dir, ignore_errors=True)
        if locked and not self._file_ops.stuck:  # no file op is running: tidy up after it
            with contextlib.suppress(GpuMarketError, OSError):
                await self._file_ops.run(self.files.close)
        self._on_end(self)
        log.info("lease %s ended", self.id)
