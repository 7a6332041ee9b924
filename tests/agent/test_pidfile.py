"""`gpumarket provider stop` and the agent's pid file, with real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jupyter_gpumarket.agent.pidfile import StopOutcome, running_pid, stop_agent

from agentproc import start_agent

PROVIDER = (sys.executable, "-m", "jupyter_gpumarket.cli", "provider")

# A process that holds the pid file the way `provider serve` does and ignores SIGTERM.
STUBBORN = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from jupyter_gpumarket.agent.pidfile import hold_pid_file
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with hold_pid_file(Path(sys.argv[1])):
        print("holding", flush=True)
        time.sleep(60)
    """
)


def _stop(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROVIDER, "stop", "--state-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stop_with_nothing_running_says_so_and_fails(tmp_path: Path) -> None:
    out = _stop(tmp_path / "state")
    assert out.returncode == 1
    assert f"no provider agent is running from {tmp_path / 'state'}" in out.stderr
    assert "--state-dir it was started with" in out.stderr


def test_a_stale_pid_file_is_removed_and_reported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # the pid of a process that has exited: nobody holds the file's lock
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (state / "agent.pid").write_text(dead.stdout)
    assert running_pid(state) is None
    out = _stop(state)
    assert out.returncode == 1
    assert "removed the stale" in out.stderr
    assert f"pid {dead.stdout.strip()} ended without removing it" in out.stderr
    assert not (state / "agent.pid").exists()


def test_an_agent_that_does_not_exit_in_time_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "holding\n"
        assert running_pid(state) == proc.pid
        lines: list[str] = []
        t0 = time.monotonic()
        outcome, found = stop_agent(state, timeout=1.0, progress=lines.append, every=0.3)
        assert outcome is StopOutcome.STILL_RUNNING
        assert 1.0 <= time.monotonic() - t0 < 5
        assert found.pid == proc.pid
        assert lines
        assert all(f"waiting for the agent (pid {proc.pid})" in x for x in lines)
        out = _stop(state, "--timeout", "0.5")
        assert out.returncode == 1
        assert f"the agent (pid {proc.pid}) is still running after 0.5 s" in out.stderr
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert running_pid(state) is None  # the lock went with the process


@pytest.mark.slow
def test_stop_ends_a_running_agent_and_a_second_one_is_refused(tmp_path: Path) -> None:
    agent = start_agent(tmp_path)
    try:
        pid_file = agent.state_dir / "agent.pid"
        assert pid_file.read_text().strip() == str(agent.proc.pid)
        assert running_pid(agent.state_dir) == agent.proc.pid

        second = subprocess.run(
            [*PROVIDER, "serve", "--dev", "--sandbox", "off", "--state-dir", str(agent.state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"an agent is already serving from {agent.state_dir} (pid {agent.proc.pid})" in (
            second.stderr
        )
        assert pid_file.read_text().strip() == str(agent.proc.pid)  # untouched

        out = _stop(agent.state_dir)
        assert out.returncode == 0, out.stderr
        assert f"provider agent (pid {agent.proc.pid}) stopped" in out.stdout
        assert agent.proc.poll() == 0  # exited by the time `stop` returned
        assert not pid_file.exists()
    finally:
        agent.stop()


@pytest.mark.slow
def test_an_agent_starts_over_a_stale_pid_file(tmp_path: Path) -> None:
    first = start_agent(tmp_path)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    pid_file = first.state_dir / "agent.pid"
    assert pid_file.read_text().strip() == str(first.proc.pid)  # left behind
    (tmp_path / "ready.json").unlink()  # left behind too
    second = start_agent(tmp_path)
    try:
        assert pid_file.read_text().strip() == str(second.proc.pid)
    finally:
        assert second.stop() == 0
    assert not pid_file.exists()
