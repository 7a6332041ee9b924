"""Kernel output reaches the agent's log escaped, prefixed and within a budget."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from jupyter_gpumarket.agent.kernel_output import OutputPipe, drain_output, log_line


def test_log_line_escapes_control_characters_and_bounds_length() -> None:
    assert log_line(b"ok \x1b[31mred\r2026 agent INFO forged") == (
        "ok \\x1b[31mred\\x0d2026 agent INFO forged"
    )
    assert log_line(b"\xff") == "\ufffd"
    assert log_line(b"x" * 5000).endswith(" [...]")
    assert len(log_line(b"x" * 5000)) < 1100


async def test_drain_logs_lines_within_budget_and_reads_to_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = asyncio.StreamReader()
    stream.feed_data(b"first\nsecond\r\n" + b"y" * 300 + b"\n" * 50 + b"tail")
    stream.feed_eof()
    with caplog.at_level(logging.INFO, logger="jupyter_gpumarket.agent.kernels"):
        await asyncio.wait_for(drain_output(stream, "kernel pid 7", budget=200), 5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["kernel pid 7: first", "kernel pid 7: second\\x0d"]
    assert lines[-1] == "kernel pid 7: output past 200 bytes is not logged"
    assert all(line.startswith("kernel pid 7: ") for line in lines)
    assert stream.at_eof()


async def test_a_left_behind_daemon_neither_blocks_the_wait_nor_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe = OutputPipe()
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        "echo started; setsid sleep 60 & echo $! > /dev/stderr; exit 3",
        stdout=pipe.write_fd,
        stderr=pipe.write_fd,
    )
    with caplog.at_level(logging.INFO, logger="jupyter_gpumarket.agent.kernels"):
        await pipe.drain("kernel pid 1")
        try:
            assert await asyncio.wait_for(proc.wait(), 30) == 3  # the daemon holds the pipe
            for _ in range(100):
                if len(caplog.records) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            pipe.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "kernel pid 1: started"
    os.kill(int(lines[1].split(": ")[1]), signal.SIGKILL)
