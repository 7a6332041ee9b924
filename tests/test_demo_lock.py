"""One `gpumarket demo` per demo home, and only on a free port: a second one fails at once and
touches nothing (the running demo's profile, ready files, chain and kernels stay as they are)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_gpumarket.cli.demo_lock import LOCK_NAME, check_port_free, demo_lock
from jupyter_gpumarket.exceptions import ConfigError


def _snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def test_a_held_lock_names_the_running_demo(tmp_path: Path) -> None:
    with demo_lock(tmp_path, port=8899) as path:
        before = path.read_bytes()
        with pytest.raises(ConfigError) as err, demo_lock(tmp_path, port=9999):
            pass  # pragma: no cover - never entered
        assert f"pid {os.getpid()}" in str(err.value)
        assert "port 8899" in str(err.value)
        assert "--home" in str(err.value)  # what to do next
        assert path.read_bytes() == before  # the loser did not rewrite the holder's file
    with demo_lock(tmp_path, port=None) as path:  # released on exit: the next demo gets it
        assert json.loads(path.read_text()) == {"pid": os.getpid(), "port": None}


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    home = tmp_path / "home"
    home.mkdir()
    (home / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError, match=r"symbolic link|loop"), demo_lock(home, port=1):
        pass  # pragma: no cover
    assert target.read_text() == "keep"


def test_a_taken_port_is_named() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} .*--port"):
            check_port_free("127.0.0.1", port)


def _demo(home: Path, port: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jupyter_gpumarket.cli", "demo", "--home", str(home)]
    return subprocess.run(
        [*cmd, "--port", str(port)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_second_demo_on_a_held_home_fails_before_touching_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "networks").mkdir(parents=True)
    (home / "networks" / "devnet.json").write_text('{"running": "profile"}')
    (home / "provider-ready.json").write_text('{"offer_id": 1}')
    with demo_lock(home, port=8899):
        before = _snapshot(home)
        done = _demo(home, 8899)
        assert done.returncode == 1
        assert "already running" in done.stderr
        assert f"pid {os.getpid()}" in done.stderr
        assert _snapshot(home) == before  # no profile, ready file, wallet or log touched


def test_a_demo_on_a_taken_port_fails_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _demo(tmp_path / "home", port)
    assert done.returncode == 1
    assert f"port {port}" in done.stderr
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == [LOCK_NAME]
