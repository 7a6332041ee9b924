"""GPU check: NVML vs nvidia-smi, then a `gpumarket` kernel on this GPU through a dev agent.

    python benchmarks/gpu_check.py

One PASS/FAIL/SKIP line per check: NVML matches nvidia-smi; a `--dev` agent comes up; a kernel
starts through the tunnel; it has CUDA_VISIBLE_DEVICES; a 4096^3 FP32 matmul runs (torch, else
cupy); the kernel is gone after shutdown; the agent stops on SIGTERM. Writes
benchmarks/results/gpu_check.json; exits 1 if a check failed, 0 with no NVIDIA GPU. Runs from a
source checkout too (registers the kernelspec and provisioner for this process).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_gpumarket.agent import gpu  # noqa: E402
from jupyter_gpumarket.agent.nvidia_smi import cross_check, parse_nvidia_smi_csv  # noqa: E402
from jupyter_gpumarket.exceptions import ProtocolError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
SMI_QUERY = "--query-gpu=index,name,uuid,memory.total,driver_version"
MARK = "GPUCHECK "  # kernel code prints its result as one line: MARK + JSON
PROBE = """import json, os
print("GPUCHECK " + json.dumps({"pid": os.getpid(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}))
"""
WORKLOAD = """
import json, time
from importlib.util import find_spec
def _gpucheck(n=4096, reps=10):
    if find_spec("torch"):
        import torch
        if not torch.cuda.is_available():
            return {"lib": "torch", "error": "torch.cuda.is_available() is False"}
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.manual_seed(0)
        a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
        sync, lib = torch.cuda.synchronize, "torch " + torch.__version__
        name, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
        f64 = lambda x: x.double()
    elif find_spec("cupy"):
        import cupy as cp
        a = cp.random.default_rng(0).standard_normal((n, n), dtype=cp.float32)
        b = cp.random.default_rng(1).standard_normal((n, n), dtype=cp.float32)
        sync, lib = cp.cuda.Device().synchronize, "cupy " + cp.__version__
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else name
        count, f64 = cp.cuda.runtime.getDeviceCount(), lambda x: x.astype(cp.float64)
    else:
        return {"lib": None}
    c = a @ b
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        c = a @ b
    sync()
    dt = (time.perf_counter() - t) / reps
    err = float(abs(f64(c[:8]) - f64(a[:8]) @ f64(b)).max())
    return {"lib": lib, "device": name, "devices": count, "ms": dt * 1e3,
            "tflops": 2 * n**3 / dt / 1e12, "max_abs_err": err}
try:
    _r = _gpucheck()
except Exception as e:
    _r = {"lib": "?", "error": f"{type(e).__name__}: {e}"}
print("GPUCHECK " + json.dumps(_r))
"""

checks: list[dict[str, str]] = []


def record(name: str, status: str, detail: str) -> None:
    checks.append({"check": name, "status": status, "detail": detail})
    print(f"{status} {name}: {detail}", flush=True)


def nvidia_smi() -> tuple[tuple[dict[str, str | None], ...], str]:
    """(rows, "") or ((), why not)."""
    if shutil.which("nvidia-smi") is None:
        return (), "nvidia-smi not found"
    try:
        proc = subprocess.run(
            ["nvidia-smi", SMI_QUERY, "--format=csv"], capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            return (), f"nvidia-smi exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()}"
        return parse_nvidia_smi_csv(proc.stdout), ""
    except (OSError, subprocess.TimeoutExpired, ProtocolError) as exc:
        return (), f"nvidia-smi failed: {exc}"


def ensure_registered(tmp: Path) -> None:
    """Make the `gpumarket` kernelspec and provisioner findable from a source checkout."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("gpumarket")
    except NoSuchKernel:
        spec = tmp / "jupyter" / "kernels" / "gpumarket"
        shutil.copytree(ROOT / "jupyter_gpumarket" / "kernelspec" / "gpumarket", spec)
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = str(tmp / "jupyter") + (os.pathsep + old if old else "")
    group = "jupyter_client.kernel_provisioners"
    if not any(ep.name == "gpumarket-provisioner" for ep in entry_points(group=group)):
        info = tmp / "site" / "jupyter_gpumarket_gpucheck-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jupyter-gpumarket-gpucheck\n")
        value = "jupyter_gpumarket.provisioning:GpuMarketProvisioner"
        (info / "entry_points.txt").write_text(f"[{group}]\ngpumarket-provisioner = {value}\n")
        sys.path.append(str(tmp / "site"))


