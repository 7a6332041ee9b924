"""What the kernel sandbox costs: start time and execute round trip, with and without, in one run.

    python benchmarks/sandbox.py [--starts 10] [--requests 500] [--rounds 5]

Two dev agents on loopback, one `--sandbox off` and one `--sandbox on` (bubblewrap; as root the
kernels run as slot users, so `gpumarket provider setup --slots 2` first), alternating so machine
noise hits both alike:
  - backend start: the agent's KernelProcess.start() alone (spawn until the 5 ipc sockets exist)
  - client start: `gpumarket` kernel start through the tunnel until the first kernel_info_reply
  - execute('pass') -> execute_reply round trip (median, p99)
  - bwrap's own cost: `true` with and without the sandbox (no kernel, so little noise)
Writes benchmarks/results/sandbox.json. Targets (issue 6): start overhead < 150 ms, RTT within
noise (ratio ~1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from tunnel import pct, rtts, start, stop  # noqa: E402

from jupyter_gpumarket.agent.kernels import KernelProcess, KernelSettings  # noqa: E402
from jupyter_gpumarket.agent.sandbox import (  # noqa: E402
    SandboxMounts,
    build_bwrap_argv,
    default_policy,
    sandbox_available,
)
from jupyter_gpumarket.agent.slots import find_slot_users  # noqa: E402

from agentproc import environ, running_agent  # noqa: E402

RESULTS = HERE / "results" / "sandbox.json"
MODES = ("off", "on")


async def backend_start(tmp: Path, sandboxed: bool) -> float:
    """One KernelProcess start (the part of a launch the sandbox changes), in seconds."""
    work = tmp / "state" / "leases" / secrets.token_hex(8) / "work"
    work.mkdir(parents=True, mode=0o700)
    policy = default_policy(tmp / "state") if sandboxed else None
    slots = find_slot_users() if sandboxed and os.geteuid() == 0 else ()
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(work)}
    kernel = KernelProcess(
        workdir=work,
        key=secrets.token_hex(16),
        env=env,
        settings=KernelSettings(sandbox=policy),
        slot=slots[0] if slots else None,
    )
    t0 = time.perf_counter()
    await kernel.start()
    dt = time.perf_counter() - t0
    await kernel.stop()
    kernel.cleanup()
    shutil.rmtree(work.parent, ignore_errors=True)
    return dt


def bare_setup_ms(tmp: Path, n: int = 40) -> dict[str, float]:
    """`true` with and without the kernel's sandbox around it: bwrap's own cost, noise-free."""
    slots = find_slot_users() if os.geteuid() == 0 else ()
    work, run = tmp / "bare" / "work", tmp / "bare" / "run"
    work.mkdir(parents=True)
    run.mkdir()
    uid = slots[-1].uid if slots else None
    gid = slots[-1].gid if slots else None
    if uid is not None and gid is not None:
        os.chown(work, uid, gid)
    mounts = SandboxMounts(str(work), str(run), uid=uid, gid=gid)
    argv = build_bwrap_argv(default_policy(tmp / "state"), mounts, ["true"])

    def median_ms(cmd: list[str]) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    plain, boxed = median_ms(["true"]), median_ms(argv)
    return {"true_ms": plain, "sandboxed_true_ms": boxed, "setup_ms": boxed - plain}


async def main(args: argparse.Namespace, agents: dict[str, Any], tmp: Path) -> dict[str, Any]:
    backend: dict[str, list[float]] = {m: [] for m in MODES}
    client: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.starts):
        for mode in MODES:
            backend[mode].append(await backend_start(tmp, mode == "on"))
            with environ(agents[mode].env()):
                km, kc, dt = await start("gpumarket")
            client[mode].append(dt)
            await stop(km, kc)
    kernels = {}
    for mode in MODES:
        with environ(agents[mode].env()):
            km, kc, _ = await start("gpumarket")
        await rtts(kc, 50)  # warm up
        kernels[mode] = (km, kc)
    rtt: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode, (_, kc) in kernels.items():
            rtt[mode] += await rtts(kc, max(1, args.requests // args.rounds))
    for km, kc in kernels.values():
        await stop(km, kc)

    def summary(mode: str) -> dict[str, float]:
        return {
            "backend_start_ms": statistics.median(backend[mode]) * 1e3,
            "client_start_s": statistics.median(client[mode]),
            "rtt_median_ms": statistics.median(rtt[mode]) * 1e3,
            "rtt_p99_ms": pct(rtt[mode], 0.99) * 1e3,
        }

    off, on = summary("off"), summary("on")
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "root": os.geteuid() == 0,
            "sandbox": sandbox_available()[1],
        },
        "params": vars(args),
        "bwrap_alone": bare_setup_ms(tmp),
        "unsandboxed": off,
        "sandboxed": on,
        "overhead": {
            "backend_start_ms": on["backend_start_ms"] - off["backend_start_ms"],
            "client_start_ms": (on["client_start_s"] - off["client_start_s"]) * 1e3,
            "rtt_median_ratio": on["rtt_median_ms"] / off["rtt_median_ms"],
            "rtt_p99_ratio": on["rtt_p99_ms"] / off["rtt_p99_ms"],
        },
        "targets": {"start_overhead_ms": "< 150", "rtt_median_ratio": "within noise (~1.0)"},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ok, why = sandbox_available()
    if not ok:
        sys.exit(f"no sandbox here: {why}")
    with tempfile.TemporaryDirectory() as name, ExitStack() as stack:
        tmp = Path(name)
        agents = {
            mode: stack.enter_context(
                running_agent(tmp / mode, "--sandbox", mode, "--max-kernels", "2")
            )
            for mode in MODES
        }
        result = asyncio.run(main(args, agents, tmp))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for mode, key in (("off", "unsandboxed"), ("on", "sandboxed")):
        r = result[key]
        print(
            f"sandbox {mode:3s}  backend start {r['backend_start_ms']:.1f} ms  "
            f"client start {r['client_start_s']:.3f} s  rtt median {r['rtt_median_ms']:.3f} ms  "
            f"p99 {r['rtt_p99_ms']:.3f} ms"
        )
    print("overhead:", json.dumps({k: round(v, 3) for k, v in result["overhead"].items()}))
    print("bwrap alone:", json.dumps({k: round(v, 2) for k, v in result["bwrap_alone"].items()}))
