"""Issue 16 item 5, the agent's side: one renter's file list must not stall every other renter.

The agent parses each control message on its event loop, which every lease shares (json.loads
holds the GIL, so a thread would not help). Hostile renters (control_flood.py, processes of
their own) send, back to back, the biggest manifests they can: a ~32 MB sync_offer (the whole
file list in one message) on one link, and endless maximal pages on another. Meanwhile a second
renter connects and asks small questions (hello, then a one-file sync_offer): each must be
answered within :data:`ANSWER_TIMEOUT`, a hang detector far above a loaded machine's round trip
(milliseconds) and below the seconds one 32 MB parse held the loop for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_flood import SHA, files, offer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.frames import Channel
from jupyter_gpumarket.core.session import TunnelSession

from agentproc import AgentProcess, start_agent

pytestmark = pytest.mark.slow

ANSWER_TIMEOUT = 8.0  # detects a stalled loop only: an answer takes milliseconds
PROBE_S = 10.0  # the second renter asks, one question after the other, this long
PACE_S = 0.1  # between the second renter's questions (see _small_questions)
FLOOD = Path(__file__).with_name("control_flood.py")


def _tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _answer(ws: ClientConnection, me: TunnelSession) -> object:
    while True:
        delivery = me.receive(await ws.recv())
        if delivery is not None and delivery.channel is Channel.AGENT:
            msg = control.parse_agent_message(delivery.parts[0])
            if isinstance(msg, control.SyncNeed | control.Refused):
                return msg


async def _small_round_trip(agent: AgentProcess) -> None:
    """A second renter: connect, hello, offer one file, get the answer (or TimeoutError)."""
    async with asyncio.timeout(ANSWER_TIMEOUT):
        async with connect(agent.url, ssl=_tls(), compression=None, max_size=None) as ws:
            await ws.send(control.dump(control.Hello(token=agent.token)).decode())
            control.parse_welcome(await ws.recv())
            me = TunnelSession()
            await ws.send(me.send(Channel.AGENT, [offer({"a.txt": [1, SHA, 1]})]))
            need = await _answer(ws, me)
    assert isinstance(need, control.SyncNeed | control.Refused), need


@contextlib.contextmanager
def _flooding(agent: AgentProcess, tmp: Path, *modes: str) -> Iterator[None]:
    """Hostile renters (control_flood.py), one process per mode, flooding once this yields."""
    logs = [tmp / f"flood-{i}-{mode}.log" for i, mode in enumerate(modes)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for mode, log in zip(modes, logs, strict=True):
            with log.open("wb") as out:
                cmd = [sys.executable, str(FLOOD), agent.url, agent.token, mode]
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while not all("sent 2" in log.read_text() for log in logs):  # the attack is under way
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.1)
        yield
        assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def _small_questions(agent: AgentProcess) -> int:
    """Round trips, each on a fresh connection, for PROBE_S (several of the flood's cycles)."""
    done = 0
    end = time.monotonic() + PROBE_S
    while time.monotonic() < end:
        try:
            await _small_round_trip(agent)
        except TimeoutError:
            pytest.fail(
                f"a small request went unanswered for {ANSWER_TIMEOUT} s while another renter "
                f"sent maximal manifests ({done} answered before)"
            )
        done += 1
        # paced: each finished renter's lease stays reserved for the agent's client grace
        # (0.5 s), so unpaced round trips of a few ms would fill every slot by themselves
        await asyncio.sleep(PACE_S)
    return done


def test_maximal_manifests_do_not_stall_other_renters(tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "agent", "--max-kernels", "16", "--client-grace", "0.5")
    try:
        with _flooding(agent, tmp_path, "maximal", "pages"):
            assert asyncio.run(_small_questions(agent)) > 0
    finally:
        agent.stop()


async def _until_closed(ws: ClientConnection) -> None:
    async with asyncio.timeout(30):
        while True:
            await ws.recv()


def test_an_agent_refuses_a_message_above_the_request_cap_by_its_size(tmp_path: Path) -> None:
    """A one-message manifest above the cap closes that link, unparsed, with a reason that
    says so; the next connection works."""
    agent = start_agent(tmp_path / "agent")
    big = offer(files(4_000, 240, "b"))
    assert control.MAX_REQUEST_BYTES < len(big) < control.MAX_CONTROL_BYTES

    async def go() -> str:
        async with connect(agent.url, ssl=_tls(), compression=None, max_size=None) as ws:
            await ws.send(control.dump(control.Hello(token=agent.token)).decode())
            await ws.recv()
            await ws.send(TunnelSession().send(Channel.AGENT, [big]))
            with pytest.raises(ConnectionClosed) as closed:
                await _until_closed(ws)
        rcvd = closed.value.rcvd
        assert rcvd is not None
        assert rcvd.code == control.CloseCode.PROTOCOL
        await _small_round_trip(agent)
        return rcvd.reason

    try:
        reason = asyncio.run(go())
    finally:
        agent.stop()
    assert "too large" in reason, reason
