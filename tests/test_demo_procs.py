"""The demo's children: own sessions (a terminal's Ctrl-C reaches only the demo), stopped stage
by stage, and whatever they left in their process groups killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil

from jupyter_gpumarket.cli.demo_procs import Children

# a child that starts a grandchild ignoring SIGTERM in its own group, then waits forever
_PARENT = """
import signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').close(); time.sleep(600)", sys.argv[1]])
time.sleep(600)
"""


def test_children_run_in_their_own_sessions_and_leave_nothing(tmp_path: Path) -> None:
    children = Children()
    started = []
    for name in ("lab", "provider-a", "provider-b"):
        flag = tmp_path / f"{name}.up"
        cmd = [sys.executable, "-c", _PARENT, str(flag)]
        started.append((children.start(name, cmd, env=dict(os.environ), log=None), flag))
    try:
        deadline = time.monotonic() + 60  # hang detection only
        while not all(flag.exists() for _, flag in started):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tree = [psutil.Process(c.proc.pid) for c, _ in started]
        tree += [g for p in list(tree) for g in p.children(recursive=True)]
        assert len(tree) == 6
        for child, _ in started:
            assert os.getsid(child.proc.pid) == child.proc.pid != os.getsid(0)
        assert children.exited() is None
    finally:
        children.stop_all([["lab"], ["provider-a", "provider-b"]], timeout=10)

    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert all(c.proc.returncode is not None for c, _ in started)
