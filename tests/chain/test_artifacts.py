"""Committed artifacts match the Vyper sources (one generator: scripts/compile_contracts.py)."""

from __future__ import annotations

import pytest

from jupyter_gpumarket.chain.artifact_loader import (
    ARTIFACTS_DIR,
    check_sources_unchanged,
    load_artifact,
)
from jupyter_gpumarket.chain.compile import CONTRACTS, compile_contract, dumps


@pytest.mark.parametrize("name", CONTRACTS)
def test_artifact_is_fresh(name: str) -> None:
    committed = (ARTIFACTS_DIR / f"{name}.json").read_text()
    assert committed == dumps(compile_contract(name)), (
        f"{name}.json is stale: run `python scripts/compile_contracts.py` and commit"
    )
    check_sources_unchanged(name)


def test_escrow_abi_has_the_public_interface() -> None:
    names = {e.get("name") for e in load_artifact("Escrow").abi}
    assert {
        "open",
        "openWithPermit",
        "openFor",
        "topUp",
        "redeem",
        "settle",
        "requestClose",
        "withdraw",
        "createPool",
        "fundPool",
        "withdrawPool",
        "openFromPool",
        "openFromPoolFor",
        "channels",
        "pools",
        "grant_spent",
        "domain_separator",
        "attest",
        "claimRefund",
        "refund_owed",
        "token",
        "ChannelOpened",
        "ToppedUp",
        "Redeemed",
        "CloseRequested",
        "Settled",
        "Withdrawn",
        "PoolCreated",
        "PoolFunded",
        "PoolWithdrawn",
        "Attested",
        "RefundOwed",
        "RefundClaimed",
    } <= names
    # one token per deployment, fixed session keys (issue 17: items 1 and 2)
    assert not names & {"addToken", "token_index", "tokens", "rotateSessionKey"}
