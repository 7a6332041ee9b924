"""A paid provider on the devnet that claims an H100 it lacks (``--simulate-gpu``): its offer
says so in the Registry, its probe is signed by its provider, and `gpumarket offers verify`
finds the mismatch from the Registry entry alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from jupyter_gpumarket.chain.client import Contracts, connect
from jupyter_gpumarket.core.market_offer import MarketOffer
from jupyter_gpumarket.market.probe import probe_endpoint

from marketproc import running_market

pytestmark = pytest.mark.slow
CLI = (sys.executable, "-m", "jupyter_gpumarket.cli", "offers")


def test_paid_simulated_h100_is_published_signed_and_caught(tmp_path: Path) -> None:
    with running_market(tmp_path, "--simulate-gpu", "H100") as m:
        p = m.devnet.profile
        registry = Contracts.at(connect(p.rpc_url), *p.require_contracts()).registry
        offer = MarketOffer.from_registry(1, registry.functions.offers(1).call())
        assert offer is not None
        assert offer.simulated is True  # labelled in the offer's metadata
        assert offer.claim.gpu_class is not None
        assert offer.claim.gpu_class.name == "H100 SXM"
        t = offer.terms

        own = asyncio.run(
            probe_endpoint(
                t.endpoint, t.tls_fingerprint, offer_id=1, expected_provider=offer.provider
            )
        )
        assert own.result.reachable, own.result.reason
        assert own.provider is not None
        assert own.provider.lower() == offer.provider
        assert own.simulated is True
        # the same agent probed for an offer that names another provider (a copied endpoint)
        copied = asyncio.run(
            probe_endpoint(
                t.endpoint,
                t.tls_fingerprint,
                offer_id=2,
                expected_provider=Account.create().address,
            )
        )
        assert not copied.result.reachable
        assert "not the offer's provider" in copied.result.reason

        env = {**os.environ, **m.renter_env}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "jupyter_gpumarket.cli",
                "offers",
                "verify",
                "1",
                "--network",
                str(m.profile),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["offer_id"] == 1
    assert result["claimed_model"] == "H100"
    assert result["verdict"] == "mismatch"
