"""Launch states of a dev kernel through a real Jupyter server and a real provider agent, as
the events websocket streams them: the steps in order, ready ⇄ busy, reconnecting, cancel
before ready, 409 after. (Culling: tests/server/test_launch_routes.py.)"""

from __future__ import annotations

import os
import signal
import threading
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
from launchwatch import EventWatch, any_launch, launch
from websockets.sync.client import connect

from agentproc import AgentProcess, running_agent
from jupyterproc import JupyterServer, execute, start_jupyter
from netfault import ThreadedProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent of this module's own (one test stops it for a moment)."""
    with running_agent(tmp_path_factory.mktemp("launch-agent")) as proc:
        yield proc


@pytest.fixture(scope="module")
def proxy(own_agent: AgentProcess) -> Iterator[ThreadedProxy]:
    """Between the server and the agent: one test cuts the link."""
    p = ThreadedProxy("127.0.0.1", int(own_agent.url.rsplit(":", 1)[1]))
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def jupyter(
    tmp_path_factory: pytest.TempPathFactory, own_agent: AgentProcess, proxy: ThreadedProxy
) -> Iterator[JupyterServer]:
    tmp = tmp_path_factory.mktemp("launch-states")
    url = f"wss://127.0.0.1:{proxy.port}"
    server = start_jupyter(tmp, {**own_agent.env(), "GPUMARKET_PROVIDER_URL": url})
    (tmp / "notebooks" / "data.txt").write_text("x")
    yield server
    server.stop()


@pytest.fixture
def watch(jupyter: JupyterServer) -> Iterator[EventWatch]:
    w = EventWatch(jupyter)
    yield w
    w.close()


def test_a_dev_launch_walks_its_steps_then_ready_busy_ready_then_ended(
    jupyter: JupyterServer, watch: EventWatch
) -> None:
    kernel = jupyter.request("POST", "/api/kernels", {"name": "gpumarket", "path": ""})
    kid = kernel["id"]
    ready = watch.wait(launch(kid, "ready"))
    assert watch.states(kid) == [
        "choosing",
        "connecting",
        "syncing_files",
        "starting_kernel",
        "ready",
    ]
    assert ready["elapsed_s"] > 0
    assert ready["cancellable"] is False
    listed = jupyter.request("GET", "/gpumarket/api/launches")["launches"]
    assert [(x["kernel_id"], x["state"]) for x in listed if x["kernel_id"] == kid] == [
        (kid, "ready")
    ]
    with connect(jupyter.ws_url(f"/api/kernels/{kid}/channels")) as ws:
        n = len(watch.events)
        reply, _ = execute(ws, "import time; time.sleep(2.5)")
        assert reply["content"]["status"] == "ok"
        watch.wait(launch(kid, "busy"), since=n)
        watch.wait(launch(kid, "ready"), since=n + 1)
    with pytest.raises(urllib.error.HTTPError) as err:
        jupyter.request("POST", f"/gpumarket/api/launches/{kid}/cancel", {})
    assert err.value.code == 409
    assert "stop the kernel instead" in err.value.read().decode()
    err.value.close()
    jupyter.request("DELETE", f"/api/kernels/{kid}")
    ended = watch.wait(launch(kid, "ended"))
    assert ended["reason"] == "stopped"
    assert "gpumarket " + kid + ": ready" in jupyter.log()  # each transition in the server log


def _start_in_background(jupyter: JupyterServer) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def start() -> None:
        try:
            outcome["kernel"] = jupyter.request("POST", "/api/kernels", {"name": "gpumarket"})
        except urllib.error.HTTPError as exc:
            outcome["status"] = exc.code
            exc.close()

    outcome["thread"] = threading.Thread(target=start, daemon=True)
    outcome["thread"].start()
    return outcome


def test_cancel_while_connecting_ends_the_launch_cancelled_at_no_cost(
    jupyter: JupyterServer, watch: EventWatch, own_agent: AgentProcess
) -> None:
    os.kill(own_agent.proc.pid, signal.SIGSTOP)  # the provider stops answering mid-handshake
    try:
        started = _start_in_background(jupyter)
        connecting = watch.wait(any_launch("connecting"))
        kid = connecting["kernel_id"]
        assert connecting["cancellable"] is True
        body = jupyter.request("POST", f"/gpumarket/api/launches/{kid}/cancel", {})
    finally:
        os.kill(own_agent.proc.pid, signal.SIGCONT)
    assert (body["state"], body["reason"]) == ("ended", "cancelled")
    assert "nothing billed" in body["message"]
    assert "no gas spent" in body["message"]
    started["thread"].join(60)
    assert "kernel" not in started  # the start failed: no kernel is left
    assert jupyter.request("GET", "/api/kernels") == []
    assert watch.states(kid) == ["choosing", "connecting", "ended"]
    # the provider is fine afterwards: the next launch works
    kernel = jupyter.request("POST", "/api/kernels", {"name": "gpumarket"})
    jupyter.request("DELETE", f"/api/kernels/{kernel['id']}")


def test_a_cut_link_shows_reconnecting_with_its_attempts_then_ready_again(
    jupyter: JupyterServer, watch: EventWatch, proxy: ThreadedProxy
) -> None:
    kid = jupyter.request("POST", "/api/kernels", {"name": "gpumarket"})["id"]
    watch.wait(launch(kid, "ready"))
    try:
        proxy.refuse()
        proxy.reset()  # the link drops; every reconnect attempt is refused
        first = watch.wait(launch(kid, "reconnecting"))
        assert first["label"] == f"reconnecting (attempt {first['attempt']})"
        watch.wait(lambda e: launch(kid, "reconnecting")(e) and e["attempt"] >= 2)
    finally:
        proxy.restore()
    n = len(watch.events)
    watch.wait(launch(kid, "ready"), since=n - 1)
    assert "idle" not in watch.states(kid)
    jupyter.request("DELETE", f"/api/kernels/{kid}")


def test_cancel_of_an_unknown_launch_is_404(
    jupyter: JupyterServer,
) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        jupyter.request("POST", "/gpumarket/api/launches/nope/cancel", {})
    assert err.value.code == 404
    err.value.close()
