"""File sync at launch: 1,000 small files + one 100 MB file, first and unchanged second launch.

Measures, in one run on a temp dir:
- scan+plan: ``scan`` (walk, stat, SHA-256) + ``plan_upload`` against the agent's blob store;
- sync: scan+plan, then ``BlobStore.put`` of the planned blobs and ``materialize`` into a
  working dir (the agent side on the same disk; the network leg is the tunnel's benchmark);
- baseline: ``shutil.copytree`` of the same directory (what a naive sync copies every time).

The second launch must plan 0 bytes. It is measured cold (no previous manifest: every file is
re-hashed) and warm (previous manifest: unchanged size+mtime reuse the hash, as git's index does).

    python benchmarks/filesync.py          # prints a table, writes benchmarks/results/filesync.json
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from jupyter_gpumarket.agent.filestore import BlobStore
from jupyter_gpumarket.core.filesync import Manifest, UploadPlan, plan_upload
from jupyter_gpumarket.filescan import read_chunks, scan

T = TypeVar("T")
SMALL_FILES = 1000
SMALL_SIZE = 2048
BIG_SIZE = 100 * 1000 * 1000
RESULTS = Path(__file__).parent / "results" / "filesync.json"


def make_notebook_dir(root: Path) -> None:
    for i in range(SMALL_FILES):
        sub = root / f"pkg{i // 100:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"mod{i:04d}.py").write_bytes(os.urandom(SMALL_SIZE))
    with open(root / "data.bin", "wb") as f:
        for _ in range(BIG_SIZE // (1 << 20)):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(BIG_SIZE % (1 << 20)))
    (root / "analysis.ipynb").write_text('{"cells": []}')
    # Written an hour ago, as a notebook's files are by launch time: scan trusts cached hashes
    # only for files that have not changed in the last 2 s.
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for path in root.rglob("*"):
        os.utime(path, ns=(an_hour_ago, an_hour_ago))


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def scan_and_plan(root: Path, store: BlobStore, previous: Manifest | None) -> UploadPlan:
    return plan_upload(scan(root, previous=previous), store.hashes())


def sync(root: Path, store: BlobStore, work: Path, previous: Manifest | None) -> UploadPlan:
    plan = scan_and_plan(root, store, previous)
    for blob in plan.blobs:
        store.put(blob.sha256, read_chunks(root, blob.path))
    store.materialize(plan.manifest, work)
    return plan


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gpumarket-bench-") as tmp:
        base = Path(tmp)
        root, state, work = base / "notebook", base / "state", base / "work"
        root.mkdir()
        make_notebook_dir(root)
        _, baseline_s = timed(lambda: shutil.copytree(root, base / "copy"))

        store = BlobStore(state)
        first_plan, first_plan_s = timed(lambda: scan_and_plan(root, store, None))
        first, first_sync_s = timed(lambda: sync(root, store, work, None))
        cold, cold_s = timed(lambda: scan_and_plan(root, store, None))
        warm, warm_s = timed(lambda: scan_and_plan(root, store, first.manifest))
        second, second_sync_s = timed(lambda: sync(root, store, work, first.manifest))

    assert first_plan.total_bytes == first.total_bytes == first.manifest.total_bytes
    assert cold.total_bytes == warm.total_bytes == second.total_bytes == 0, "second launch sent"
    files = len(first.manifest)
    result: dict[str, object] = {
        "benchmark": "filesync",
        "files": files,
        "total_bytes": first.manifest.total_bytes,
        "baseline_copytree_s": round(baseline_s, 4),
        "first_launch": {
            "scan_plan_s": round(first_plan_s, 4),
            "sync_s": round(first_sync_s, 4),
            "planned_bytes": first.total_bytes,
            "planned_blobs": len(first.blobs),
            "sync_vs_copytree": round(first_sync_s / baseline_s, 3),
        },
        "second_launch_cold": {
            "scan_plan_s": round(cold_s, 4),
            "planned_bytes": cold.total_bytes,
        },
        "second_launch_warm": {
            "scan_plan_s": round(warm_s, 4),
            "sync_s": round(second_sync_s, 4),
            "planned_bytes": warm.total_bytes,
            "sync_vs_copytree": round(second_sync_s / baseline_s, 3),
        },
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    return result


if __name__ == "__main__":
    out = main()
    first, cold, warm = out["first_launch"], out["second_launch_cold"], out["second_launch_warm"]
    print(f"{out['files']} files, {out['total_bytes'] / 1e6:.1f} MB")
    print(f"baseline copytree {out['baseline_copytree_s']:.3f} s")
    rows = [
        ("first launch", first, f"{first['planned_bytes'] / 1e6:.1f} MB"),
        ("second (cold)", cold, f"{cold['planned_bytes']} B"),
        ("second (warm)", warm, f"{warm['planned_bytes']} B"),
    ]
    for name, row, sends in rows:
        sync_s = f"sync {row['sync_s']:.3f} s" if "sync_s" in row else " " * 14
        print(f"{name:14} scan+plan {row['scan_plan_s']:.3f} s   {sync_s}   sends {sends}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
