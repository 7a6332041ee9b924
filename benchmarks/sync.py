"""Notebook-directory sync at kernel launch, end to end through the agent.

    python benchmarks/sync.py [--small 1000] [--big-mb 100]

Launches a `gpumarket` kernel three ways in one run: without sync (baseline), with sync of a
fresh directory (1,000 small files + one 100 MB file), and again with the directory unchanged
(target: no file bytes sent). Writes benchmarks/results/sync.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager
from traitlets.config import Config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import environ, running_agent  # noqa: E402


def launch(env: dict[str, str], cwd: Path, sync: bool) -> dict[str, float]:
    config = Config({"GpuMarketProvisioner": {"sync_files": sync, "pull_on_shutdown": False}})
    km = KernelManager(kernel_name="gpumarket", config=config)
    t0 = time.perf_counter()
    with environ(env):
        km.start_kernel(cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    elapsed = time.perf_counter() - t0
    push = km.provisioner.last_push
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return {
        "launch_s": elapsed,
        "sent_bytes": push.sent_bytes if push else 0,
        "reused_bytes": push.reused_bytes if push else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_agent(Path(tmp) / "agent") as agent:
        nb = Path(tmp) / "nb"
        (nb / "small").mkdir(parents=True)
        for i in range(args.small):
            (nb / "small" / f"f{i:04d}.txt").write_bytes(os.urandom(1024))
        with open(nb / "big.bin", "wb") as f:
            for _ in range(args.big_mb):
                f.write(os.urandom(1024 * 1024))
        env = agent.env()
        result = {
            "files": args.small + 1,
            "bytes": args.small * 1024 + args.big_mb * 1024 * 1024,
            "no_sync": launch(env, nb, sync=False),
            "first_launch": launch(env, nb, sync=True),
            "second_launch": launch(env, nb, sync=True),
        }
    result["first_sync_extra_s"] = (
        result["first_launch"]["launch_s"] - result["no_sync"]["launch_s"]
    )
    result["second_sync_extra_s"] = (
        result["second_launch"]["launch_s"] - result["no_sync"]["launch_s"]
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sync.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
