"""A hostile renter's kernel options, sent raw to a real agent: refused, and the agent serves on.

The renter's provisioner checks options before sending them; these messages skip it (raw JSON
on the tunnel): a second connection file, the agent's connection traits, a non-option argv item,
paths out of the working dir, an oversized list or item, a list that is not one. Each closes only
its own link with a reason naming the option; then a kernel started with accepted options runs
with them after the agent's own ``-f``, and exactly one ``-f``.
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.kernel_args import MAX_KERNEL_ARG_BYTES, MAX_KERNEL_ARGS
from jupyter_gpumarket.core.session import TunnelSession

from agentproc import AgentProcess, start_agent

pytestmark = pytest.mark.slow

KEY = "k" * 32
HOSTILE: list[tuple[object, str]] = [
    (["-f", "/etc/passwd"], "'-f'"),
    (["--f=/etc/passwd"], "'--f=/etc/passwd'"),
    (["--ConnectionFileMixin.connection_file=/tmp/evil.json"], "connection_file"),
    (["--IPKernelApp.connection_file=evil.json"], "connection_file"),
    (["--KernelApp.transport=tcp", "--KernelApp.ip=0.0.0.0"], "transport"),
    (["--debug", "/usr/bin/id"], "'/usr/bin/id'"),
    (["--", "--HistoryManager.hist_file=:memory:"], "'--'"),
    (["--HistoryManager.hist_file=/etc/passwd"], "outside"),
    (["--IPKernelApp.exec_files=['../../../etc/x.py']"], "outside"),
    (["--debug"] * (MAX_KERNEL_ARGS + 1), "more than the"),
    (["--IPKernelApp.exec_lines=" + "x" * MAX_KERNEL_ARG_BYTES], "bytes, over"),
    ("-f /etc/passwd", "must be a list"),
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = start_agent(
        tmp_path_factory.mktemp("kargs"), "--max-kernels", str(len(HOSTILE) + 2)
    )  # a lease per link; closed ones linger
    try:
        yield proc
    finally:
        proc.stop()


async def _link(agent: AgentProcess) -> ClientConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ws = await connect(agent.url, ssl=ctx, compression=None, max_size=None)
    await ws.send(control.dump(control.Hello(token=agent.token)).decode())
    control.parse_welcome(await ws.recv())
    return ws


async def _ask(ws: ClientConnection, raw: bytes) -> object:
    me = TunnelSession()
    await ws.send(me.send(Channel.AGENT, [raw]))
    while True:
        delivery = me.receive(await ws.recv())
        if delivery is not None and delivery.channel == Channel.AGENT:
            msg = control.parse_agent_message(delivery.parts[0])
            if msg.op != "payment_notice":
                return msg


def _start(kernel_args: object) -> bytes:
    return json.dumps({"op": "start_kernel", "key": KEY, "kernel_args": kernel_args}).encode()


def _cmdlines(marker: str) -> list[list[str]]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = path.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(marker in a for a in argv) and "ipykernel_launcher" in argv:
            found.append(argv)
    return found


async def test_hostile_kernel_options_are_refused_and_the_agent_keeps_serving(
    agent: AgentProcess,
) -> None:
    for kernel_args, named in HOSTILE:
        ws = await _link(agent)
        with pytest.raises(ConnectionClosed):
            await _ask(ws, _start(kernel_args))
        assert ws.close_code == control.CloseCode.PROTOCOL, ws.close_reason
        reason = ws.close_reason or ""
        assert "kernel_args" in reason, reason
        assert named in reason, reason
    marker = f"seen_{secrets.token_hex(4)}"
    options = [f"--IPKernelApp.exec_lines={marker}=1", "--HistoryManager.hist_file=:memory:"]
    ws = await _link(agent)
    try:
        reply = await _ask(ws, _start(options))
        assert isinstance(reply, control.KernelStarted), reply
        (argv,) = _cmdlines(marker)  # the kernel itself (no sandbox here: one process)
        assert argv.count("-f") == 1
        assert argv[argv.index("-f") + 2 : argv.index("-f") + 4] == options
        assert "--" not in argv[argv.index("ipykernel_launcher") :]
    finally:
        await ws.close()
