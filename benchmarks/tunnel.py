"""Tunnelled `gpumarket` kernel vs a local `python3` kernel over direct ZMQ, in one run.

    python benchmarks/tunnel.py [--requests 500] [--rounds 5] [--output-mb 50] [--starts 5]

Starts a dev provider agent on loopback, then measures, alternating between the two kernels so
machine noise hits both alike:
  - execute('pass') -> execute_reply round trip (median, p99)
  - N MB of output (N x 1 MB prints) end to end: execute until idle, MB/s
  - kernel start until the first kernel_info_reply
Prints ratios (gpumarket / direct) and writes benchmarks/results/tunnel.json. ``gpumarket`` is
the default: the shim and the link in the kernel's own tunnel process (GPUMARKET_TUNNEL_PROCESS=1,
a spare process taken at start); ``gpumarket_thread`` the same kernelspec with the tunnel on a
thread of this process (GPUMARKET_TUNNEL_PROCESS=0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import environ, running_agent  # noqa: E402

RESULTS = HERE / "results" / "tunnel.json"


KINDS = {  # result key: (kernelspec, GPUMARKET_TUNNEL_PROCESS)
    "direct": ("python3", "0"),
    "gpumarket": ("gpumarket", "1"),
    "gpumarket_thread": ("gpumarket", "0"),
}


async def start(name: str, process: str = "0") -> tuple[AsyncKernelManager, Any, float]:
    t0 = time.perf_counter()
    km = AsyncKernelManager(kernel_name=name)
    with environ({"GPUMARKET_TUNNEL_PROCESS": process}):
        await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc, time.perf_counter() - t0


async def stop(km: AsyncKernelManager, kc: Any) -> None:
    kc.stop_channels()
    await km.shutdown_kernel(now=True)


async def drain_iopub(kc: Any) -> None:
    while True:
        try:
            await kc.get_iopub_msg(timeout=0.01)
        except Exception:  # queue.Empty
            return


async def rtts(kc: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await kc.execute("pass", reply=True, timeout=30)
        out.append(time.perf_counter() - t0)
    await drain_iopub(kc)
    return out


async def output_throughput(kc: Any, mb: int) -> float:
    line = "'x' * (1024 * 1024 - 1) + '\\n'"
    code = f"import sys\nfor _ in range({mb}):\n    sys.stdout.write({line})"
    await drain_iopub(kc)
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    got = 0
    while True:
        msg = await kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            got += len(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    elapsed = time.perf_counter() - t0
    if got != mb * 1024 * 1024:
        raise RuntimeError(f"received {got} bytes of output, expected {mb * 1024 * 1024}")
    return mb / elapsed


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    starts: dict[str, list[float]] = {key: [] for key in KINDS}
    for _ in range(args.starts):
        for key, (name, process) in KINDS.items():
            km, kc, dt = await start(name, process)
            starts[key].append(dt)
            await stop(km, kc)

    kernels = {}
    for key, (name, process) in KINDS.items():
        km, kc, _ = await start(name, process)
        await rtts(kc, 50)  # warm up each
        kernels[key] = (km, kc)
    rtt: dict[str, list[float]] = {key: [] for key in KINDS}
    thr: dict[str, list[float]] = {key: [] for key in KINDS}
    per_round = max(1, args.requests // args.rounds)
    for _ in range(args.rounds):
        for key, (_, kc) in kernels.items():
            rtt[key] += await rtts(kc, per_round)
    for _ in range(args.output_rounds):
        for key, (_, kc) in kernels.items():
            thr[key].append(await output_throughput(kc, args.output_mb))
    for km, kc in kernels.values():
        await stop(km, kc)

    def summary(key: str) -> dict[str, float]:
        return {
            "rtt_median_ms": statistics.median(rtt[key]) * 1e3,
            "rtt_p99_ms": pct(rtt[key], 0.99) * 1e3,
            "output_mb_per_s": statistics.median(thr[key]),
            "start_s": statistics.median(starts[key]),
        }

    direct, remote, thread = summary("direct"), summary("gpumarket"), summary("gpumarket_thread")
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": vars(args),
        "direct": direct,
        "gpumarket": remote,
        "gpumarket_thread": thread,
        "ratios": {
            "rtt_median": remote["rtt_median_ms"] / direct["rtt_median_ms"],
            "rtt_p99": remote["rtt_p99_ms"] / direct["rtt_p99_ms"],
            "output_throughput": remote["output_mb_per_s"] / direct["output_mb_per_s"],
            "start_extra_s": remote["start_s"] - direct["start_s"],
        },
        "thread_ratios": {
            "rtt_median": thread["rtt_median_ms"] / direct["rtt_median_ms"],
            "rtt_p99": thread["rtt_p99_ms"] / direct["rtt_p99_ms"],
            "output_throughput": thread["output_mb_per_s"] / direct["output_mb_per_s"],
            "start_extra_s": thread["start_s"] - direct["start_s"],
        },
        "targets": {
            "rtt_median": "<= 1.10",
            "output_throughput": ">= 0.95",
            "start_extra_s": "<= 0.3",
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-mb", type=int, default=50)
    parser.add_argument("--output-rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_agent(Path(tmp)) as agent,
        environ(agent.env()),
    ):
        result = asyncio.run(main(args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for key in KINDS:
        r = result[key]
        print(
            f"{key:18s} rtt median {r['rtt_median_ms']:.3f} ms  p99 {r['rtt_p99_ms']:.3f} ms  "
            f"output {r['output_mb_per_s']:.1f} MB/s  start {r['start_s']:.3f} s"
        )
    print("ratios:", json.dumps({k: round(v, 3) for k, v in result["ratios"].items()}))
    print("thread:", json.dumps({k: round(v, 3) for k, v in result["thread_ratios"].items()}))
