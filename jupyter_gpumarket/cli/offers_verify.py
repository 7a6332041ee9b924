"""`gpumarket offers verify ID`: run the seeded verification challenge against an offer's agent.

Exit 0 whatever the verdict (match, mismatch, cpu); non-zero only when the challenge could not
run (no such offer, agent unreachable, wrong certificate, agent busy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import ConfigError, GpuMarketError, ProviderUnreachable

__all__ = ["add_verify_parser", "run_verify"]


def add_verify_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "verify", help="challenge an offer's agent: does it have the GPU it claims?"
    )
    p.add_argument("offer_id", type=argtypes.int_in(0, 2**63, "an offer id"), metavar="ID")
    p.add_argument("--network", help="network profile name or path (default: the active one)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--endpoint",
        help="challenge this agent directly (a --dev agent, no registry); needs --fingerprint",
    )
    p.add_argument("--fingerprint", help="the agent's TLS fingerprint (sha256:...)")
    p.add_argument(
        "--claim",
        metavar="MODEL[xCOUNT]",
        help="with --endpoint: the hardware to check, or CPU (default: what the agent's probe "
        "reports)",
    )
    p.add_argument(
        "--size",
        type=argtypes.int_in(8, 16384, "a matrix size from 8 to 16384"),
        help="matrix size instead of the plan's (quick demos; the verdict still compares "
        "throughput with the claimed model)",
    )
    p.add_argument("--timeout", type=argtypes.seconds(), default=120.0)
    p.set_defaults(func=run_verify)
    return p


def run_verify(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.market.verify import verify_offer

    profile = None
    if args.endpoint:
        endpoint, fingerprint, claim = _direct_target(args)
    else:
        endpoint, fingerprint, claim = _registry_target(args)
        from jupyter_gpumarket.chain.profiles import active_profile, load_profile

        profile = load_profile(args.network) if args.network else active_profile()
    result = asyncio.run(
        verify_offer(
            endpoint,
            fingerprint,
            claim,
            timeout=args.timeout,
            offer_id=args.offer_id,
            n=args.size,
            rounds=1 if args.size else None,
        )
    )
    if profile is not None:  # `gpumarket offers` and routing show it as the offer's level
        from jupyter_gpumarket.market.challenge_cache import ChallengeCache

        try:
            ChallengeCache.for_profile(profile).record(args.offer_id, fingerprint, result)
        except (OSError, GpuMarketError) as exc:
            print(f"warning: the verdict was not kept for `gpumarket offers`: {exc}")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(_human(result))
    return 0


def _human(r: dict[str, Any]) -> str:
    def tf(v: Any) -> str:
        return "-" if v is None else f"{v:.3g} TFLOPS"

    return "\n".join(
        [
            f"offer {r['offer_id']}: {r['verdict'].upper()} — {r['reason']}",
            f"  claimed   {r['claimed_model']} ({r.get('claimed_class') or 'not in the table'})",
            f"  backend   {r['backend']}",
            f"  FP32      {tf(r['fp32_tflops'])}",
            f"  {str(r['lowp_precision']).upper():<9} {tf(r['lowp_tflops'])}",
            f"  VRAM      {r['vram_proven_mib'] if r['vram_proven_mib'] is not None else '-'} MiB"
            " proven",
            f"  took      {r['seconds']:.1f} s",
        ]
    )


def _probe_or_fail(endpoint: str, fingerprint: str, offer_id: int, provider: str | None) -> Any:
    from jupyter_gpumarket.market.probe import probe_endpoint

    report = asyncio.run(
        probe_endpoint(
            endpoint, fingerprint, offer_id=offer_id, expected_provider=provider, timeout=10.0
        )
    )
    if not report.result.reachable:
        raise ProviderUnreachable(
            f"offer {offer_id}'s agent at {endpoint} cannot be challenged: {report.result.reason}"
        )
    return report


def _direct_target(args: argparse.Namespace) -> tuple[str, str, Any]:
    from jupyter_gpumarket.core.verification import Claim

    if not args.fingerprint:
        raise ConfigError("--endpoint needs --fingerprint (the agent's 'sha256:…' TLS pin)")
    if args.claim and args.claim.strip().lower() in ("cpu", "none"):
        return args.endpoint, args.fingerprint, Claim("CPU", 0, 0)
    if args.claim:
        from jupyter_gpumarket.agent.gpu_sim import parse_simulated
        from jupyter_gpumarket.core.gpu_catalog import normalize

        model, count = parse_simulated(args.claim)
        cls = normalize(model)
        return args.endpoint, args.fingerprint, Claim(model, count, cls.vram_mib if cls else 0)
    report = _probe_or_fail(args.endpoint, args.fingerprint, args.offer_id, None)
    det = report.result.detected
    if det is None or not det.names:
        return args.endpoint, args.fingerprint, Claim("CPU", 0, 0)
    return args.endpoint, args.fingerprint, Claim(det.names[0], len(det.names), min(det.vram_mib))


def _registry_target(args: argparse.Namespace) -> tuple[str, str, Any]:
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.core.market_offer import MarketOffer

    profile = load_profile(args.network) if args.network else active_profile()
    token, escrow, registry = profile.require_contracts()
    contracts = Contracts.bound(connect(profile.rpc_url), token, escrow, registry)
    raw = contracts.registry.functions.offers(args.offer_id).call()
    offer = MarketOffer.from_registry(args.offer_id, raw)
    if offer is None:
        raise ConfigError(f"offer {args.offer_id} is not in the registry of {profile.name}")
    if not offer.active:
        raise ConfigError(f"offer {args.offer_id} is no longer active: pick another offer")
    t = offer.terms
    # the agent must answer as the offer's provider before it is worth challenging
    _probe_or_fail(t.endpoint, t.tls_fingerprint, offer.offer_id, offer.provider)
    return t.endpoint, t.tls_fingerprint, offer.claim
