"""The market's verification end to end on this machine: a real dev agent (subprocess) answers
`gpumarket offers verify` for the GPU its own probe detects (or for ``--claim``), with the plan's
real sizes. On a GPU machine this is the check that the agent's torch path passes the renter's
checks and lands in the claimed model's band; on a CPU machine the verdict is ``cpu``.

    python benchmarks/market_verify.py [--claim "H100"] [--simulate-gpu H100]

Prints and writes benchmarks/results/market_verify.json: the probe, the verdict, measured
TFLOPS next to the table's dense peaks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_gpumarket.core.verification import Claim  # noqa: E402
from jupyter_gpumarket.market.probe import probe_endpoint  # noqa: E402
from jupyter_gpumarket.market.verify import verify_offer  # noqa: E402

from agentproc import running_agent  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "market_verify.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claim", help="MODEL to claim (default: what the probe detects)")
    ap.add_argument("--simulate-gpu", help="start the agent with --simulate-gpu MODEL[xCOUNT]")
    args = ap.parse_args()
    extra = ["--simulate-gpu", args.simulate_gpu] if args.simulate_gpu else []
    with tempfile.TemporaryDirectory() as tmp, running_agent(Path(tmp), *extra) as agent:
        report = asyncio.run(probe_endpoint(agent.url, agent.fingerprint, offer_id=0))
        det = report.result.detected
        if args.claim:
            known = Claim(args.claim, 1, 0).gpu_class
            claim = Claim(args.claim, 1, known.vram_mib if known else 0)
        elif det is None or not det.names:
            claim = Claim("CPU", 0, 0)
        else:
            claim = Claim(det.names[0], 1, det.vram_mib[0])
        result = asyncio.run(verify_offer(agent.url, agent.fingerprint, claim, timeout=300))
    cls = claim.gpu_class
    out = {
        "probe": {
            "latency_ms": report.result.latency_ms,
            "detected": list(det.names) if det else None,
            "driver": report.driver_version,
            "cuda": report.cuda_driver_version,
        },
        "verify": result,
        "table_peak": None
        if cls is None
        else {"fp32": cls.fp32_tflops, cls.lowp_precision: cls.lowp_tflops},
    }
    print(json.dumps(out, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
