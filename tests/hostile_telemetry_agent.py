"""A real provider agent that sends malformed and oversized telemetry, for the renter's tests.

Run as a script (``python tests/hostile_telemetry_agent.py <provider serve args>``): it wraps
the real agent's telemetry task so that, once a lease's kernel runs and its renter is connected,
the lease first gets every message of :data:`ATTACKS` (each with its own small ``t``, so a test
can tell whether one was kept), then the honest samples, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent import telemetry  # before the agent's lease module imports it
from jupyter_gpumarket.core.frames import Channel

HONEST_GPU = {"index": 0, "util_pct": 100, "mem_used_mib": 2132, "mem_total_mib": 81559,
              "temp_c": 60, "power_w": 691.192}  # fmt: skip


def _sample(t: float, **change: Any) -> dict[str, Any]:
    base = {"t": t, "cpu_pct": 1.0, "ram_mib": 1, "billed_seconds": 0, "spend": 0, "gpus": []}
    return {**base, **change}


def _msg(sample: Any, **extra: Any) -> bytes:
    return json.dumps({"op": "telemetry", "sample": sample, **extra}).encode()


ATTACKS: list[bytes] = [
    b'{"op":"telemetry","sample":{"t":1',  # cut short
    _msg(_sample(2.0, cpu_pct="lots")),  # wrong type
    _msg(_sample(3.0, gpus=[{"index": i} for i in range(65)])),  # more GPUs than any machine
    _msg(_sample(4.0, gpus=[{**HONEST_GPU, "util_pct": 101}])),  # out of range
    _msg(_sample(5.0, cpu_pct=1.0), pad="x" * (1 << 20)),  # 1 MB: nobody asked for it
    _msg(_sample(6.0), pad="x" * 40_000),  # over a sample's size, under the inline limit
    _msg(_sample(7.0, note="x" * 1000)),  # padded sample: unknown field
    _msg(_sample(8.0, gpus=[HONEST_GPU, HONEST_GPU])),  # one GPU twice
    _msg(_sample(9.0)).replace(b'"cpu_pct": 1.0', b'"cpu_pct": 1e999'),  # infinity
    b'{"op":"telemetry","sample":' + b"[" * 5000 + b"]" * 5000 + b"}",  # deep nesting
    b"\xff\xfe not json",
]

_honest_stream = telemetry.stream


async def _hostile_stream(lease: Any, *args: Any, **kw: Any) -> None:
    while not lease.ended and (lease.kernel is None or lease.pipe.ws is None):  # noqa: ASYNC110 (the agent has no event for this)
        await asyncio.sleep(0.05)
    if not lease.ended:
        for data in ATTACKS:
            lease.pipe.send(Channel.AGENT, [data])
    await _honest_stream(lease, *args, **kw)


def start_hostile_telemetry_agent(tmp: Path, timeout: float = 30.0) -> Any:
    """This script as a dev provider (plain backend); an ``agentproc.AgentProcess``."""
    from agentproc import AgentProcess

    tmp.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    ready, log_path = tmp / "ready.json", tmp / "agent.log"
    cmd = [sys.executable, __file__, "provider", "serve", "--dev", f"--dev-token={token}"]
    cmd += ["--port", "0", "--state-dir", str(tmp / "state"), "--ready-file", str(ready)]
    cmd += ["--sandbox", "off"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"hostile agent did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    info = json.loads(ready.read_text())
    return AgentProcess(proc, info["url"], info["tls_fingerprint"], token, tmp / "state", log_path)


def main() -> int:
    telemetry.stream = _hostile_stream  # type: ignore[assignment]
    from jupyter_gpumarket.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