def start_agent(tmp: Path, token: str) -> tuple[subprocess.Popen[bytes], dict[str, Any] | None]:
    ready = tmp / "ready.json"
    cmd = [sys.executable, "-m", "jupyter_gpumarket.cli", "provider", "serve", "--dev"]
    cmd += ["--dev-token", token, "--port", "0", "--state-dir", str(tmp / "state")]
    cmd += ["--ready-file", str(ready)]
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    with (tmp / "agent.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return proc, json.loads(ready.read_text())
        except (OSError, ValueError):  # not written yet, or half written
            time.sleep(0.2)
    return proc, None


def run_code(kc: Any, code: str, timeout: float) -> dict[str, Any]:
    """Execute in the kernel; return the JSON it printed after MARK, or {"error": ...}."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        c, kind = msg["content"], msg["header"]["msg_type"]
        out.append(c["text"] if kind == "stream" else "")
        out.append(f"\n{c['ename']}: {c['evalue']}\n" if kind == "error" else "")

    kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    text = "".join(out)
    for line in text.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return {"error": f"kernel printed no result: {text.strip()[-500:]!r}"}


def kernel_checks(inv: gpu.GpuInventory, results: dict[str, Any]) -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="gpumarket", startup_timeout=120)
    record("kernel-start", "PASS", "gpumarket kernel answered kernel_info through the tunnel")
    try:
        probe = results["probe"] = run_code(kc, PROBE, 60)
        cvd = probe.get("cvd")
        known = {str(g.index) for g in inv.gpus} | {g.uuid for g in inv.gpus}
        entries = cvd.split(",") if cvd else []
        ok = bool(entries) and all(e in known or e.startswith("MIG-") for e in entries)
        record("cuda-visible-devices", "PASS" if ok else "FAIL", f"CUDA_VISIBLE_DEVICES={cvd!r}")
        work = results["workload"] = run_code(kc, WORKLOAD, 300)
        if work.get("lib") is None and "error" not in work:
            record("cuda-workload", "SKIP", "neither torch nor cupy importable in the kernel")
        elif "error" in work:
            record("cuda-workload", "FAIL", f"{work.get('lib')}: {work['error']}")
        else:
            names = {g.name for g in inv.gpus}
            ok = work["device"] in names and work["max_abs_err"] < 1e-2
            ok = ok and (not entries or work["devices"] == len(entries))
            detail = f"{work['lib']} on {work['device']} ({work['devices']} visible): 4096^3 "
            detail += f"FP32 matmul {work['ms']:.2f} ms = {work['tflops']:.1f} TFLOPS, "
            record(
                "cuda-workload", "PASS" if ok else "FAIL", f"{detail}err {work['max_abs_err']:.1e}"
            )
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    pid = results["probe"].get("pid")  # dev agent: the kernel runs on this machine
    deadline = time.monotonic() + 10
    while isinstance(pid, int) and time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    gone = isinstance(pid, int) and not Path(f"/proc/{pid}").exists()
    record("kernel-shutdown", "PASS" if gone else "FAIL", f"kernel pid {pid} gone: {gone}")


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    if (rc := proc.poll()) is not None:
        return record("agent-stop", "FAIL", f"agent had already exited with {rc}")
    proc.send_signal(signal.SIGTERM)
    try:
        record("agent-stop", "PASS", f"agent exited {proc.wait(15)} within 15 s of SIGTERM")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        record("agent-stop", "FAIL", "agent ignored SIGTERM for 15 s; killed its process group")


def main() -> int:
    inv = gpu.detect_gpus()
    rows, smi_error = nvidia_smi()
    if inv.cpu_only and not rows:
        print(f"no NVIDIA GPU: nothing to check ({inv.reason}; {smi_error or 'no GPU rows'})")
        return 0
    problems = cross_check(inv, rows) if rows else (smi_error,)
    detail = "; ".join(problems) or f"{len(inv.gpus)} GPU(s) agree: " + ", ".join(
        f"{g.index} {g.name} {g.memory_total_mib} MiB" for g in inv.gpus
    )
    record("nvml-vs-nvidia-smi", "FAIL" if problems else "PASS", detail)
    results: dict[str, Any] = {"inventory": inv.to_json(), "nvidia_smi": list(rows)}
    with tempfile.TemporaryDirectory(prefix="gpumarket-gpucheck-") as tmp_name:
        tmp = Path(tmp_name)
        token = secrets.token_urlsafe(24)
        proc, ready = start_agent(tmp, token)
        try:
            if ready is None:
                record("agent-ready", "FAIL", f"no ready file in 30 s (exit code {proc.poll()})")
            else:
                record("agent-ready", "PASS", f"{ready['url']} {ready['tls_fingerprint']}")
                os.environ["GPUMARKET_PROVIDER_URL"] = ready["url"]
                os.environ["GPUMARKET_DEV_TOKEN"] = token
                os.environ["GPUMARKET_TLS_FINGERPRINT"] = ready["tls_fingerprint"]
                try:
                    ensure_registered(tmp)
                    kernel_checks(inv, results)
                except Exception as exc:  # report and go on to stop the agent
                    record("kernel", "FAIL", f"{type(exc).__name__}: {exc}")
        finally:
            stop_agent(proc)
            if any(c["status"] == "FAIL" for c in checks):
                log = (tmp / "agent.log").read_text(errors="replace")[-3000:]
                print(f"--- agent log (tail) ---\n{log}")
                results["agent_log_tail"] = log
    failed = [c["check"] for c in checks if c["status"] == "FAIL"]
    summary = {"ok": not failed, "failed": failed, "checks": checks, **results}
    summary.update(python=sys.version.split()[0], platform=platform.platform(), time=time.time())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("ok", "failed", "checks")}, indent=2))
    print(f"{'PASS' if not failed else 'FAIL'} gpu_check: results in {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
