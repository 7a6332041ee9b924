"""Probing a fleet: the live probe (``market.probe``) over 200 offers whose endpoints are live
agents on loopback, measured in one run.

    python benchmarks/probe_fleet.py [--agents 8] [--offers 200]
    # prints a summary, writes benchmarks/results/probe_fleet.json

200 agent processes do not fit a 2-core machine (each is a Python process with its own TLS
server), so ``--agents`` real dev agents (``gpumarket provider serve --dev``) serve the
``--offers`` offers between them: every probe is a full pinned TLS + websocket handshake to a
live agent plus the agent's ``probe`` exchange, with each agent answering many probes at once
(the harder case for it). Agents rate-limit probes per source address (2/s), so each offer is
probed from its own loopback address (127.0.0.N), as 200 agents would each see one renter
probe. The target is < 3 s for 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_gpumarket.core.market_offer import MarketOffer, ProbeResult  # noqa: E402
from jupyter_gpumarket.core.offer_terms import PublishedTerms  # noqa: E402
from jupyter_gpumarket.market.probe import probe_endpoint  # noqa: E402

from agentproc import AgentProcess, start_agent  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "probe_fleet.json"
TOKEN = "0x" + "ab" * 20
REPEAT = 3


def offers_for(agents: list[AgentProcess], n: int) -> list[MarketOffer]:
    out = []
    for oid in range(1, n + 1):
        agent = agents[oid % len(agents)]
        terms = PublishedTerms(
            endpoint=agent.url,
            tls_fingerprint=agent.fingerprint,
            gpu_model="CPU",
            gpu_count=0,
            vram_mb=0,
            price_per_hour=1_000_000 + oid,
            token=TOKEN,
            region="local",
            metadata_uri="",
        )
        out.append(MarketOffer(oid, "0x" + f"{oid:040x}", terms))
    return out


async def probe_all(
    offers: list[MarketOffer], timeout: float, concurrency: int
) -> dict[int, ProbeResult]:
    """Every offer probed (at most ``concurrency`` at once), each from its own 127.0.0.N."""
    gate = asyncio.Semaphore(concurrency)

    async def one(o: MarketOffer) -> ProbeResult:
        n = o.offer_id
        source = f"127.0.{n // 250}.{n % 250 + 2}"
        async with gate:
            report = await probe_endpoint(
                o.terms.endpoint,
                o.terms.tls_fingerprint,
                offer_id=n,
                timeout=timeout,
                local_addr=(source, 0),
            )
        return report.result

    results = await asyncio.gather(*(one(o) for o in offers))
    return {r.offer_id: r for r in results}


def run(n_agents: int, n_offers: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        agents = [start_agent(Path(tmp) / f"a{i}", timeout=120) for i in range(n_agents)]
        try:
            offers = offers_for(agents, n_offers)
            asyncio.run(probe_all(offers[: len(agents)], 10.0, 8))  # warm: agents up
            runs = []
            for _ in range(REPEAT):
                t0 = time.perf_counter()
                probes = asyncio.run(probe_all(offers, 3.0, concurrency))
                wall = time.perf_counter() - t0
                lat = sorted(p.latency_ms for p in probes.values() if p.latency_ms is not None)
                runs.append(
                    {
                        "seconds": round(wall, 3),
                        "reachable": sum(p.reachable for p in probes.values()),
                        "unreachable_reasons": sorted(
                            {p.reason for p in probes.values() if not p.reachable}
                        )[:5],
                        "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
                        "latency_ms_max": round(lat[-1], 1) if lat else None,
                    }
                )
        finally:
            for agent in agents:
                agent.stop()
    return {"concurrency": concurrency, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--offers", type=int, default=200)
    args = ap.parse_args()
    results = {
        "benchmark": "probe_fleet",
        "what": f"{args.offers} offers probed in parallel, served by {args.agents} live dev "
        "agents on loopback, each offer from its own 127.0.0.N source (each probe: pinned TLS "
        "+ websocket handshake + the agent's probe exchange)",
        "agents": args.agents,
        "offers": args.offers,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "target_seconds": 3.0,
        "by_concurrency": [run(args.agents, args.offers, c) for c in (64, args.offers)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["by_concurrency"]:
        best = min(r["seconds"] for r in row["runs"])
        reach = [r["reachable"] for r in row["runs"]]
        print(f"concurrency {row['concurrency']:>4}: best {best:.2f} s, reachable {reach}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
