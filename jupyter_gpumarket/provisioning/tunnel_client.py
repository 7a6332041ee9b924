"""The provisioner's side of a tunnel process (:mod:`.tunnelproc`): start it, drive it.

:class:`TunnelClient` lives on the Jupyter server's loop and shows the provisioner (and the
server's launch monitor) the face of a :class:`RemoteLink`: ``exit_code``, ``dead_reason``,
``lost_since``, ``reconnect_attempt``, ``telemetry``, ``generation``, ``lease``, ``target``,
``start_kernel``, ``signal``, ``close``; the data itself never passes through this process.
The process's state arrives as status events on the 0600 control socket; when the socket
closes (the process exited), the kernel counts as exited.

For a paid kernel it is also the link a PaidRun streams vouchers through (``send_agent``,
``stop_kernel``, ``dead_reason``, from the tunnel thread), and it hands the provider's voucher
acks and the voucher interval to the lease (``payer``; see :mod:`.tunnel_paid`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_gpumarket import exceptions
from jupyter_gpumarket.core.filesync import Manifest
from jupyter_gpumarket.exceptions import GpuMarketError, LinkLost, TunnelError
from jupyter_gpumarket.procs import pid_alive
from jupyter_gpumarket.provisioning import tunnel_spare
from jupyter_gpumarket.provisioning.files import PushResult
from jupyter_gpumarket.provisioning.link import LinkSettings, ProviderTarget
from jupyter_gpumarket.provisioning.tunnel_start import process_mode_env, start_process

__all__ = ["MAX_LINE", "TunnelClient", "TunnelShim", "process_mode_env"]

log = logging.getLogger(__name__)

MAX_LINE = 8 * 1024 * 1024  # a control line (a file-sync manifest is the largest)


class TunnelShim:
    """What the provisioner keeps of the shim: its ports (the process owns the sockets)."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports

    async def close(self) -> None:
        return None


class _Telemetry:
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def to_json(self) -> list[dict[str, Any]]:
        return list(self.samples)


