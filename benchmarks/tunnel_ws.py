"""The renter link's websocket, picows vs websockets, against direct ZMQ, in one run.

    python benchmarks/tunnel_ws.py [--requests 500] [--rounds 5] [--output-mb 50] [--starts 3]

benchmarks/tunnel.py's measurements (execute round trip, N MB of output, kernel start) for a
local ``python3`` kernel over direct ZMQ and for the ``gpumarket`` kernel with the renter's link
on each websocket (GPUMARKET_TUNNEL_WS), the tunnel on a thread (``thread``) and in its own
process (``process``, GPUMARKET_TUNNEL_PROCESS=1), alternating between all of them so machine
noise hits each alike. Writes benchmarks/results/tunnel_picows.json.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from tunnel import output_throughput, pct, rtts, stop  # noqa: E402
from tunnel import start as start_kernel  # noqa: E402

from agentproc import environ, running_agent  # noqa: E402

RESULTS = HERE / "results" / "tunnel_picows.json"

KINDS = {  # result key: (kernelspec, GPUMARKET_TUNNEL_PROCESS, GPUMARKET_TUNNEL_WS)
    "direct": ("python3", "0", "picows"),
    "thread_websockets": ("gpumarket", "0", "websockets"),
    "thread_picows": ("gpumarket", "0", "picows"),
    "process_websockets": ("gpumarket", "1", "websockets"),
    "process_picows": ("gpumarket", "1", "picows"),
}


async def start(key: str) -> tuple[Any, Any, float]:
    name, process, ws = KINDS[key]
    with environ({"GPUMARKET_TUNNEL_WS": ws}):
        return await start_kernel(name, process)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    starts: dict[str, list[float]] = {key: [] for key in KINDS}
    for _ in range(args.starts):
        for key in KINDS:
            km, kc, dt = await start(key)
            starts[key].append(dt)
            await stop(km, kc)

    kernels = {}
    for key in KINDS:
        km, kc, _ = await start(key)
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

    summary = {
        key: {
            "rtt_median_ms": statistics.median(rtt[key]) * 1e3,
            "rtt_p99_ms": pct(rtt[key], 0.99) * 1e3,
            "output_mb_per_s": statistics.median(thr[key]),
            "output_mb_per_s_all": thr[key],
            "start_s": statistics.median(starts[key]),
        }
        for key in KINDS
    }
    direct = summary["direct"]
    ratios = {
        key: {
            "rtt_median": s["rtt_median_ms"] / direct["rtt_median_ms"],
            "rtt_p99": s["rtt_p99_ms"] / direct["rtt_p99_ms"],
            "output_throughput": s["output_mb_per_s"] / direct["output_mb_per_s"],
            "start_extra_s": s["start_s"] - direct["start_s"],
        }
        for key, s in summary.items()
        if key != "direct"
    }
    picows_vs_websockets = {
        mode: {
            "rtt_median": summary[f"{mode}_picows"]["rtt_median_ms"]
            / summary[f"{mode}_websockets"]["rtt_median_ms"],
            "output_throughput": summary[f"{mode}_picows"]["output_mb_per_s"]
            / summary[f"{mode}_websockets"]["output_mb_per_s"],
        }
        for mode in ("thread", "process")
    }
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {**vars(args), "out": str(args.out)},
        **summary,
        "ratios_vs_direct": ratios,
        "picows_vs_websockets": picows_vs_websockets,
        "targets": {"rtt_median": "<= 1.10", "output_throughput": ">= 0.95"},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-mb", type=int, default=50)
    parser.add_argument("--output-rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_agent(Path(tmp)) as agent,
        environ(agent.env()),
    ):
        result = asyncio.run(main(args))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key in KINDS:
        r = result[key]
        print(
            f"{key:20s} rtt median {r['rtt_median_ms']:.3f} ms  p99 {r['rtt_p99_ms']:.3f} ms  "
            f"output {r['output_mb_per_s']:.1f} MB/s  start {r['start_s']:.3f} s"
        )
    for key, ratio in result["ratios_vs_direct"].items():
        print(f"{key:20s}", json.dumps({k: round(v, 3) for k, v in ratio.items()}))
    print("picows/websockets:", json.dumps(result["picows_vs_websockets"]))
