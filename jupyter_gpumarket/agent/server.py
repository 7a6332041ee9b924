"""The provider agent's websocket server (`gpumarket provider serve`).

Accepts wss connections, authenticates the hello, attaches the connection to a new or resumed
lease, and feeds binary frames to it. Bad input closes that one connection with a clear close
code and a log line; every other lease keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket import statefile
from jupyter_gpumarket._version import __version__
from jupyter_gpumarket.agent.egress import PortGuard
from jupyter_gpumarket.agent.files import store_for
from jupyter_gpumarket.agent.gpu_slices import GpuSlicePool
from jupyter_gpumarket.agent.kernels import KernelSettings
from jupyter_gpumarket.agent.lease import Lease
from jupyter_gpumarket.agent.market import MarketDesk
from jupyter_gpumarket.agent.preauth import (
    OPEN_TIMEOUT,
    PREAUTH_MAX_BYTES,
    PREAUTH_MAX_QUEUE,
    PreauthBudget,
    PreauthSlot,
)
from jupyter_gpumarket.agent.slots import KernelSlot, SlotPool
from jupyter_gpumarket.agent.tls import ProviderCertificate, ensure_certificate, server_ssl_context
from jupyter_gpumarket.core import control, paymsgs
from jupyter_gpumarket.core.control import CloseCode
from jupyter_gpumarket.core.frames import DEFAULT_MAX_FRAME_BYTES
from jupyter_gpumarket.core.gpu_slices import GpuSlice
from jupyter_gpumarket.core.handshake import Handshake
from jupyter_gpumarket.core.market_msgs import ChallengeRequest, ProbeRequest
from jupyter_gpumarket.exceptions import (
    AgentError,
    AuthenticationFailed,
    GpuMarketError,
    ProtocolError,
)
from jupyter_gpumarket.wire import CLOSE_TIMEOUT, CountingServerConnection

if TYPE_CHECKING:  # the payment stack (web3, eth-*) loads only for paid agents
    from jupyter_gpumarket.agent.payments import LeasePayment, PaidTerms, Payments

__all__ = ["AgentConfig", "AgentServer"]

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
HELLO_DEADLINE = 60.0  # the whole paid hello or relayed opening: then a stranger's slot is free
CONTROL_BYTES_PER_S = 16 * 1024 * 1024  # a link's control messages, parsed on the shared loop
AUTH_MAX_QUEUE = 64  # websocket frames read ahead of the lease (PREAUTH_MAX_QUEUE before auth)
_LATE = f"the hello did not complete within {HELLO_DEADLINE:.0f} s; try again"


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    dev: bool = True
    dev_token: str | None = None
    paid: PaidTerms | None = None
    max_kernels: int = 4
    gpu_indices: tuple[int, ...] = ()
    gpus_per_kernel: int = 1
    client_grace: float = 120.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    replay_limit_bytes: int = 64 * 1024 * 1024
    # Liveness of a renter's link (core.liveness), judged by bytes arriving: probe after
    # ping_interval s of quiet (None: never), drop the link after silence_timeout s of silence.
    ping_interval: float | None = 1.0
    silence_timeout: float = 8.0
    ready_file: Path | None = None
    kernel: KernelSettings = field(default_factory=KernelSettings)
    kernel_slots: tuple[KernelSlot, ...] = ()  # per-slot users (root agent with a sandbox)
    gpu_slices: tuple[GpuSlice, ...] = ()  # --slices/--mig-profile: a kernel gets one slice
    vram_reader: Any = None  # agent.gpu_slices.VramReader watching the slices
    slice_grace: float | None = None  # seconds a kernel may stay over its slice
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dev and not self.dev_token:
            raise AgentError("dev mode needs a token: pass --dev-token TOKEN")
        if not self.dev and self.paid is None:
            raise AgentError("a provider that is not --dev needs payment terms (--network …)")
        if self.max_kernels < 1:
            raise AgentError("--max-kernels must be at least 1")
        if self.kernel_slots and len(self.kernel_slots) < self.max_kernels:
            raise AgentError(
                f"{len(self.kernel_slots)} kernel slot users for --max-kernels "
                f"{self.max_kernels}: run `gpumarket provider setup --slots {self.max_kernels}`"
            )


def _nodelay(ws: ServerConnection) -> None:
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AgentServer:
    """Owns the leases, the ZMQ context and the listening socket."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.cert: ProviderCertificate = ensure_certificate(config.state_dir)
        self.leases: dict[str, Lease] = {}
        self.payments: Payments | None = None
        self._redeemer: asyncio.Future[None] | None = None
        self._gpus_in_use: set[int] = set()
        self._slots = (
            SlotPool.machine_wide(config.kernel_slots)
            if config.kernel_slots
            else SlotPool.indices(config.max_kernels)
        )
        self._gpu_slices = GpuSlicePool(config.gpu_slices) if config.gpu_slices else None
        self._port_guard: PortGuard | None = None
        self._context: zmq.asyncio.Context | None = None
        self._server: Server | None = None
        self._preauth = PreauthBudget()
        self.market = MarketDesk(
            info=config.info,
            fingerprint=self.cert.fingerprint,
            capacity=self._capacity,
            sign=self._sign_probe,
        )
        self.url = ""
        (config.state_dir / "leases").mkdir(parents=True, exist_ok=True, mode=0o700)

    async def start(self) -> None:
        cfg = self.config
        if cfg.paid is not None and self.payments is None:
            from jupyter_gpumarket.agent.payments import Payments  # web3 only for paid agents

            self.payments = await asyncio.to_thread(Payments, cfg.paid, cfg.state_dir)
            self._redeemer = asyncio.ensure_future(self.payments.redeem_loop(self._paid_channels))
        self._context = zmq.asyncio.Context()
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            ssl=server_ssl_context(self.cert),
            # strangers get small messages; _authenticated() raises it to the frame limit
            max_size=min(PREAUTH_MAX_BYTES, cfg.max_frame_bytes),
            open_timeout=OPEN_TIMEOUT,  # the TLS handshake and the HTTP upgrade
            compression=None,
            # no library keepalive: a pong queued behind megabytes of output is no sign of a
            # dead link; a lease's pipe judges liveness by progress, the hello by its timeouts
            ping_interval=None,
            close_timeout=CLOSE_TIMEOUT,
            max_queue=PREAUTH_MAX_QUEUE,  # _authenticated() raises it to AUTH_MAX_QUEUE
            create_connection=CountingServerConnection,
        )
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"wss://{host}:{port}"
        log.info("agent %s listening on %s (TLS %s)", __version__, self.url, self.cert.fingerprint)
        self._port_guard = PortGuard.for_agent(cfg.kernel.sandbox, cfg.kernel_slots, port)
        if not cfg.paid:  # a paid provider writes it once its offer is published
            self.write_ready_file()

    def write_ready_file(self, **extra: Any) -> None:
        """{url, tls_fingerprint, ...extra} into --ready-file, atomically."""
        path = self.config.ready_file
        if path is None:
            return
        info = {"url": self.url, "tls_fingerprint": self.cert.fingerprint, **extra}
        statefile.write_json(path, info, mode=0o644, durable=False)

    def _paid_channels(self) -> set[bytes]:
        return {
            lease.payment.channel.channel_id
            for lease in self.leases.values()
            if lease.payment is not None and not lease.ended
        }

    async def stop(self) -> None:
        """Stop listening, end every lease (no orphan kernels), release the context."""
        if self._redeemer is not None:
            self._redeemer.cancel()
        if self._server is not None:
            self._server.close(close_connections=False)
        await asyncio.gather(*(lease.end() for lease in list(self.leases.values())))
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._context is not None:
            self._context.term()
        if self._port_guard is not None:
            self._port_guard.remove()
        if self.config.ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.config.ready_file.unlink()

    # -- connections -------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        _nodelay(ws)
        peer = ws.remote_address
        slot = self._preauth.admit(str(peer[0]) if peer else "unknown")
        if isinstance(slot, str):
            log.warning("refused %s: %s", peer, slot)
            await ws.close(1013, _reason(slot))  # 1013: try again later
            return
        try:
            await self._accept(ws, slot)
        finally:
            slot.release()

    def _authenticated(self, ws: ServerConnection, slot: PreauthSlot) -> None:
        """The hello is accepted: full-size frames, and no longer a stranger's slot."""
        ws.protocol.max_message_size = self.config.max_frame_bytes
        ws.recv_messages.high, ws.recv_messages.low = AUTH_MAX_QUEUE, AUTH_MAX_QUEUE // 4
        slot.release()

    async def _accept(self, ws: ServerConnection, slot: PreauthSlot) -> None:
        peer = ws.remote_address
        hs = Handshake.agent(paid=self.payments is not None, dev_token=self.config.dev_token)
        try:
            first = hs.receive_text(await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT))
        except TimeoutError:
            await ws.close(CloseCode.PROTOCOL, "no hello within 10 s")
            return
        except AuthenticationFailed as exc:
            log.warning("refused %s: %s", peer, exc)
            await ws.close(CloseCode.UNAUTHORIZED, _reason(str(exc)))
            return
        except ProtocolError as exc:
            log.warning("refused %s: bad hello: %s", peer, exc)
            await ws.close(CloseCode.PROTOCOL, _reason(f"bad hello: {exc}"))
            return
        except ConnectionClosed:
            return
        deadline = asyncio.get_running_loop().time() + HELLO_DEADLINE
        if isinstance(first, paymsgs.RelayOpen):
            try:
                async with asyncio.timeout_at(deadline):
                    await self._relay(ws, first)
            except TimeoutError:
                log.warning("relay for %s: no answer within %.0f s", peer, HELLO_DEADLINE)
                await ws.close(CloseCode.RELAY_REFUSED, _reason(_LATE))
            return
        if isinstance(first, ProbeRequest | ChallengeRequest):
            await self.market.handle(ws, first)
            return
        hello: control.Hello = first
        payment = None
        if self.payments is not None:
            try:
                async with asyncio.timeout_at(deadline):  # the chain read too
                    payment = await self._authenticate_channel(ws, hs, hello)
            except TimeoutError:
                log.warning("refused %s: %s", peer, _LATE)
                await ws.close(CloseCode.UNAUTHORIZED, _reason(_LATE))
                return
            except (AuthenticationFailed, ProtocolError) as exc:
                log.warning("refused %s: %s", peer, exc)
                await ws.close(CloseCode.UNAUTHORIZED, _reason(str(exc)))
                return
            except ConnectionClosed:
                return
        self._authenticated(ws, slot)
        lease = self._lease_for(hello, payment)
        if isinstance(lease, tuple):
            code, reason = hs.refused(*lease)
            log.warning("refused %s: %s", peer, reason)
            await ws.close(code, _reason(reason))
            return
        welcome, peer_last = hs.welcome(
            lease=lease.id,
            last_received=lease.session.last_received,
            replay_from=lease.session.replay_from,
            agent={
                **self.config.info,
                "version": __version__,
                "gpus": list(lease.gpus),
                "generation": lease.generation,
                "kernel_alive": lease.kernel_alive,
            },
        )
        try:
            await lease.attach(ws, peer_last, welcome)
        except ProtocolError as exc:
            await ws.close(CloseCode.PROTOCOL, _reason(str(exc)))
            return
        except ConnectionClosed:
            return
        log.info("%s lease %s for %s", "resumed" if hello.lease else "opened", lease.id, peer)
        await self._serve(ws, lease)

    async def _serve(self, ws: ServerConnection, lease: Lease) -> None:
        try:
            while True:
                data = await ws.recv()
                if isinstance(data, str):
                    raise ProtocolError("text message after the hello; frames are binary")
                parsed = lease.on_frame(data)
                # queued frames of one link wait their turn behind other leases, and one link
                # gets its control messages parsed at most CONTROL_BYTES_PER_S
                await asyncio.sleep(parsed / CONTROL_BYTES_PER_S)
        except ProtocolError as exc:
            log.warning("lease %s: closing link on bad input: %s", lease.id, exc)
            await ws.close(CloseCode.PROTOCOL, _reason(str(exc)))
        except ConnectionClosed as exc:
            log.info("lease %s: link closed (%s)", lease.id, exc)
        except Exception:  # a bug here must cost one link, never the agent
            log.exception("lease %s: internal error; closing the link", lease.id)
            await ws.close(1011, "internal error in the provider agent")
        finally:
            lease.detach(ws)

    async def _authenticate_channel(
        self, ws: ServerConnection, hs: Handshake, hello: control.Hello
    ) -> LeasePayment:
        """Paid providers: the renter proves it holds the session key of an open channel."""
        assert self.payments is not None
        assert hello.channel is not None  # the handshake refused a paid hello without one
        client = str(ws.remote_address[0]) if ws.remote_address else ""
        challenge = self.payments.challenge(client)
        await ws.send(hs.send_challenge(challenge))
        answer = hs.receive_text(await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT))
        view = await self.payments.authenticate(hello.channel, challenge, answer, client)
        hs.verified()
        return self.payments.lease(view, resuming=hello.lease is not None)

    async def _relay(self, ws: ServerConnection, req: paymsgs.RelayOpen) -> None:
        """Open a channel for a renter without gas (its signed opening), answer, close."""
        peer = ws.remote_address
        if self.payments is None:
            await ws.close(CloseCode.RELAY_REFUSED, "a dev provider relays no channel openings")
            return
        try:
            result = await self.payments.relay_open(req)
        except GpuMarketError as exc:
            log.warning("relay for %s refused: %s", peer, exc)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(CloseCode.RELAY_REFUSED, _reason(str(exc)))
            return
        log.info("relayed channel %s for %s", result.channel, req.renter)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(control.dump(result).decode())
            await ws.close()

    def _lease_for(
        self, hello: control.Hello, payment: LeasePayment | None = None
    ) -> Lease | tuple[int, str]:
        if hello.lease is not None:
            lease = self.leases.get(hello.lease)
            if lease is None or lease.ended:
                return CloseCode.UNKNOWN_LEASE, f"lease {hello.lease} is not on this provider"
            if payment is not None and (
                lease.payment is None
                or lease.payment.channel.channel_id != payment.channel.channel_id
            ):
                return CloseCode.UNAUTHORIZED, "that lease is paid by another channel"
            return lease
        if len(self.leases) >= self.config.max_kernels:
            return CloseCode.CAPACITY, (
                f"provider is full ({self.config.max_kernels} kernels); pick another offer"
            )
        gpu_slice = self._gpu_slices.acquire() if self._gpu_slices is not None else None
        if self._gpu_slices is not None and gpu_slice is None:
            return CloseCode.CAPACITY, "every GPU slice of this provider is in use; try later"
        gpus = self._allot_gpus() if gpu_slice is None else (gpu_slice.gpu_index,)
        if gpus is None:
            return CloseCode.CAPACITY, "all GPUs of this provider are in use; pick another offer"
        slot = self._slots.acquire()
        if slot is None:
            self._gpus_in_use.difference_update(gpus)
            if gpu_slice is not None and self._gpu_slices is not None:
                self._gpu_slices.release(gpu_slice)
            return CloseCode.CAPACITY, "every kernel slot of this machine is in use; try later"
        lease = Lease(
            root=self.config.state_dir / "leases",
            context=self._context,  # type: ignore[arg-type]  # set by start()
            settings=self.config.kernel,
            gpus=gpus,
            slot=slot,
            client_grace=self.config.client_grace,
            on_end=self._lease_ended,
            store=store_for(
                self.config.state_dir, payment.channel.renter if payment else hello.token
            ),
            payment=payment,
            max_frame_bytes=self.config.max_frame_bytes,
            replay_limit_bytes=self.config.replay_limit_bytes,
            keepalive=self.config.ping_interval,
            silence_timeout=self.config.silence_timeout,
        )
        if gpu_slice is not None:
            lease.use_slice(gpu_slice, self.config.vram_reader, self.config.slice_grace)
        self.leases[lease.id] = lease
        return lease

    def _allot_gpus(self) -> tuple[int, ...] | None:
        """GPUs for a new lease: () on a CPU-only provider, None when all are taken."""
        if not self.config.gpu_indices:
            return ()
        free = [i for i in self.config.gpu_indices if i not in self._gpus_in_use]
        if len(free) < self.config.gpus_per_kernel:
            return None
        chosen = tuple(free[: self.config.gpus_per_kernel])
        self._gpus_in_use.update(chosen)
        return chosen

    def _capacity(self) -> tuple[int, int]:
        """(free kernel slots, free GPUs) now, for the market's probe."""
        free_kernels = max(0, self.config.max_kernels - len(self.leases))
        if self._gpu_slices is not None:
            return free_kernels, self._gpu_slices.free
        return free_kernels, len(set(self.config.gpu_indices) - self._gpus_in_use)

    def _sign_probe(self, message: bytes) -> tuple[str, str] | None:
        """A paid agent answers a probe as its provider (EIP-191 over nonce + TLS pin)."""
        if self.config.paid is None:
            return None
        from eth_account.messages import encode_defunct

        account = self.config.paid.account
        signed = account.sign_message(encode_defunct(primitive=message))
        return account.address, "0x" + bytes(signed.signature).hex()

    def _lease_ended(self, lease: Lease) -> None:
        self.leases.pop(lease.id, None)
        if lease.gpu_slice is not None and self._gpu_slices is not None:
            self._gpu_slices.release(lease.gpu_slice)
        else:
            self._gpus_in_use.difference_update(lease.gpus)
        if lease.slot is not None:
            self._slots.release(lease.slot)


def _reason(text: str) -> str:
    """Close reasons must fit a control frame (123 bytes of UTF-8)."""
    data = text.encode()[:120]
    return data.decode(errors="ignore")
