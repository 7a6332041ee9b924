"""BlockingRunner: blocking work on its own thread, abandoned at its deadline."""

from __future__ import annotations

import threading

import pytest

from jupyter_gpumarket.agent.blocking import BlockingRunner, OperationTimedOut


async def test_results_and_errors_come_back() -> None:
    runner = BlockingRunner(30.0)
    assert await runner.run(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await runner.run(divmod, 1, 0)
    assert not runner.stuck


async def test_a_stuck_call_is_abandoned_and_blocks_no_one_but_its_owner() -> None:
    release = threading.Event()
    runner = BlockingRunner(0.2, "file operation")
    with pytest.raises(OperationTimedOut, match=r"did not finish within 0\.2 s"):
        await runner.run(release.wait)
    assert runner.stuck
    with pytest.raises(OperationTimedOut, match="still stuck"):
        await runner.run(sum, [1])  # one abandoned thread per owner, never more
    stuck = [t for t in threading.enumerate() if t.name == "file operation"]
    assert stuck
    assert all(t.daemon for t in stuck)  # never holds up the interpreter's exit
    assert await BlockingRunner(30.0).run(sum, [2]) == 2  # other owners are not held up
    release.set()
    for t in stuck:
        t.join(10)
    assert not runner.stuck
    assert await runner.run(sum, [1]) == 1
