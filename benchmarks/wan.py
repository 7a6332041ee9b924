"""gpumarket's tunnel vs ``ssh -L`` forwards of a kernel's five ZMQ ports, on emulated WAN links.

    python benchmarks/wan.py [--profiles 20ms-100mbit,150ms-10mbit] [--output-mb 20]
                             [--output-runs 3] [--requests 50] [--stall 10] [--skip-ssh]

Both paths cross the same userspace link emulator (tests/linkemu.py, in a process of its own:
one-way delay, bandwidth cap each way, stalls that hold bytes, resets). Per link profile:
  - start: kernel start until the first execute_reply (gpumarket: the provisioner's launch
    through a dev agent; ssh: ``ssh -L ... python -m ipykernel_launcher`` as remote_ikernel)
  - execute round trip (median)
  - N MB of output (1 MB writes) until idle, --output-runs times: the median MB/s, and the
    tunnel's reconnects meanwhile
  - a stall of --stall s in the middle of a trickle of output (a line every 0.1 s): when the
    tunnel noticed it, the time from the link's return to the next line, lines lost
  - a reset of every connection: the time to the next line (ssh: its forwards die with it)
ssh needs Debian's openssh-server (/usr/sbin/sshd); without it the ssh side is skipped with a
message. Writes benchmarks/results/wan.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from sshfwd import SSHD, Sshd, SshKernel  # noqa: E402
from tunnel import drain_iopub, output_throughput, rtts  # noqa: E402

from agentproc import environ, running_agent  # noqa: E402

RESULTS = HERE / "results" / "wan.json"
LINKEMU = HERE.parent / "tests" / "linkemu.py"
PROFILES = {  # name: (one-way delay s, bytes/s each way)
    "20ms-100mbit": (0.010, 100e6 / 8),
    "150ms-10mbit": (0.075, 10e6 / 8),
}
TRICKLE_PERIOD = 0.1
GIVE_UP = 30.0  # no output this long after a fault: it did not recover


class Link:
    """tests/linkemu.py as a child process, controlled over its stdin."""

    def __init__(self, target_port: int, delay: float, rate: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(LINKEMU),
                str(target_port),
                "--delay",
                f"{delay}",
                "--rate",
                f"{rate}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(HERE.parent / "tests")},
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def command(self, what: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def first_reply(kc: Any, *, ready: bool = True) -> None:
    """Until the first execute_reply. ``ready=False`` for a client without a manager: its
    heartbeat check calls a kernel dead whose forwards are not up yet, so just ask."""
    if ready:
        await kc.wait_for_ready(timeout=120)
    await kc.execute("pass", reply=True, timeout=120)


async def outputs(kc: Any, args: argparse.Namespace) -> dict[str, Any]:
    """--output-runs outputs of --output-mb MB: the median MB/s, and each run's."""
    runs = [await output_throughput(kc, args.output_mb) for _ in range(args.output_runs)]
    return {"output_mb_per_s": statistics.median(runs), "output_runs_mb_per_s": runs}


