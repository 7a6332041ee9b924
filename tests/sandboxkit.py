"""Helpers for the sandbox tests: make the sandbox available, run code in a kernel, probe pids."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from jupyter_gpumarket.agent.sandbox import sandbox_available
from jupyter_gpumarket.agent.slots import find_slot_users

__all__ = [
    "attempt",
    "descendants",
    "ensure_sandbox",
    "healthy",
    "host_pids_of",
    "run_code",
    "skip_unless_root",
]


def ensure_sandbox() -> None:
    """Skip with the reason unless the kernel sandbox works here: bubblewrap and nftables
    installed and, as root, the kernel slot users created (scripts/setup.sh does all three;
    tests install nothing)."""
    for tool, package in (("bwrap", "bubblewrap"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {package}; scripts/setup.sh)")
    ok, reason = sandbox_available()
    if not ok:
        pytest.skip(f"no kernel sandbox on this machine: {reason}")
    if os.geteuid() == 0 and len(find_slot_users()) < 2:
        pytest.skip(
            "no kernel slot users: run `gpumarket provider setup --slots 2` as root "
            "(scripts/setup.sh does)"
        )


def run_code(kc: BlockingKernelClient, code: str, timeout: float = 60) -> Any:
    """Execute ``code``; it prints one JSON value as its last line, which is returned."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(content["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(content["traceback"]))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    return json.loads(text.strip().splitlines()[-1])


def attempt(target: str) -> str:
    """Kernel code that tries ``target`` (an expression) and reports what happened."""
    return f"""
import json, os
try:
    r = {target}
    res = "OK " + repr(r)[:200]
except BaseException as e:
    res = type(e).__name__ + " " + str(e)[:200]
print(json.dumps(res))
"""


def host_pids_of(uid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            uids = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()
            if int(uids[1]) == uid:
                pids.append(int(p.name))
    return pids


def descendants(pid: int) -> set[int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), [pid]
    while todo:
        cur = todo.pop()
        kids = [p for p, pp in parent.items() if pp == cur and p not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def healthy(kc: BlockingKernelClient) -> None:
    assert run_code(kc, "print(6 * 7)") == 42


def skip_unless_root(why: str) -> None:
    """Call after a test's checks that hold for any user: the rest needs the agent to run as
    root, so without root the test is reported skipped, with ``why``, not passed."""
    if os.geteuid() != 0:
        pytest.skip(f"not root: {why}")
