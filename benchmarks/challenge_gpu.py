"""The verification challenge run against this machine's own GPU (torch) or CPU (numpy), both
sides in one process: calibrates the verdict bands and checks that the vectorized recipe the agent
will use gives exactly the numbers core's renter side checks.

    python benchmarks/challenge_gpu.py [--claim "H100"] [--target-s 0.25] [--no-vram]

With torch and CUDA: the claim defaults to the detected device; the plan comes from
``core.challenge_plan.plan_challenge`` (the real sizes), the clock is the renter's (setup
excluded, as in the protocol). With numpy only: a CPU-sized run (n=128) to check the recipe.
Prints measured TFLOPS next to the table's dense peaks and the verdict; writes
benchmarks/results/challenge_gpu.json.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import platform
import secrets
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_gpumarket.core import challenge as ch  # noqa: E402
from jupyter_gpumarket.core import vram_proof as vp  # noqa: E402
from jupyter_gpumarket.core.challenge_plan import plan_challenge  # noqa: E402
from jupyter_gpumarket.core.seeded import MASK32, MIX_A, MIX_B  # noqa: E402
from jupyter_gpumarket.core.verification import (  # noqa: E402
    ChallengeMeasurement,
    Claim,
    challenge_verdict,
)

RESULTS = ROOT / "benchmarks" / "results" / "challenge_gpu.json"


class Backend:
    """The few array operations the recipe needs, for torch (CUDA) or numpy (CPU)."""

    def __init__(self) -> None:
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError("no CUDA")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
            self.torch, self.np, self.name = torch, None, "cuda"
            self.device = torch.cuda.get_device_name(0)
        except ImportError:
            import numpy

            self.torch, self.np, self.name, self.device = None, numpy, "cpu", platform.processor()

    def arange(self, start: int, stop: int) -> Any:
        if self.torch:
            return self.torch.arange(start, stop, dtype=self.torch.int64, device="cuda")
        return self.np.arange(start, stop, dtype=self.np.int64)

    @staticmethod
    def mix(x: Any) -> Any:
        x = x ^ (x >> 16)
        x = (x * MIX_A) & MASK32
        x = x ^ (x >> 15)
        x = (x * MIX_B) & MASK32
        return x ^ (x >> 16)

    def words(self, k1: int, k2: int, start: int, stop: int) -> Any:
        return self.mix(self.mix((self.arange(start, stop) ^ k1) & MASK32) ^ k2)

    def values(self, k1: int, k2: int, n: int, precision: str) -> Any:
        h = self.words(k1, k2, 0, n * n)
        mant = (128 + (h & 127)) << (3 - ((h >> 7) & 3))  # integer multiple of 2**-10
        v = self.where_odd(h >> 9, -mant, mant)
        return self.cast(v.reshape(n, n), precision, scale=2.0**-10)

    def where_odd(self, bits: Any, a: Any, b: Any) -> Any:
        lib = self.torch or self.np
        return lib.where((bits & 1) == 1, a, b)

    def cast(self, v: Any, precision: str, scale: float = 1.0) -> Any:
        if self.torch:
            dtype = {
                "fp32": self.torch.float32,
                "tf32": self.torch.float32,
                "bf16": self.torch.bfloat16,
                "fp16": self.torch.float16,
            }[precision]
            return (v.to(self.torch.float32) * scale).to(dtype)
        return v.astype(self.np.float32) * self.np.float32(scale)  # numpy: fp32 for every spec

    def sync(self) -> None:
        if self.torch:
            self.torch.cuda.synchronize()

    def row_sums(self, c: Any) -> Any:
        if self.torch:
            return (c.to(self.torch.float32) ** 2).sum(dim=1)
        return (c.astype(self.np.float32) ** 2).sum(axis=1, dtype=self.np.float32)

    def to_bytes(self, t: Any, kind: str = "f4") -> bytes:
        if self.torch:
            t = t.contiguous().cpu()
            return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())
        return t.astype("<" + kind).tobytes()

    def row_f32(self, c: Any, i: int) -> bytes:
        if self.torch:
            return self.to_bytes(c[i].to(self.torch.float32))
        return self.to_bytes(c[i])


def run_matmul(be: Backend, spec: ch.MatmulSpec) -> dict[str, Any]:
    """Setup (untimed), then the timed rounds, then the renter's sample check."""
    a1, a2, b1, b2 = ch.matrix_keys(spec)
    a = be.values(a1, a2, spec.n, spec.precision)
    b = be.values(b1, b2, spec.n, spec.precision)
    be.sync()
    start = time.perf_counter()  # the renter sends the salt here
    sums, products = [], {}
    keep = set()  # rows are revealed later: an honest agent keeps the sampled rounds' products;
    # here we keep every product only for small runs and recompute a round on demand otherwise.
    for r in range(spec.rounds):
        k1, k2 = ch.round_keys(spec, r)
        sign = be.where_odd(be.words(k1, k2, 0, spec.n), -1.0, 1.0)
        sign = be.cast(sign, spec.precision)
        c = (a * sign[None, :]) @ b
        sums.append(be.row_sums(c))
        if spec.n <= 1024:
            products[r] = c
            keep.add(r)
    sum_bytes = [be.to_bytes(s) for s in sums]
    commit = ch.Commit(tuple(ch.round_digest(spec, r, sb) for r, sb in enumerate(sum_bytes)))
    elapsed = time.perf_counter() - start  # the commit arrives
    sample = ch.choose_sample(spec, secrets.token_bytes(32))
    rows = {}
    for r, i in sample.rows:
        if r not in products:
            k1, k2 = ch.round_keys(spec, r)
            sign = be.cast(be.where_odd(be.words(k1, k2, 0, spec.n), -1.0, 1.0), spec.precision)
            products[r] = (a * sign[None, :]) @ b
        rows[(r, i)] = be.row_f32(products[r], i)
    reveal = ch.Reveal({r: sum_bytes[r] for r in sample.rounds}, rows)
    check = ch.check_reveal(spec, commit, sample, reveal)
    return {
        "n": spec.n,
        "rounds": spec.rounds,
        "precision": spec.precision,
        "seconds": round(elapsed, 5),
        "tflops": round(ch.measured_tflops(spec, elapsed), 2),
        "rows_ok": check.ok,
        "rows_reason": check.reason,
        "max_error_ratio": round(check.max_error_ratio, 4),
        "digest": commit.digest.hex(),
    }


