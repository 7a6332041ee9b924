"""A paid kernel whose tunnel runs in its own process (GPUMARKET_TUNNEL_PROCESS=1): the process
answers the provider's challenge with the lease's session key on every (re)connect, the server
keeps signing the vouchers, and the channel settles for exactly the seconds the kernel ran.

Real processes on loopback: an anvil devnet, a paid provider agent, kernels; the link is cut
with ``ss -K`` (the offer's endpoint is the agent's own port, so no proxy can sit in between).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager
from websockets.sync.client import connect

from agentproc import environ
from jupyterproc import execute, start_jupyter
from marketproc import PRICE, Market, leases_json, running_market

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    # a payment grace longer than a Jupyter server's restart (the re-adoption test)
    with running_market(tmp_path_factory.mktemp("paidproc"), "--payment-grace", "30") as m:
        yield m


def _wait(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie counts as gone
    except FileNotFoundError:
        return False


def _cut_links_to(market: Market) -> None:
    """Abort every TCP connection to the agent's port (the renter's websocket) at once."""
    port = market.ready["url"].rsplit(":", 1)[1].strip("/")
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("`ss` (iproute2) is needed to cut the link: apt install iproute2")
    out = subprocess.run(
        [ss, "-K", "-t", "dst", "127.0.0.1", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if "ESTAB" not in out.stdout:
        pytest.skip(f"`ss -K` cut no connection (needs root and SOCK_DESTROY): {out.stderr}")


def _settled_as_billed(market: Market, channel_id: str) -> int:
    """The lease's billed seconds, once its channel closed paying exactly their price."""
    (lease,) = [x for x in leases_json(market.renter_env) if x["channel_id"] == channel_id]
    assert lease["state"] in ("stopped", "settled")
    _wait(
        "the provider's settlement", lambda: market.channel(channel_id).state.startswith("closed")
    )
    billed = lease["billed_seconds"]
    assert abs(market.channel(channel_id).redeemed - PRICE * billed // 3600) <= PRICE // 3600
    return int(billed)


def _run(kc: Any, code: str) -> str:
    out: list[str] = []
    reply = kc.execute_interactive(
        code, timeout=30, output_hook=lambda m: out.append(m["content"].get("text", ""))
    )
    assert reply["content"]["status"] == "ok"
    return "".join(out)


def test_a_paid_kernel_in_a_tunnel_process_pays_through_a_link_cut_and_settles_exactly(
    market: Market,
) -> None:
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

    km = KernelManager(kernel_name="gpumarket")
    with environ({**market.renter_env, "GPUMARKET_TUNNEL_PROCESS": "1"}):
        km.start_kernel()
    started = time.monotonic()
    prov: Any = km.provisioner
    link, lease = prov._link, prov._paid.lease
    assert isinstance(link, TunnelClient), "the paid kernel's link is not a tunnel process"
    pid = link.pid
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        lines = [ln for ln in _run(kc, "print(6 * 7)").splitlines() if ln.startswith("42")]
        assert lines == ["42"]
        assert lease.schedule.interval == 2  # the provider's challenge, told by the process
        _wait("a voucher acked through the process", lambda: lease.acked > 0)
        _cut_links_to(market)
        _wait("the process's reconnect", lambda: link.reconnects >= 1)
        assert link.dead_reason is None
        acked = lease.acked
        # the process answered the new challenge itself; the server's vouchers still land
        _wait("a voucher acked after the reconnect", lambda: lease.acked > acked)
        assert _run(kc, "print('after the cut')").strip().endswith("after the cut")
    finally:
        kc.stop_channels()
        with environ(market.renter_env):
            km.shutdown_kernel()
    ran = time.monotonic() - started
    _wait("the tunnel process's exit", lambda: not _alive(pid), 15)
    billed = _settled_as_billed(market, lease.channel_hex)
    assert ran - 3 <= billed <= ran + 1  # billed from ready to shutdown, as in thread mode


def _kernel_ids(server: Any) -> list[str]:
    try:
        return [k["id"] for k in server.request("GET", "/api/kernels")]
    except urllib.error.HTTPError:  # a kernel still being added
        return []


async def _peek(record: Any) -> dict[str, Any]:
    """Take control of the orphaned tunnel process for a moment (what `gpumarket kernels
    attach` does): its link's status, then let it wait for a server again."""
    from jupyter_gpumarket.provisioning.link import ProviderTarget
    from jupyter_gpumarket.provisioning.tunnel_client import TunnelClient

    target = ProviderTarget(record.provider_url, record.tls_fingerprint, record.token)
    client = await TunnelClient.connect(record.tunnel_socket, record.tunnel_pid, target)
    try:
        await client.hello(record.lease)
        return {"reconnects": client.reconnects, "dead": client.dead_reason, "paid": client.paid}
    finally:
        client.detach()


def test_a_restarted_server_readopts_the_paid_tunnel_process_that_kept_the_link(
    market: Market, tmp_path: Path
) -> None:
    from jupyter_gpumarket.provisioning import paid_state, records

    env = {**market.renter_env, "GPUMARKET_TUNNEL_PROCESS": "1"}
    runtime = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    first = start_jupyter(tmp_path, env)
    kid = first.request("POST", "/api/kernels", {"name": "gpumarket"})["id"]
    started = time.monotonic()
    with connect(first.ws_url(f"/api/kernels/{kid}/channels")) as ws:
        reply, _ = execute(ws, "x = 7; import os; pid = os.getpid()")
        assert reply["content"]["status"] == "ok"
    with environ(runtime):
        record = records.load(kid)
        saved = paid_state.load(kid)
    assert record is not None
    assert saved is not None
    assert record.tunnel_pid
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    # the server is gone; its tunnel process keeps the link, and answers a new challenge itself
    _cut_links_to(market)
    _wait(
        "the orphaned process's reconnect",
        lambda: asyncio.run(_peek(record))["reconnects"] >= 1,
    )
    peek = asyncio.run(_peek(record))
    assert peek["dead"] is None
    assert peek["paid"]["channel"] == saved.channel_id

    second = start_jupyter(tmp_path, env)
    try:
        _wait("the re-adoption", lambda: kid in _kernel_ids(second), 60)
        with environ(runtime):
            readopted = records.load(kid)
        assert readopted is not None
        assert readopted.tunnel_pid == record.tunnel_pid  # the same process, not a new link
        with connect(second.ws_url(f"/api/kernels/{kid}/channels")) as ws:
            reply, text = execute(ws, "print(x, pid == os.getpid())")
            kernel_text = [ln for ln in text.splitlines() if not ln.startswith("[gpumarket]")]
            assert kernel_text == ["7 True"]
            time.sleep(6)  # several voucher intervals: the re-adopted lease pays them
            reply, text = execute(ws, "print('still paid')")
            assert text.strip().endswith("still paid")
        second.request("DELETE", f"/api/kernels/{kid}")
        ran = time.monotonic() - started
    finally:
        second.stop()
    _wait("the tunnel process's exit", lambda: not _alive(record.tunnel_pid), 15)
    with environ(runtime):
        assert paid_state.load(kid) is None  # the lease ended: nothing left to resume
    billed = _settled_as_billed(market, saved.channel_id)
    assert ran - 4 <= billed <= ran + 1  # the time the server was down is billed, once


def test_a_spent_budget_stops_the_kernel_through_its_tunnel_process(market: Market) -> None:
    """The server's PaidRun stops the kernel (stop_kernel) and tells the notebook (notify)
    through the process; what was signed never passes the budget."""
    from marketproc import stream_text_until_dead

    budget = 6 * PRICE // 3600  # six seconds
    km = KernelManager(kernel_name="gpumarket")
    env = {**market.renter_env, "GPUMARKET_TUNNEL_PROCESS": "1", "GPUMARKET_BUDGET": str(budget)}
    with environ(env):
        km.start_kernel()
    prov: Any = km.provisioner
    pid, lease = prov._link.pid, prov._paid.lease
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        joined = stream_text_until_dead(km, kc)
        assert not km.is_alive()  # stopped by the lease, not by the provider's payment grace
        assert "budget" in joined  # the warning and the stop reached the notebook's output
        assert lease.stopped_for_budget
    finally:
        kc.stop_channels()
        with environ(market.renter_env):
            km.shutdown_kernel(now=True)
    _wait("the tunnel process's exit", lambda: not _alive(pid), 15)
    cid = lease.channel_hex
    _wait("the provider's settlement", lambda: market.channel(cid).state.startswith("closed"))
    assert market.channel(lease.channel_hex).redeemed <= budget
