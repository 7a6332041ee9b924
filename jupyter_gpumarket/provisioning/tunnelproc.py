"""The tunnel process: one remote kernel's data path outside the Jupyter server.

``python -m jupyter_gpumarket.provisioning.tunnelproc --socket PATH --grace S`` binds a 0600
Unix socket, prints ``ready`` and then owns the loopback ZMQ shim and the wss link
(:class:`RemoteLink`) on its own uvloop: the Jupyter server talks plain ZMQ to 127.0.0.1 and
no longer shares a GIL with the tunnel. The provisioner (:mod:`.tunnel_client`) drives it with
JSON lines on that socket: requests ``{"id", "op", ...}`` (open, hello, start, signal, push,
pull, stop; for a paid kernel also pay, stop_kernel, notify) answered by ``{"id", "ok",
"result" | "error", "kind"}``, and events pushed as they change (``{"ev": "status", ...}``:
exit code, lost_since, dead_reason, reconnects, stalls, revivals, generation, telemetry;
``{"ev": "notice", "text"}``; a paid kernel's ``{"ev": "ack", "amount"}`` and
``{"ev": "interval", "seconds"}``).

A paid kernel's ``open`` carries the lease's session key (never the wallet's): the process
answers the provider's challenge itself on every reconnect, so the link survives its server
for the grace; the vouchers are signed in the server and forwarded here (:mod:`.tunnel_paid`).

A server keeps one spare process started and connected (:mod:`.tunnel_client`), so a kernel's
start does not wait for an interpreter; a spare whose server disconnects exits at once.

No orphans: the process exits when its kernel is shut down (``stop``), when the link is dead
(the provider ended the lease, or the link grace expired), and when no control client has been
connected for ``--grace`` seconds (its server is gone and nothing re-adopted it; a restarted
server re-adopts by connecting to the socket recorded in the kernel's record). The last case
detaches without ending the lease, like a crashed server's link: the provider's own grace
decides the kernel's end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_gpumarket import exceptions
from jupyter_gpumarket.core.filesync import Manifest
from jupyter_gpumarket.provisioning import files, launch
from jupyter_gpumarket.provisioning.link import LinkSettings, ProviderTarget, RemoteLink
from jupyter_gpumarket.provisioning.shim import ZmqShim
from jupyter_gpumarket.provisioning.tunnel_client import MAX_LINE
from jupyter_gpumarket.provisioning.tunnel_paid import ProcessPayer, parse_payment

__all__ = ["TunnelProcess", "main"]

log = logging.getLogger("jupyter_gpumarket.tunnelproc")

STATUS_TICK = 0.05
MAX_NOTICE = 64 * 1024  # characters of a notice the server asks the shim to show


class TunnelProcess:
    def __init__(self, socket_path: Path, grace: float) -> None:
        self.socket_path = socket_path
        self.grace = grace
        self.link: RemoteLink | None = None
        self.shim: ZmqShim | None = None
        self.key = ""
        self.synced: Manifest | None = None
        self.payer: ProcessPayer | None = None  # a paid kernel's lease (the session key)
        self.done = asyncio.Event()
        self.exit_status = 0
        self._writer: asyncio.StreamWriter | None = None
        self._orphan: asyncio.TimerHandle | None = None
        self._last_status: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- serving -----------------------------------------------------------------------------
    async def serve(self, announce: Any = None) -> None:
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._client, path=str(self.socket_path), limit=MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        if announce is not None:
            announce()
        self._arm_orphan()  # nobody connected yet
        status = asyncio.ensure_future(self._status_loop())
        try:
            await self.done.wait()
        finally:
            status.cancel()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            await self._close(end_lease=False)

    def _arm_orphan(self) -> None:
        if self._orphan is None:
            self._orphan = asyncio.get_running_loop().call_later(self.grace, self._orphaned)

    def _orphaned(self) -> None:
        log.warning(
            "no Jupyter server has been connected for %.0f s: detaching from the remote kernel",
            self.grace,
        )
        self.done.set()

    def _adopt(self, writer: asyncio.StreamWriter) -> None:
        """``writer``'s connection controls the process from now on (gets its events)."""
        previous, self._writer = self._writer, writer  # a re-adopting server takes over
        if previous is not None and previous is not writer:
            previous.close()
        if self._orphan is not None:
            self._orphan.cancel()
            self._orphan = None
        self._last_status = {}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The spawning provisioner controls a fresh process at once; any later connection
        # (a restarted server) only after a hello naming this process's lease.
        if self.link is None and self._writer is None:
            self._adopt(writer)
        try:
            while not self.done.is_set():
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("a control message is not a JSON object")
                task = asyncio.ensure_future(self._handle(msg, writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (ValueError, ConnectionError) as exc:  # incl. a line over MAX_LINE
            log.error("bad control message, dropping the control client: %s", exc)
        finally:
            if self._writer is writer:
                self._writer = None
                if self.link is None:  # a spare nobody used: nothing to keep for anyone
                    self.done.set()
                else:
                    self._arm_orphan()
            writer.close()

    def _emit(self, msg: dict[str, Any], to: asyncio.StreamWriter | None = None) -> None:
        writer = to or self._writer
        if writer is not None and not writer.is_closing():
            writer.write(json.dumps(msg).encode() + b"\n")

    def _notice(self, text: str) -> None:
        self._emit({"ev": "notice", "text": text})

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        link = self.link
        if link is None:
            return {"ev": "status", "open": False}
        return {
            "ev": "status",
            "open": True,
            "exit_code": link.exit_code,
            "exit_reason": link.exit_reason,
            "dead_reason": link.dead_reason,
            "lost_since": link.lost_since,
            "reconnect_attempt": link.reconnect_attempt,
            "reconnects": link.reconnects,
            "stalls": link.stalls,
            "revivals": link.revivals,
            "generation": link.generation,
            "lease": link.lease,
            "agent": link.agent_info,
            "telemetry": link.telemetry.to_json(),
        }

    async def _status_loop(self) -> None:
        while True:
            status = self.status()
            if status != self._last_status:
                self._last_status = status
                self._emit(status)
            if status.get("dead_reason"):
                # the kernel is lost for good: tell the server, then go (no orphan)
                if self._writer is not None:
                    with contextlib.suppress(ConnectionError):
                        await asyncio.wait_for(self._writer.drain(), 2.0)
                await asyncio.sleep(0.5)  # the shim's notice of it leaves for the clients
                self.done.set()
                return
            await asyncio.sleep(STATUS_TICK)

    # -- requests ------------------------------------------------------------------------------
    async def _handle(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        rid = msg.get("id")
        try:
            if msg.get("op") == "hello":
                result = self._hello(msg, writer)
            elif writer is not self._writer:
                raise exceptions.ProtocolError(
                    "this connection does not control the tunnel process: say hello first"
                )
            else:
                op = getattr(self, "_op_" + str(msg.get("op")), None)
                if op is None:
                    raise exceptions.ProtocolError(f"unknown control op {msg.get('op')!r}")
                result = await op(msg)
            reply: dict[str, Any] = {"id": rid, "ok": True, "result": result}
        except Exception as exc:  # every failure goes back to the provisioner, typed
            reply = {"id": rid, "ok": False, "error": str(exc), "kind": type(exc).__name__}
            if isinstance(exc, OSError) and exc.errno is not None:  # a local file's failure
                reply["os_error"] = [exc.errno, exc.strerror, exc.filename, exc.filename2]
        self._emit(reply, writer)
        if writer is self._writer:
            self._emit(self.status())

    def _ports(self) -> dict[str, Any]:
        assert self.link is not None
        assert self.shim is not None
        payer = self.payer
        paid = None if payer is None else {"channel": payer.channel_hex, "interval": payer.interval}
        return {"ports": self.shim.ports, "lease": self.link.lease, "paid": paid, **self.status()}

    async def _op_open(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.link is not None:
            raise exceptions.ProtocolError("this tunnel process already has a link")
        t = msg["target"]
        target = ProviderTarget(str(t["url"]), str(t["tls_fingerprint"]), str(t["token"]))
        s = msg["settings"]
        settings = LinkSettings(
            connect_timeout=float(s["connect_timeout"]), link_grace=float(s["link_grace"])
        )
        self.key = str(msg["key"])
        paid = msg.get("paid")  # a paid kernel's lease (None: unpaid)
        self.payer = None if paid is None else ProcessPayer.from_spec(paid, self._emit)
        self.grace = float(msg.get("grace", self.grace))  # a spare learns its kernel's grace
        self.link, self.shim = await launch.open_link(
            target,
            self.key,
            settings,
            log,
            msg.get("adopt_lease"),
            None,
            self._notice,
            payer=self.payer,
        )
        return self._ports()

    def _hello(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> dict[str, Any]:
        """A restarted server re-adopts this process: only for the lease it carries."""
        if self.link is None or self.link.dead_reason:
            raise exceptions.LinkLost("this tunnel process has no live link")
        if msg.get("lease") != self.link.lease:
            raise exceptions.LinkLost("this tunnel process carries another lease")
        self._adopt(writer)
        return self._ports()

    def _live(self) -> RemoteLink:
        if self.link is None:
            raise exceptions.LinkLost("this tunnel process has no link")
        return self.link

    async def _op_start(self, msg: dict[str, Any]) -> dict[str, Any]:
        env = {str(k): str(v) for k, v in dict(msg["env"]).items()}
        args = tuple(str(a) for a in msg.get("kernel_args", ()))
        await self._live().start_kernel(self.key, env, float(msg["timeout"]), args)
        return self.status()

    async def _op_signal(self, msg: dict[str, Any]) -> None:
        self._live().signal(int(msg["signum"]))

    async def _op_pay(self, msg: dict[str, Any]) -> None:
        """A voucher (or a top-up's deposit_changed) the server signed: to the provider."""
        if self.payer is None:
            raise exceptions.ProtocolError("this tunnel process carries no paid lease")
        payment = parse_payment(msg.get("msg"))
        self._live().send_agent(payment)

    async def _op_stop_kernel(self, msg: dict[str, Any]) -> None:
        """Stop the kernel, keep the lease (the server's budget ran out)."""
        self._live().stop_kernel()

    async def _op_notify(self, msg: dict[str, Any]) -> None:
        """Show the local clients a notice of the server's (the lease's spend, a top-up);
        ``announce``: also as output of the next cell that runs."""
        text = msg.get("text")
        if not isinstance(text, str) or len(text) > MAX_NOTICE:
            raise exceptions.ProtocolError(f"a notice is a string of at most {MAX_NOTICE} chars")
        if self.shim is None:
            raise exceptions.LinkLost("this tunnel process has no shim")
        if msg.get("announce") is True:
            self.shim.announce(text, self.key.encode())
        else:
            self.shim.notify(text, self.key.encode())

    async def _op_push(self, msg: dict[str, Any]) -> dict[str, Any]:
        result = await files.push(
            self._live(),
            Path(msg["cwd"]),
            cap_bytes=int(msg["cap_bytes"]),
            timeout=float(msg["timeout"]),
            progress=lambda text: self._emit({"ev": "progress", "text": text}),
        )
        self.synced = result.manifest
        return {
            "manifest": result.manifest.to_json(),
            "sent_bytes": result.sent_bytes,
            "reused_bytes": result.reused_bytes,
        }

    async def _op_pull(self, msg: dict[str, Any]) -> dict[str, Any]:
        at_launch = Manifest.from_json(msg["at_launch"])
        plan = await files.pull(
            self._live(),
            Path(msg["cwd"]),
            at_launch,
            cap_bytes=int(msg["cap_bytes"]),
            timeout=float(msg["timeout"]),
            progress=lambda text: self._emit({"ev": "progress", "text": text}),
        )
        return {
            "pulled": [item.local_path for item in plan.items],
            "conflicts": [c.message for c in plan.conflicts],
            "bytes": plan.total_bytes,
        }

    async def _op_stop(self, msg: dict[str, Any]) -> None:
        await self._close(end_lease=bool(msg.get("end_lease", True)))
        asyncio.get_running_loop().call_later(0.2, self.done.set)

    async def _close(self, *, end_lease: bool) -> None:
        link, shim = self.link, self.shim
        if link is not None:
            await link.close(end_lease=end_lease)
        if shim is not None:
            await shim.close(linger_ms=1000)  # this process only serves this kernel
            self.shim = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_gpumarket.provisioning.tunnelproc")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--grace", type=float, default=120.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="[tunnel %(process)d] %(levelname)s %(message)s"
    )
    proc = TunnelProcess(args.socket, args.grace)

    def announce() -> None:
        print("ready", flush=True)  # the provisioner waits for this line, then stops reading
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), sys.stdout.fileno())

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    started = time.monotonic()
    runner(proc.serve(announce))
    log.info("tunnel process ends after %.0f s", time.monotonic() - started)
    return proc.exit_status


if __name__ == "__main__":
    sys.exit(main())
