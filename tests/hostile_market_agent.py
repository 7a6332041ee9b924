"""A real provider agent whose market answers lie, for the renter's challenge attack tests.

Run as a script (``python tests/hostile_market_agent.py <provider serve args>``): it patches the
real agent's challenge session (``agent.market``), then runs ``gpumarket provider serve``
unchanged. The attack of each challenge is read from the file named by
``GPUMARKET_TEST_ATTACK_FILE`` when the challenge starts (one agent serves every attack):

- ``row``: one entry of the first revealed row is off by 1.0 (the committed sums are honest).
- ``row_and_sums``: that entry is off and the round's row sums are recomputed to fit it (they
  no longer hash to the committed digest).
- ``swap_rows``: two revealed rows of the same round are swapped (each honest, misplaced).
- ``lazy``: the product is never computed: every round is all zeros, committed consistently.
- ``other_seed``: the agent answers a challenge of another seed (a replayed old answer).
- ``liar``: an honest answer, but ``ready`` says the backend is ``cuda``.
- ``honest``: no attack.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from jupyter_gpumarket.agent import challenge_compute, market
from jupyter_gpumarket.core import challenge as ch

ATTACKS = ("row", "row_and_sums", "swap_rows", "lazy", "other_seed", "liar")


def _attack() -> str:
    path = os.environ.get("GPUMARKET_TEST_ATTACK_FILE")
    return Path(path).read_text().strip() if path and Path(path).exists() else "honest"


def _f32_sums(rows: list[bytes]) -> bytes:
    out = []
    for raw in rows:
        acc = array("f", [0.0])
        for v in ch.decode_f32(raw, len(raw) // 4):
            acc[0] = acc[0] + v * v
        out.append(acc[0])
    return ch.encode_f32(out)


_honest_send = market._Session._send
_honest_matmul = market._Session._matmul
_honest_product = challenge_compute.Backend.product


async def _send(self: Any, op: str, **fields: Any) -> None:
    attack = getattr(self, "attack", "honest")
    if op == "ready" and attack == "liar":
        fields["backend"], fields["device"] = "cuda", "NVIDIA H100 80GB HBM3"
    if op == "reveal" and attack in ("row", "row_and_sums", "swap_rows"):
        rows = fields["rows"]
        if attack == "swap_rows":
            first = rows[0]
            twin = next(x for x in rows[1:] if x[0] == first[0])
            first[2], twin[2] = twin[2], first[2]
        else:
            r, _, b64 = rows[0]
            raw = bytearray(base64.b64decode(b64))
            (v,) = struct.unpack_from("<f", raw, 0)
            struct.pack_into("<f", raw, 0, v + 1.0)
            rows[0][2] = base64.b64encode(bytes(raw)).decode()
            if attack == "row_and_sums":
                sums = bytearray(base64.b64decode(fields["row_sums"][str(r)]))
                (row_i,) = [x[1] for x in rows[:1]]
                struct.pack_into(
                    "<f", sums, 4 * row_i, *struct.unpack("<f", _f32_sums([bytes(raw)]))
                )
                fields["row_sums"][str(r)] = base64.b64encode(bytes(sums)).decode()
    await _honest_send(self, op, **fields)


async def _matmul(self: Any, setup: Any) -> None:
    self.attack = _attack()
    if self.attack == "other_seed" and isinstance(setup, dict):
        setup = {**setup, "seed": secrets.token_hex(32)}
    await _honest_matmul(self, setup)


def _product(self: Any, spec: Any, mats: Any, r: int, cancel: Any) -> Any:
    if _attack() == "lazy":
        return [array("f", bytes(4 * spec.n)) for _ in range(spec.n)]
    return _honest_product(self, spec, mats, r, cancel)


def start_hostile_market_agent(tmp: Path, attack_file: Path, timeout: float = 30.0) -> Any:
    """Start this script as a dev provider; an ``agentproc.AgentProcess``."""
    from agentproc import AgentProcess

    tmp.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    ready, log_path = tmp / "ready.json", tmp / "agent.log"
    cmd = [sys.executable, __file__, "provider", "serve", "--dev", f"--dev-token={token}"]
    cmd += ["--port", "0", "--state-dir", str(tmp / "state"), "--ready-file", str(ready)]
    cmd += ["--sandbox", "off", "--simulate-gpu", "H100"]
    env = {**os.environ, "GPUMARKET_TEST_ATTACK_FILE": str(attack_file)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"hostile agent did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    info = json.loads(ready.read_text())
    return AgentProcess(proc, info["url"], info["tls_fingerprint"], token, tmp / "state", log_path)


def main() -> int:
    market._Session._send = _send  # type: ignore[method-assign]
    market._Session._matmul = _matmul  # type: ignore[method-assign]
    challenge_compute.Backend.product = _product  # type: ignore[method-assign]
    market.pick_backend = lambda gpu=True: challenge_compute.Backend()  # the patched one
    market.CHALLENGE_LIMITS["per_source_burst"] = 100  # one renter runs every attack
    market.CHALLENGE_LIMITS["global_burst"] = 100
    from jupyter_gpumarket.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
