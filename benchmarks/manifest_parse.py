"""What a peer's manifest costs to parse: the bounded, linear parser vs the old one.

Two manifests, each measured in one run as wire bytes -> ``parse_agent_message`` ->
``Manifest.from_json`` (time of an untraced call; peak memory of a call under tracemalloc),
against two baselines from the same run:

- ``json.loads`` of the same bytes (the floor: any parser pays it);
- the old directory check (a set of every parent prefix of every path, O(depth²) per path),
  which this parser replaced; it is reproduced here on the same paths.

Manifests:

- ``full``: 100,000 files (the entry limit) in a realistic layout, the biggest accepted;
- ``deep``: the issue's attack, paths 2,000 directories deep (refused now, at the first path);
  the old check is measured on the first 40 of its 300 paths and scaled (it needs ~4 MB a path).

For ``full`` the old check was cheap (few directories): the row shows the parser's cost against
json.loads. For ``deep`` the row shows what the old check cost and what the refusal costs now.

``agent_loop_stall``: the longest gap of a 1 ms ticker on the agent's loop (shared by every
lease) while it takes a maximal sync_offer (~32 MB, the old control-message cap): parsed as one
message on the loop (before) vs as pages of core.control.MANIFEST_PAGE_BYTES, each parsed on the
loop within core.control.MAX_REQUEST_BYTES with a turn of the loop between them (now).

``loop_stall``: the longest gap of a 1 ms ticker on the renter's tunnel loop while it takes the
full-size pull manifest, parsed on the loop (before) vs as the renter does now (AgentInbox on a
worker thread, then ``Manifest.from_json`` on one; ``json.loads`` itself still holds the GIL).

    python benchmarks/manifest_parse.py   # prints a table, writes results/manifest_parse.json
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.filesync import MAX_ENTRIES, Manifest
from jupyter_gpumarket.exceptions import ProtocolError
from jupyter_gpumarket.provisioning.agent_inbox import AgentInbox

RESULTS = Path(__file__).parent / "results" / "manifest_parse.json"
SHA = hashlib.sha256(b"x").hexdigest()
DEEP_PATHS, DEEP_SAMPLE = 300, 40


def _call(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(ProtocolError):  # a refused manifest: the call ends there
        fn()


def measure(fn: Callable[[], Any]) -> tuple[float, int]:
    """(seconds of one untraced call, peak traced bytes of another)."""
    gc.collect()
    start = time.perf_counter()
    _call(fn)
    seconds = time.perf_counter() - start
    gc.collect()
    tracemalloc.start()
    _call(fn)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


def old_directory_check(paths: list[str]) -> int:
    """The replaced check, as it was: every parent prefix of every path, in one set."""
    dirs = {path.rsplit("/", i)[0] for path in paths for i in range(1, path.count("/") + 1)}
    return len(dirs.intersection(paths))


def new_parse(raw: bytes) -> Manifest:
    return Manifest.from_json(control.parse_agent_message(raw).manifest)


def wire(paths: list[str]) -> bytes:
    return control.dump(control.SyncOffer(manifest={"files": {p: [1, SHA, 1] for p in paths}}))


def row(name: str, paths: list[str], old_paths: list[str], scale: float) -> dict[str, Any]:
    raw = wire(paths)
    json_s, json_peak = measure(lambda: json.loads(raw))
    new_s, new_peak = measure(lambda: new_parse(raw))
    old_s, old_peak = measure(lambda: old_directory_check(old_paths))
    old_s, old_peak = old_s * scale, int(old_peak * scale)
    return {
        "manifest": name,
        "files": len(paths),
        "wire_bytes": len(raw),
        "json_loads_s": round(json_s, 4),
        "new_parse_s": round(new_s, 4),
        "new_peak_bytes": new_peak,
        "old_dir_check_s": round(old_s, 4),
        "old_dir_check_peak_bytes": old_peak,
        "new_vs_json_loads_time": round(new_s / json_s, 2),
        "new_vs_old_time": round(new_s / old_s, 4),
        "new_peak_per_wire_byte": round(new_peak / len(raw), 1),
        "old_peak_per_wire_byte": round(old_peak / len(raw), 1),
        "json_peak_per_wire_byte": round(json_peak / len(raw), 1),
    }


async def _max_gap(take: Callable[[], Any]) -> float:
    """Longest gap between ticks of a 1 ms ticker while ``await take()`` runs."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    await take()
    done.set()
    await task
    return max(gaps)


