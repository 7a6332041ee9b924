"""Where the agent and the renter's tunnel process spend their CPU while a kernel prints
50 MB at a time (py-spy, sampled without stopping them).

    python benchmarks/profile_tunnel.py [--seconds 20] [--ws picows|websockets]

Starts a dev agent and a ``gpumarket`` kernel with its tunnel in its own process, records
both with ``py-spy record --format raw`` while 50 MB outputs run back to back, and writes the
top functions (self and inclusive share of the samples) to benchmarks/results/profile_tunnel.json
(flame graphs: ``py-spy record -o out.svg --pid ...`` the same way).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from tunnel import output_throughput, rtts, start, stop  # noqa: E402

from agentproc import environ, running_agent  # noqa: E402

RESULTS = HERE / "results" / "profile_tunnel.json"


def tunnel_pids() -> set[int]:
    out = subprocess.run(
        ["pgrep", "-f", "jupyter_gpumarket.provisioning.tunnelproc"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {int(p) for p in out.split() if _descends_from_us(int(p))}


def _descends_from_us(pid: int) -> bool:
    """Other tunnels may run on this machine (tests): count only the one we started."""
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rpartition(")")[2].split()[1])
        if pid == os.getpid():
            return True
    return False


def _is_spare(pid: int) -> bool:
    return b"spare-" in Path(f"/proc/{pid}/cmdline").read_bytes()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children: the kernel is not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def top(raw: Path, n: int = 15) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, k = stack.split(";"), int(count)
        total += k
        own[frames[-1]] += k
        for frame in set(frames):
            incl[frame] += k
    return {
        "samples": total,
        "self_pct": {f: round(100 * k / total, 1) for f, k in own.most_common(n)},
        "inclusive_pct": {f: round(100 * k / total, 1) for f, k in incl.most_common(n + 10)},
    }


async def main(agent_pid: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    before = tunnel_pids()
    km, kc, _ = await start("gpumarket", "1")
    await rtts(kc, 20)
    # the kernel's tunnel; a spare for the next kernel may be starting beside it
    candidates = {pid for pid in tunnel_pids() - before if not _is_spare(pid)}
    candidates = candidates or (tunnel_pids() - before)
    cpu_start = {pid: cpu_seconds(pid) for pid in candidates}
    await output_throughput(kc, 10)  # the tunnel that carries it is the kernel's
    tunnel = max(candidates, key=lambda pid: cpu_seconds(pid) - cpu_start[pid])
    recorders = [
        subprocess.Popen(  # noqa: ASYNC220 - returns at once; py-spy runs beside the loop
            [pyspy, "record", "--pid", str(pid), "--rate", "200", "--duration",
             str(args.seconds + 3), "--format", "raw", "-o", str(out / f"{name}.txt"),
             "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in (("agent", agent_pid), ("tunnel", tunnel))
    ]  # fmt: skip
    await asyncio.sleep(1.0)
    speeds, t0 = [], time.monotonic()
    cpu0 = {name: cpu_seconds(pid) for name, pid in (("agent", agent_pid), ("tunnel", tunnel))}
    while time.monotonic() - t0 < args.seconds:
        speeds.append(await output_throughput(kc, 50))
    cpu = {
        name: cpu_seconds(pid) - cpu0[name]
        for name, pid in (("agent", agent_pid), ("tunnel", tunnel))
    }
    moved_mb = 50 * len(speeds)
    for rec in recorders:
        rec.wait()
    await stop(km, kc)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": vars(args),
        "output_mb_per_s": speeds,
        "seconds_sampled": args.seconds + 3,
        "mb_moved": moved_mb,
        # CPU each process spent per MB of kernel output (while py-spy samples it, as before)
        "cpu_ms_per_mb": {name: round(1000 * s / moved_mb, 2) for name, s in cpu.items()},
        "agent": top(out / "agent.txt"),
        "tunnel": top(out / "tunnel.txt"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--ws", default="picows", choices=["picows", "websockets"])
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_agent(Path(tmp) / "agent") as agent,
        environ({**agent.env(), "GPUMARKET_TUNNEL_WS": args.ws}),
    ):
        result = asyncio.run(main(agent.proc.pid, args, Path(tmp)))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("CPU ms per MB of output:", result["cpu_ms_per_mb"])
    for who in ("agent", "tunnel"):
        print(f"== {who}: {result[who]['samples']} samples")
        for f, p in result[who]["self_pct"].items():
            print(f"  {p:5.1f}%  {f}")
