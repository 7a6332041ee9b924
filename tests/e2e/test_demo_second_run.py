"""`gpumarket demo` twice: a second demo while one runs fails fast and leaves the running one
whole; Ctrl-C leaves no process behind; a second run after the first works."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
_DEMO = (sys.executable, "-m", "jupyter_gpumarket.cli", "demo")


def _demo(home: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "jupyter_gpumarket.cli", "demo", "--no-lab", "--home", str(home)]
    with log.open("wb") as out:
        return subprocess.Popen([*cmd, *extra], stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180  # hang detection only
    while "demo ready" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _state(home: Path) -> dict[str, bytes]:
    skip = {"demo.lock"}
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in home.rglob("*")
        if p.is_file()
        and p.name not in skip
        and p.suffix != ".log"
        and "state" not in p.parts
        and p.parent.name != "provider"
    }


def _block_number(profile: Path) -> int:
    rpc = json.loads(profile.read_text())["rpc_url"]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    req = urllib.request.Request(rpc, body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.loads(resp.read())["result"], 16)


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert len(descendants) >= 5, log.read_text()  # the chain and four providers at least
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0, log.read_text()
    assert "demo stopped" in log.read_text()
    _, alive = psutil.wait_procs(descendants, timeout=5)
    assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def test_a_second_demo_fails_fast_and_a_later_run_works(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _demo(home, tmp_path / "first.log")
    try:
        _wait_ready(first, tmp_path / "first.log")
        before = _state(home)
        assert {"networks/devnet.json", "provider-ready.json", "demo.env"} <= set(before)
        blocks = _block_number(home / "networks" / "devnet.json")

        second = subprocess.run(
            [*_DEMO, "--no-lab", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr, second.stderr
        assert _state(home) == before  # profile, ready files, wallets, env file untouched
        assert _block_number(home / "networks" / "devnet.json") >= blocks  # its chain runs
        assert first.poll() is None
    finally:
        if first.poll() is None:
            _stop(first, tmp_path / "first.log")

    again = _demo(home, tmp_path / "again.log")
    try:
        _wait_ready(again, tmp_path / "again.log")
        ready = json.loads((home / "provider-ready.json").read_text())
        assert ready["offer_id"] >= 1
        # a provider that dies takes the demo down, whole, with a non-zero exit
        tree = psutil.Process(again.pid).children(recursive=True)
        (victim,) = [p for p in tree if "h100-eu" in " ".join(p.cmdline())]
        victim.kill()
        assert again.wait(90) == 1, (tmp_path / "again.log").read_text()
        assert "provider-h100-eu exited" in (tmp_path / "again.log").read_text()
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        if again.poll() is None:
            _stop(again, tmp_path / "again.log")