async def trickle_through(kc: Any, link: Link, fault: str, stall: float, probe: Any) -> dict:
    """Lines every 0.1 s; a fault 2 s in; when output came back, and what was lost."""
    n = int((2 + stall + 6) / TRICKLE_PERIOD)
    code = (
        f"import time\nfor i in range({n}):\n    print(i, flush=True)\n"
        f"    time.sleep({TRICKLE_PERIOD})"
    )
    await drain_iopub(kc)
    msg_id = kc.execute(code)
    arrivals: list[tuple[float, list[int]]] = []
    fault_at = back_at = None
    noticed_after = None
    alive_throughout = True
    start = time.monotonic()
    while True:
        now = time.monotonic()
        if fault_at is None and now - start >= 2:
            fault_at = time.monotonic()
            link.command("stall" if fault == "stall" else "reset")
        if fault == "stall" and fault_at is not None and back_at is None:
            lost_since = probe("lost_since")
            if lost_since is not None and noticed_after is None:
                noticed_after = lost_since - fault_at
            if probe("alive") is False:
                alive_throughout = False
            if now - fault_at >= stall:
                link.command("unstall")
                back_at = time.monotonic()
        elif fault == "reset" and fault_at is not None and back_at is None:
            back_at = fault_at
        last = arrivals[-1][0] if arrivals else start
        if back_at is not None and time.monotonic() - max(last, back_at) > GIVE_UP:
            break
        try:
            msg = await kc.get_iopub_msg(timeout=0.05)
        except Exception:  # queue.Empty
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            arrivals.append((time.monotonic(), [int(x) for x in msg["content"]["text"].split()]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert back_at is not None
    assert fault_at is not None
    after = [t for t, _ in arrivals if t > back_at]
    # the outage a user sees: the longest silence between lines from the fault on (lines
    # already queued locally when a reset hits make "the next line" look instant)
    times = [fault_at] + [t for t, _ in arrivals if t > fault_at]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    got = [i for _, lines in arrivals for i in lines]
    return {
        "recovered": bool(after),
        "recovery_s": (after[0] - back_at) if after else None,
        "longest_gap_s": max(gaps) if after and gaps else None,
        "noticed_after_s": noticed_after,
        "alive_throughout": alive_throughout if fault == "stall" else None,
        "lines_expected": n,
        "lines_received": len(got),
        "lines_lost": n - len(set(got)),
        "lines_duplicated": len(got) - len(set(got)),
    }


async def run_gpumarket(args: argparse.Namespace, agent: Any, delay: float, rate: float) -> dict:
    agent_port = int(agent.url.rsplit(":", 1)[1])
    out: dict[str, Any] = {}

    async def start(link: Link) -> tuple[AsyncKernelManager, Any, float]:
        env = {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{link.port}"}
        with environ(env):
            t0 = time.perf_counter()
            km = AsyncKernelManager(kernel_name="gpumarket")
            await km.start_kernel()
            kc = km.client()
            kc.start_channels()
            await first_reply(kc)
            return km, kc, time.perf_counter() - t0

    starts = []
    for _ in range(args.starts):
        link = Link(agent_port, delay, rate)
        km, kc, took = await start(link)
        starts.append(took)
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        link.stop()
    out["start_s"] = statistics.median(starts)

    link = Link(agent_port, delay, rate)
    km, kc, _ = await start(link)
    tunnel = km.provisioner._link  # type: ignore[union-attr]
    try:
        out["rtt_ms"] = statistics.median(await rtts(kc, args.requests)) * 1e3
        before = tunnel.reconnects
        out.update(await outputs(kc, args))
        out["output_reconnects"] = tunnel.reconnects - before

        def probe(what: str) -> Any:
            if what == "alive":
                return tunnel.exit_code is None
            return tunnel.lost_since

        out["stall"] = await trickle_through(kc, link, "stall", args.stall, probe)
        out["reset"] = await trickle_through(kc, link, "reset", args.stall, probe)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        link.stop()
    return out


async def run_ssh(args: argparse.Namespace, sshd: Sshd, delay: float, rate: float) -> dict:
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="wan-ssh-"))

    async def start(link: Link) -> tuple[SshKernel, AsyncKernelClient, float]:
        for _ in range(3):  # free ports are picked, then bound by ssh: another may win one
            t0 = time.perf_counter()
            kernel = SshKernel(sshd, link.port, tmp)
            kc = AsyncKernelClient()
            kc.load_connection_info(kernel.info)
            kc.start_channels()
            reply = asyncio.ensure_future(first_reply(kc, ready=False))
            while not reply.done() and kernel.ssh.poll() is None:
                await asyncio.wait({reply}, timeout=0.05)
            if reply.done():
                reply.result()
                took = time.perf_counter() - t0
                await asyncio.to_thread(kernel.read_pid)
                return kernel, kc, took
            reply.cancel()  # ssh exited: a forward could not listen
            kc.stop_channels()
            kernel.stop()
        raise RuntimeError("ssh could not set up its forwards three times")

    starts = []
    for _ in range(args.starts):
        link = Link(sshd.port, delay, rate)
        kernel, kc, took = await start(link)
        starts.append(took)
        kc.stop_channels()
        kernel.stop()
        link.stop()
    out["start_s"] = statistics.median(starts)

    link = Link(sshd.port, delay, rate)
    kernel, kc, _ = await start(link)
    try:
        out["rtt_ms"] = statistics.median(await rtts(kc, args.requests)) * 1e3
        out.update(await outputs(kc, args))
        out["output_reconnects"] = 0
        out["stall"] = await trickle_through(kc, link, "stall", args.stall, lambda what: None)
        out["reset"] = await trickle_through(kc, link, "reset", args.stall, lambda what: None)
        out["reset"]["ssh_exited"] = kernel.ssh.poll() is not None
    finally:
        kc.stop_channels()
        kernel.stop()
        link.stop()
    return out


async def main(args: argparse.Namespace, agent: Any, sshd: Sshd | None) -> dict:
    results: dict[str, Any] = {}
    for name in args.profiles.split(","):
        delay, rate = PROFILES[name]
        print(f"{name}: gpumarket ...", flush=True)
        row = {"gpumarket": await run_gpumarket(args, agent, delay, rate)}
        if sshd is not None:
            print(f"{name}: ssh -L ...", flush=True)
            row["ssh"] = await run_ssh(args, sshd, delay, rate)
            g, s = row["gpumarket"], row["ssh"]
            row["ratios"] = {
                "output_throughput": g["output_mb_per_s"] / s["output_mb_per_s"],
                "rtt": g["rtt_ms"] / s["rtt_ms"],
                "start_extra_s": g["start_s"] - s["start_s"],
            }
        results[name] = row
    return results


def table(results: dict[str, Any]) -> str:
    def rec(r: dict[str, Any]) -> str:
        if not r["recovered"]:
            return "never (forwards dead)" if r.get("ssh_exited") else "never"
        lost = f", {r['lines_lost']} lost" if r["lines_lost"] else ""
        return f"{r['recovery_s']:.2f} s (gap {r['longest_gap_s']:.2f} s){lost}"

    lines = [
        "| link | path | start → first reply | execute RTT | output MB/s (reconnects) "
        "| stall 10 s: noticed / back after | reset: back after |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        for path in ("gpumarket", "ssh"):
            r = row.get(path)
            if r is None:
                continue
            noticed = r["stall"]["noticed_after_s"]
            noticed_text = f"{noticed:.1f} s" if noticed is not None else "—"
            lines.append(
                f"| {name} | {path} | {r['start_s']:.2f} s | {r['rtt_ms']:.1f} ms "
                f"| {r['output_mb_per_s']:.2f} ({r['output_reconnects']}) "
                f"| {noticed_text} / {rec(r['stall'])} | {rec(r['reset'])} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--output-mb", type=int, default=20)
    parser.add_argument("--output-runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--stall", type=float, default=10.0)
    parser.add_argument("--skip-ssh", action="store_true")
    args = parser.parse_args()
    sshd = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip_ssh:
            print("ssh comparison skipped (--skip-ssh)")
        elif not SSHD.exists():
            print(f"ssh comparison skipped: {SSHD} is missing (apt-get install openssh-server)")
        else:
            (Path(tmp) / "sshd").mkdir()
            sshd = Sshd(Path(tmp) / "sshd")
        try:
            with running_agent(Path(tmp) / "agent") as agent:
                results = asyncio.run(main(args, agent, sshd))
        finally:
            if sshd is not None:
                sshd.stop()
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": vars(args),
        "profiles": {
            k: {"one_way_delay_s": v[0], "bytes_per_s": v[1]} for k, v in PROFILES.items()
        },
        "results": results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(table(results))
