"""Ranking scale: ``core.ranking.rank`` over 10,000 generated offers, against sorting the same
offers by price alone (the floor any ranking pays), both measured in this run.

    python benchmarks/ranking.py   # prints a table, writes benchmarks/results/ranking.json

Offers mix the GPU table's classes, CPU offers, regions and prices; probes mark 10 % unreachable,
5 % full, 20 % unprobed, the rest with latencies and (for half) an NVML reading that agrees with
the claim, and 2 % claiming hardware the agent does not detect. Each policy is ranked with no
constraint and with ``gpu=H100,verified=1``; the target is < 1 s for 10,000 offers.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_gpumarket.core.gpu_catalog import all_classes  # noqa: E402
from jupyter_gpumarket.core.market_offer import MarketOffer, ProbeResult  # noqa: E402
from jupyter_gpumarket.core.offer_filter import parse_offer_filter  # noqa: E402
from jupyter_gpumarket.core.offer_terms import PublishedTerms  # noqa: E402
from jupyter_gpumarket.core.ranking import rank  # noqa: E402
from jupyter_gpumarket.core.verification import Detected  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ranking.json"
N = 10_000
REPEAT = 5
TOKEN = "0x" + "ab" * 20
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")


def fleet(n: int, seed: int = 7) -> tuple[list[MarketOffer], dict[int, ProbeResult]]:
    rng = random.Random(seed)
    classes = all_classes()
    offers, probes = [], {}
    for oid in range(1, n + 1):
        cpu = rng.random() < 0.05
        cls = rng.choice(classes)
        count = 0 if cpu else rng.choice((1, 1, 1, 2, 4, 8))
        terms = PublishedTerms(
            endpoint=f"wss://10.{oid >> 16 & 255}.{oid >> 8 & 255}.{oid & 255}:8443",
            tls_fingerprint="sha256:" + f"{oid:064x}",
            gpu_model="CPU" if cpu else rng.choice((cls.name, cls.name.replace(" ", "-"))),
            gpu_count=count,
            vram_mb=0 if cpu else cls.vram_mib,
            price_per_hour=rng.randint(50_000, 4_000_000),
            token=TOKEN,
            region=rng.choice(REGIONS),
            metadata_uri="gpumarket:isolation=sandboxed" if rng.random() < 0.7 else "",
        )
        provider = "0x" + f"{rng.randrange(1, 2000):040x}"
        offers.append(MarketOffer(oid, provider, terms))
        roll = rng.random()
        if roll < 0.2:
            continue  # not probed
        if roll < 0.3:
            probes[oid] = ProbeResult.unreachable(oid, "timed out after 2 s")
            continue
        detected = None
        if rng.random() < 0.5 and not cpu:
            name = cls.name if rng.random() > 0.04 else "NVIDIA GeForce RTX 3060"
            detected = Detected((name,) * count, (cls.vram_mib,) * count)
        probes[oid] = ProbeResult(
            oid,
            True,
            latency_ms=rng.uniform(1, 250),
            free_kernels=0 if roll < 0.35 else rng.randint(1, 8),
            free_gpus=count,
            detected=detected,
        )
    return offers, probes


def best_of(fn: Any) -> float:
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    offers, probes = fleet(N)
    baseline = best_of(lambda: sorted(offers, key=lambda o: (o.price_per_hour, o.offer_id)))
    rows = []
    for spec in (
        "policy=cheapest",
        "policy=fastest",
        "policy=value",
        "policy=value,gpu=H100,verified=1",
    ):
        query = parse_offer_filter(spec)
        result: list[Any] = []

        def run(q: Any = query, out: list[Any] = result) -> None:
            out[:] = rank(offers, probes, q.constraints, q.policy)

        seconds = best_of(run)
        usable = sum(1 for r in result if r.usable)
        rows.append(
            {
                "filter": spec,
                "offers": N,
                "returned": len(result),
                "usable": usable,
                "seconds": round(seconds, 4),
                "ratio_to_price_sort": round(seconds / baseline, 1),
                "pick": result[0].reason if usable else None,
            }
        )
    out = {
        "benchmark": "ranking",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": REPEAT,
        "baseline_sort_by_price_s": round(baseline, 5),
        "target_s": 1.0,
        "results": rows,
        "median_s": round(statistics.median(r["seconds"] for r in rows), 4),
    }
    print(f"baseline: sort {N} offers by price: {baseline * 1e3:.1f} ms")
    for r in rows:
        print(
            f"{r['filter']:<38} {r['seconds'] * 1e3:7.1f} ms  {r['ratio_to_price_sort']:6.1f}x"
            f"  usable {r['usable']:5d} of {r['returned']:5d}  pick: {r['pick']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all(r["seconds"] < 1.0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
