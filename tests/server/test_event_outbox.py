"""An event-stream client's outbox: events go out in order; a client that stops reading is
dropped once its queue is full, and the hub's offers never block or raise."""

from __future__ import annotations

import asyncio
import json
import threading

from jupyter_gpumarket.server.event_outbox import EventOutbox


def test_events_go_out_in_order_from_any_thread() -> None:
    async def main() -> list[str]:
        sent: list[str] = []
        all_sent = asyncio.Event()

        async def write(text: str) -> None:
            sent.append(text)
            if len(sent) == 50:
                all_sent.set()

        box = EventOutbox(asyncio.get_running_loop(), write, lambda: None, limit=100)
        runner = asyncio.ensure_future(box.run())
        thread = threading.Thread(target=lambda: [box.offer({"n": i}) for i in range(50)])
        thread.start()
        thread.join()
        await asyncio.wait_for(all_sent.wait(), 30)
        box.close()
        runner.cancel()
        return sent

    sent = asyncio.run(main())
    assert [json.loads(t)["n"] for t in sent] == list(range(50))


def test_a_client_that_stops_reading_is_dropped_without_blocking_the_hub() -> None:
    async def main() -> tuple[EventOutbox, int, int]:
        stuck = asyncio.Event()  # the client's socket never drains
        dropped: list[bool] = []

        async def write(text: str) -> None:
            await stuck.wait()

        box = EventOutbox(asyncio.get_running_loop(), write, lambda: dropped.append(True), limit=8)
        runner = asyncio.ensure_future(box.run())
        for i in range(100):  # the hub publishes on; each offer returns at once
            box.offer({"n": i})
        await asyncio.sleep(0.05)
        box.offer({"n": "late"})  # after the drop: ignored, no error
        await asyncio.sleep(0.01)
        runner.cancel()
        return box, len(dropped), box._queue.qsize()

    box, drops, queued = asyncio.run(main())
    assert box.dropped
    assert box.closed
    assert drops == 1  # dropped once, not per event
    assert queued <= 8  # the queue never grew past its limit
