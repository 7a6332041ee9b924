"""Resume time after a 10 s link cut (reset and black hole), through a TCP fault proxy.

    python benchmarks/resume.py [--cut 10] [--repeats 3]

A kernel prints a line every 50 ms; the link is cut for --cut seconds, then restored. Reports
the time from restore to the first line that arrives afterwards (target < 1 s), checks that no
line was lost or duplicated, and writes benchmarks/results/resume.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import environ, running_agent  # noqa: E402
from netfault import ThreadedProxy  # noqa: E402


def one_cut(env: dict[str, str], proxy: ThreadedProxy, fault: str, cut: float) -> dict[str, float]:
    with environ(env):
        km, kc = start_new_kernel(kernel_name="gpumarket")
    try:
        n = int((cut + 4) / 0.05)
        msg_id = kc.execute(
            f"import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.05)"
        )
        arrivals: list[tuple[float, str]] = []
        t_cut = time.monotonic() + 1.5
        cut_done = restored = None
        while True:
            now = time.monotonic()
            if cut_done is None and now >= t_cut:
                if fault == "reset":
                    proxy.refuse()
                    proxy.reset()
                else:
                    proxy.blackhole()
                cut_done = now
            if restored is None and cut_done is not None and now >= cut_done + cut:
                proxy.restore()
                restored = time.monotonic()
            try:
                msg = kc.get_iopub_msg(timeout=0.05)
            except Exception:  # queue.Empty
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                arrivals.append((time.monotonic(), msg["content"]["text"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        lines = [int(x) for _, t in arrivals for x in t.split()]
        assert restored is not None
        first_after = min(t for t, _ in arrivals if t > restored)
        return {
            "resume_s": first_after - restored,
            "lost": n - len(set(lines)),
            "duplicated": len(lines) - len(set(lines)),
            "in_order": float(lines == sorted(lines)),
        }
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cut", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"reset": [], "blackhole": []}
    with tempfile.TemporaryDirectory() as tmp, running_agent(Path(tmp)) as agent:
        proxy = ThreadedProxy("127.0.0.1", int(agent.url.rsplit(":", 1)[1]))
        port = proxy.start()
        env = {**agent.env(), "GPUMARKET_PROVIDER_URL": f"wss://127.0.0.1:{port}"}
        try:
            for _ in range(args.repeats):
                for fault in results:
                    results[fault].append(one_cut(env, proxy, fault, args.cut))
        finally:
            proxy.stop()
    summary = {
        fault: {
            "resume_median_s": statistics.median(r["resume_s"] for r in runs),
            "resume_max_s": max(r["resume_s"] for r in runs),
            "lost": sum(r["lost"] for r in runs),
            "duplicated": sum(r["duplicated"] for r in runs),
            "all_in_order": all(r["in_order"] for r in runs),
        }
        for fault, runs in results.items()
    }
    out = {"cut_s": args.cut, "repeats": args.repeats, "summary": summary, "runs": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "resume.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