async def _on_loop(raw: bytes) -> None:
    new_parse(raw)


async def _as_renter(raw: bytes) -> None:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    inbox = AgentInbox(lambda msg, extra: got.set_result(msg))
    inbox.receive([raw])
    msg = await got
    await asyncio.to_thread(Manifest.from_json, msg.manifest)


def loop_stall(paths: list[str]) -> dict[str, Any]:
    raw = control.dump(control.PullManifest(manifest={"files": {p: [1, SHA, 1] for p in paths}}))
    before = asyncio.run(_max_gap(lambda: _on_loop(raw)))
    now = asyncio.run(_max_gap(lambda: _as_renter(raw)))
    return {
        "wire_bytes": len(raw),
        "max_gap_parsed_on_loop_s": round(before, 4),
        "max_gap_now_s": round(now, 4),
        "now_vs_on_loop": round(now / before, 3),
    }


async def _agent_whole(raw: bytes) -> None:
    control.parse_agent_message(raw)


async def _agent_pages(pages: list[bytes]) -> None:
    for page in pages:
        control.parse_request(page)
        await asyncio.sleep(0)  # the agent's link loop, after each frame


def agent_loop_stall() -> dict[str, Any]:
    stem = "x" * 228
    files = {f"d{i % 500}/{stem}{i:07d}": [1, SHA, i] for i in range(88_000)}
    raw = control.dump(control.SyncOffer(manifest={"files": files}))
    pages = [control.dump(p) for p in control.sync_offer_pages({"files": files})]
    before = asyncio.run(_max_gap(lambda: _agent_whole(raw)))
    now = asyncio.run(_max_gap(lambda: _agent_pages(pages)))
    return {
        "wire_bytes": len(raw),
        "pages": len(pages),
        "max_gap_one_message_s": round(before, 4),
        "max_gap_pages_s": round(now, 4),
        "pages_vs_one_message": round(now / before, 4),
    }


def main() -> dict[str, Any]:
    full = [f"data/train/class_{i % 1000:04d}/image_{i:06d}.jpeg" for i in range(MAX_ENTRIES)]
    deep = [f"d{i}/" + "a/" * 2000 + "f" for i in range(DEEP_PATHS)]
    return {
        "benchmark": "manifest_parse",
        "rows": [
            row("full (100,000 files)", full, full, 1.0),
            row("deep (2,000 levels)", deep, deep[:DEEP_SAMPLE], DEEP_PATHS / DEEP_SAMPLE),
        ],
        "loop_stall": loop_stall(full),
        "agent_loop_stall": agent_loop_stall(),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


if __name__ == "__main__":
    out = main()
    for r in out["rows"]:
        print(
            f"{r['manifest']:22} {r['wire_bytes'] / 1e6:6.2f} MB on the wire | "
            f"json.loads {r['json_loads_s']:.3f} s | new parse {r['new_parse_s']:.3f} s "
            f"({r['new_vs_json_loads_time']}x json.loads), peak {r['new_peak_per_wire_byte']}x "
            f"its size | old dir check {r['old_dir_check_s']:.3f} s, peak "
            f"{r['old_peak_per_wire_byte']}x its size"
        )
    stall = out["loop_stall"]
    print(
        f"tunnel loop's longest stall taking the full manifest: parsed on the loop "
        f"{stall['max_gap_parsed_on_loop_s']:.3f} s, now {stall['max_gap_now_s']:.3f} s "
        f"({stall['now_vs_on_loop']}x)"
    )
    agent = out["agent_loop_stall"]
    print(
        f"agent loop's longest stall taking a {agent['wire_bytes'] / 1e6:.1f} MB manifest: one "
        f"message {agent['max_gap_one_message_s']:.3f} s, {agent['pages']} pages "
        f"{agent['max_gap_pages_s']:.3f} s ({agent['pages_vs_one_message']}x)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