def run_vram(be: Backend, spec: vp.VramSpec) -> dict[str, Any]:
    """Fill on the device in chunks (int64 temporaries), answer renter-chosen slices."""
    k1, k2 = spec.keys
    chunk = 1 << 26
    lib = be.torch or be.np
    if be.torch:
        be.torch.cuda.empty_cache()  # the matmul's cached blocks would split the one big fill
    fill = (
        lib.empty(spec.words, dtype=lib.int32, device="cuda")
        if be.torch
        else be.np.empty(spec.words, dtype=be.np.uint32)
    )
    start = time.perf_counter()
    for lo in range(0, spec.words, chunk):
        hi = min(lo + chunk, spec.words)
        idx = be.arange(lo, hi)
        w = be.mix(be.mix((idx & MASK32) ^ k1) ^ ((k2 + (idx >> 32) * 0x9E37) & MASK32))
        fill[lo:hi] = w.to(lib.int32) if be.torch else w.astype(be.np.uint32)
    be.sync()
    fill_s = time.perf_counter() - start
    slices = vp.choose_slices(spec, secrets.token_bytes(32))
    start = time.perf_counter()
    answers = [
        hashlib.sha256(be.to_bytes(fill[o : o + slices.length], "u4")).digest()
        for o in slices.offsets
    ]
    answer_s = time.perf_counter() - start
    proof = vp.vram_verdict(spec, slices, answers, answer_s, 1.0)
    return {
        "fill_mib": spec.fill_mib,
        "fill_seconds": round(fill_s, 3),
        "answer_seconds": round(answer_s, 4),
        "proven_mib": proof.proven_mib,
        "reason": proof.reason,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claim", help="GPU model to claim (default: the detected device)")
    parser.add_argument("--target-s", type=float, default=0.25)
    parser.add_argument("--no-vram", action="store_true")
    args = parser.parse_args()
    be = Backend()
    if be.name == "cuda":
        total = be.torch.cuda.get_device_properties(0).total_memory // 2**20
        claim = Claim(args.claim or be.device, 1, total)
        plan = plan_challenge(claim, target_s=args.target_s)
        specs = [plan.fp32, plan.lowp]
        vram = None if args.no_vram else plan.vram
    else:
        claim = Claim(args.claim or "CPU", 0 if not args.claim else 1, 0)
        specs = [ch.MatmulSpec.fresh(128, 2, "fp32"), ch.MatmulSpec.fresh(128, 2, "bf16")]
        vram = None if args.no_vram else vp.VramSpec.fresh(64)
    runs = [run_matmul(be, s) for s in specs]
    vram_run = run_vram(be, vram) if vram is not None else None
    cls = claim.gpu_class
    m = ChallengeMeasurement(
        backend=be.name,
        rows_ok=all(r["rows_ok"] for r in runs),
        rows_reason="; ".join(r["rows_reason"] for r in runs),
        fp32_tflops=runs[0]["tflops"],
        lowp_tflops=runs[1]["tflops"],
        lowp_precision="fp16" if specs[1].precision == "fp16" else "bf16",
        vram_proven_mib=None if vram_run is None else vram_run["proven_mib"],
    )
    verdict = challenge_verdict(claim, m)
    out = {
        "benchmark": "challenge_gpu",
        "backend": be.name,
        "device": be.device,
        "claim": claim.describe(),
        "table_peak_tflops": None
        if cls is None
        else {"fp32": cls.fp32_tflops, cls.lowp_precision: cls.lowp_tflops},
        "matmul": runs,
        "vram": vram_run,
        "verdict": verdict.to_json(),
    }
    for r in runs:
        peak = None if cls is None else cls.peak(r["precision"])
        of_peak = f" = {r['tflops'] / peak:.0%} of the {peak:g} peak" if peak else ""
        print(
            f"{r['precision']:>5} n={r['n']} x{r['rounds']}: {r['seconds'] * 1e3:.1f} ms, "
            f"{r['tflops']} TFLOPS{of_peak}; rows {r['rows_ok']} ({r['rows_reason']})"
        )
    if vram_run:
        print(f"vram: {vram_run}")
    print(f"verdict for {claim.describe()}: {verdict.result}: {verdict.reason}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all(r["rows_ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
