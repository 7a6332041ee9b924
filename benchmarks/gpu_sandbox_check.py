"""GPU inside the kernel sandbox: the allotted GPU works, and without its nodes there is none.

    python benchmarks/gpu_sandbox_check.py [--bwrap PATH]

Runs the interpreter that runs this script inside the same bubblewrap sandbox a kernel gets (as
an unprivileged uid when run as root), twice: with the device nodes of GPU 0 bound, then with no
GPU allotted. Each time it lists /dev/nvidia* and runs a small CUDA matmul when torch is
importable. Exit status 0 when GPU 0 works inside and no GPU is visible without its nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jupyter_gpumarket.agent.sandbox import (
    SandboxMounts,
    build_bwrap_argv,
    default_policy,
    gpu_device_nodes,
    sandbox_available,
)

PROBE = """
import json, os
res = {"uid": os.getuid(), "dev": sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))}
try:
    import torch
    res["cuda"] = torch.cuda.is_available()
    if res["cuda"]:
        x = torch.randn(2048, 2048, device="cuda")
        res["name"] = torch.cuda.get_device_name(0)
        res["matmul_finite"] = bool(torch.isfinite(x @ x).all())
except Exception as e:
    res["error"] = repr(e)[:300]
print(json.dumps(res))
"""


def run(bwrap: str, gpus: tuple[int, ...]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work, runtime = Path(tmp) / "work", Path(tmp) / "run"
        work.mkdir()
        runtime.mkdir()
        uid = 65534 if os.geteuid() == 0 else None
        if uid is not None:
            os.chown(work, uid, uid)
            os.chmod(tmp, 0o755)
        policy = replace(default_policy(Path(tmp) / "state"), bwrap=bwrap)
        mounts = SandboxMounts(
            str(work), str(runtime), devices=gpu_device_nodes(gpus), uid=uid, gid=uid
        )
        argv = build_bwrap_argv(policy, mounts, [sys.executable, "-c", PROBE])
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        out = {"gpus": list(gpus), "nodes": list(mounts.devices), "rc": res.returncode}
        lines = res.stdout.strip().splitlines()
        try:
            out.update(json.loads(lines[-1]))
        except (IndexError, json.JSONDecodeError):
            out["stderr"] = res.stderr[-2000:]
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bwrap", default=shutil.which("bwrap") or "bwrap")
    args = parser.parse_args()
    ok, why = sandbox_available(args.bwrap)
    print(json.dumps({"sandbox_available": ok, "reason": why}))
    if not ok:
        return 2
    with_gpu, without = run(args.bwrap, (0,)), run(args.bwrap, ())
    print(json.dumps({"gpu0": with_gpu, "no_gpu": without}, indent=2))
    good = with_gpu.get("cuda") is True and with_gpu.get("matmul_finite") is True
    return 0 if good and not without.get("cuda") and not without.get("dev", True) else 1


if __name__ == "__main__":
    sys.exit(main())