class TunnelClient:
    """One tunnel process, as the provisioner sees it."""

    def __init__(
        self,
        socket_path: Path,
        pid: int,
        target: ProviderTarget,
        proc: subprocess.Popen[bytes] | None = None,
        on_notice: Any = None,
        on_progress: Any = None,
        payer: Any = None,
    ) -> None:
        self.socket_path = socket_path
        self.pid = pid
        self.target = target
        self._proc = proc
        self._on_notice = on_notice or (lambda text: None)
        self._on_progress = on_progress or (lambda text: None)
        # a paid kernel's lease: on_ack(amount), on_interval(seconds), from the listener thread
        self.payer = payer
        self.paid: dict[str, Any] | None = None  # the process's lease: channel, interval
        self.exit_code: int | None = None
        self.exit_reason = ""
        self.dead_reason: str | None = None
        self.lost_since: float | None = None
        self.reconnect_attempt = 0
        self.reconnects = 0
        self.stalls = 0
        self.revivals = 0
        self.generation = 0
        self.lease: str | None = None
        self.agent_info: dict[str, Any] = {}  # the welcome's `agent` (as RemoteLink's)
        self.telemetry = _Telemetry()
        self.ports: dict[str, int] = {}
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._next_id = 0
        self._listener: threading.Thread | None = None
        self._closed = False
        self.grace: float | None = None  # the kernel's link grace, sent with ``open``

    # -- starting / connecting ---------------------------------------------------------------
    @classmethod
    def start(cls, name: str, grace: float) -> TunnelClient:
        """Start a tunnel process and connect to its control socket (blocking; any thread).
        Its target, callbacks and kernel's grace are set when a kernel takes it (:meth:`spawn`)."""
        proc, path = start_process(name, grace)
        client = cls(path, proc.pid, ProviderTarget("", "", ""), proc)
        try:
            client._attach()
        except OSError as exc:
            proc.kill()
            proc.wait()
            raise TunnelError(f"cannot reach the tunnel process's control socket: {exc}") from None
        return client

    @classmethod
    async def spawn(
        cls,
        kernel_id: str,
        target: ProviderTarget,
        grace: float,
        on_notice: Any = None,
        on_progress: Any = None,
    ) -> TunnelClient:
        """A tunnel process for one kernel: the server's spare when it has one (ready, so the
        kernel's start does not wait for an interpreter), else a new one; a new spare follows."""
        client = tunnel_spare.take()
        if client is None:
            client = await asyncio.to_thread(cls.start, kernel_id, grace)
        tunnel_spare.refill(cls.start)
        client.target, client.grace = target, grace
        client._on_notice = on_notice or client._on_notice
        client._on_progress = on_progress or client._on_progress
        return client

    def usable(self) -> bool:
        """Whether this (spare) process still runs and listens to us."""
        alive = self._proc is None or self._proc.poll() is None
        return alive and self._listener is not None and self._listener.is_alive()

    def discard(self) -> None:
        """Let an unused process go: with no link, it exits when its controller leaves."""
        self.detach()
        if self._proc is not None:
            threading.Thread(target=self._wait_exit, args=(5.0,), daemon=True).start()

    @classmethod
    async def connect(
        cls, socket_path: str, pid: int, target: ProviderTarget, **kw: Any
    ) -> TunnelClient:
        """Re-adopt a running tunnel process (its server crashed); raises OSError if gone."""
        client = cls(Path(socket_path), pid, target, None, **kw)
        await asyncio.to_thread(client._attach)
        return client

    def _attach(self) -> None:
        # Plain blocking socket and a reader thread: the KernelManager may call from any loop
        # or thread (a sync KernelManager runs its loop only during a call), and only small
        # control lines pass here, never kernel data.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        self._sock = sock
        self._listener = threading.Thread(
            target=self._listen, name=f"gpumarket-tunnel-ctl-{self.pid}", daemon=True
        )
        self._listener.start()

    def _listen(self) -> None:
        assert self._sock is not None
        try:
            with self._sock.makefile("rb") as stream:
                while True:
                    line = stream.readline(MAX_LINE + 1)
                    if not line or not line.endswith(b"\n"):
                        break
                    try:
                        msg = json.loads(line)
                        if not isinstance(msg, dict):
                            raise TypeError("not a JSON object")
                        self._receive(msg)
                    except (ValueError, TypeError, KeyError) as exc:
                        # one bad line is dropped, not the kernel: the process keeps the link
                        log.error("bad line from the tunnel process %s, ignored: %s", self.pid, exc)
        except OSError:
            pass
        self._gone()

    def _receive(self, msg: dict[str, Any]) -> None:
        ev = msg.get("ev")
        if ev == "status":
            self._status(msg)
        elif ev == "notice":
            self._on_notice(str(msg.get("text", "")))
        elif ev == "progress":
            self._on_progress(str(msg.get("text", "")))
        elif ev in ("ack", "interval"):
            self._payment(msg)
        elif "id" in msg:
            rid = msg["id"]
            fut = self._pending.pop(rid, None) if isinstance(rid, int) else None
            if fut is None:
                if not msg.get("ok"):  # a fire-and-forget request (pay, notify) failed
                    log.warning("the tunnel process refused a request: %s", msg.get("error"))
            elif not fut.done():
                if msg.get("ok"):
                    fut.set_result(msg.get("result"))
                else:
                    fut.set_exception(
                        _error(str(msg.get("kind")), str(msg.get("error")), msg.get("os_error"))
                    )

    def _payment(self, msg: dict[str, Any]) -> None:
        from jupyter_gpumarket.provisioning.tunnel_paid import payment_event

        event, payer = payment_event(msg), self.payer
        if event is None or payer is None:
            return
        kind, value = event
        if kind == "ack":
            payer.on_ack(value)
        else:
            payer.on_interval(value)

    def _status(self, msg: dict[str, Any]) -> None:
        if not msg.get("open"):
            return
        paid = msg.get("paid")
        if isinstance(paid, dict):
            self.paid = paid
        self.exit_code = msg.get("exit_code")
        self.exit_reason = msg.get("exit_reason") or ""
        self.dead_reason = msg.get("dead_reason")
        self.lost_since = msg.get("lost_since")  # CLOCK_MONOTONIC: the same in both processes
        self.reconnect_attempt = int(msg.get("reconnect_attempt") or 0)
        self.reconnects = int(msg.get("reconnects") or 0)
        self.stalls = int(msg.get("stalls") or 0)
        self.revivals = int(msg.get("revivals") or 0)
        self.generation = int(msg.get("generation") or 0)
        self.lease = msg.get("lease") or self.lease
        agent = msg.get("agent")
        if isinstance(agent, dict):
            self.agent_info = agent
        self.telemetry.samples = list(msg.get("telemetry") or [])

    def _gone(self) -> None:
        if self.exit_code is None:
            self.exit_code = -1
            self.exit_reason = self.dead_reason or "the tunnel process exited"
        if self.dead_reason is None and not self._closed:
            self.dead_reason = self.exit_reason
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(LinkLost(self.dead_reason or "the tunnel process exited"))
        if self._proc is not None:
            self._proc.poll()  # reap it
        with self._send_lock:  # the process is gone: its socket is of no more use
            if self._sock is not None:
                self._sock.close()

    # -- requests ----------------------------------------------------------------------------
    async def request(self, op: str, wait: float | None = None, **fields: Any) -> Any:
        """Send one request; await its reply on the caller's loop, whichever that is."""
        sock, listener = self._sock, self._listener
        if sock is None or listener is None or not listener.is_alive():
            raise LinkLost(self.dead_reason or "the tunnel process is gone")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._send_lock:
            self._next_id += 1
            rid = self._next_id
            self._pending[rid] = fut
            data = json.dumps({"id": rid, "op": op, **fields}).encode() + b"\n"
            try:
                sock.sendall(data)
            except OSError as exc:
                self._pending.pop(rid, None)
                raise LinkLost(f"the tunnel process is gone: {exc}") from None
        return await asyncio.wait_for(asyncio.wrap_future(fut), wait)

    def post(self, op: str, **fields: Any) -> None:
        """Send one request without waiting for its reply (a refusal is logged). Thread-safe
        and synchronous: a PaidRun on the tunnel thread pays through this."""
        sock, listener = self._sock, self._listener
        if sock is None or self._closed or listener is None or not listener.is_alive():
            return  # the process is gone: exit_code says so, as for a thread link's dead pipe
        with self._send_lock:
            self._next_id += 1
            data = json.dumps({"id": self._next_id, "op": op, **fields}).encode() + b"\n"
            try:
                sock.sendall(data)
            except OSError as exc:  # the process is gone: the listener says so (exit code)
                log.warning("tunnel process %s gone, %s not sent: %s", self.pid, op, exc)

    def send_agent(self, msg: Any) -> None:
        """Send a payment message (a voucher, a top-up's deposit_changed) to the provider."""
        from jupyter_gpumarket.provisioning.tunnel_paid import payment_line

        self.post("pay", msg=payment_line(msg))

    def stop_kernel(self) -> None:
        """Stop the remote kernel, keep the lease (the budget is spent)."""
        self.post("stop_kernel")

    def notify(self, text: str, *, announce: bool = False) -> None:
        """Show the kernel's local clients ``text`` (``announce``: also at the next cell)."""
        self.post("notify", text=text, announce=announce)

    async def open(
        self,
        key: str,
        settings: LinkSettings,
        adopt_lease: str | None,
        paid: dict[str, Any] | None = None,
    ) -> dict[str, int]:
        """Open the link; ``paid`` (tunnel_paid.paid_spec) for a paid kernel's lease."""
        t = self.target
        result = await self.request(
            "open",
            target={"url": t.url, "tls_fingerprint": t.tls_fingerprint, "token": t.token},
            key=key,
            settings={
                "connect_timeout": settings.connect_timeout,
                "link_grace": settings.link_grace,
            },
            adopt_lease=adopt_lease,
            paid=paid,
            **({} if self.grace is None else {"grace": self.grace}),
        )
        self._status(result)
        return {str(k): int(v) for k, v in result["ports"].items()}

    async def hello(self, lease: str) -> dict[str, int]:
        """Take control of a running process, which must carry ``lease``."""
        result = await self.request("hello", wait=10.0, lease=lease)
        self._status(result)
        self.ports = {str(k): int(v) for k, v in result["ports"].items()}
        return {str(k): int(v) for k, v in result["ports"].items()}

    async def start_kernel(
        self, key: str, env: dict[str, str], timeout: float, kernel_args: tuple[str, ...] = ()
    ) -> None:
        result = await self.request(
            "start", env=env, timeout=timeout, kernel_args=list(kernel_args)
        )
        self._status(result)

    def signal(self, signum: int) -> None:
        """Sent now, from any thread: a sync KernelManager's loop may not run again soon."""
        self.post("signal", signum=signum)

    async def push_files(self, cwd: Path, cap_bytes: int, timeout: float) -> PushResult:
        result = await self.request("push", cwd=str(cwd), cap_bytes=cap_bytes, timeout=timeout)
        manifest = await asyncio.to_thread(Manifest.from_json, result["manifest"])
        return PushResult(manifest, int(result["sent_bytes"]), int(result["reused_bytes"]))

    async def pull_files(
        self, cwd: Path, at_launch: Manifest, cap_bytes: int, timeout: float
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "pull",
            cwd=str(cwd),
            at_launch=at_launch.to_json(),
            cap_bytes=cap_bytes,
            timeout=timeout,
        )
        return result

    def detach(self) -> None:
        """Drop the control connection only (the process is someone else's)."""
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()

    async def close(self, *, end_lease: bool = True, timeout: float = 5.0) -> None:
        """Stop the link (ending the lease unless told not to) and wait for the process."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(GpuMarketError, TimeoutError, ConnectionError):
            await self.request("stop", wait=timeout + 2.0, end_lease=end_lease)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        await asyncio.to_thread(self._wait_exit, timeout)

    def _wait_exit(self, timeout: float) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            return
        # a re-adopted process is not our child: signal it by pid if it lingers
        for _ in range(int(timeout * 20)):
            if not pid_alive(self.pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _error(kind: str, text: str, os_error: Any = None) -> Exception:
    """The process's failure as the provisioner would have raised it in thread mode: the
    project's errors by name, an OSError (a local file in a pull or push) as an OSError."""
    cls = getattr(exceptions, kind, None)
    if isinstance(cls, type) and issubclass(cls, GpuMarketError):
        return cls(text)
    if isinstance(os_error, list) and len(os_error) == 4 and isinstance(os_error[0], int):
        errno, strerror, filename, filename2 = (
            x if isinstance(x, int | str) or x is None else str(x) for x in os_error
        )
        # OSError(errno, ...) picks the subclass (IsADirectoryError, PermissionError, ...)
        return OSError(errno, str(strerror), filename, None, filename2)
    return TunnelError(f"the tunnel process failed: {text} ({kind})")
