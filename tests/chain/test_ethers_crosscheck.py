"""The same Voucher, OpenChannel, Grant and Permit signed by eth-account and by ethers (npm)
give identical signatures, and the contract accepts the ethers ones.

ethers is installed into tests/chain/ethers/node_modules by scripts/setup.sh (npm install) the
first time; without node/npm the test is skipped with the reason."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chain_helpers import USD, escrow_domain, now, token_domain
from eth_account import Account
from pool_helpers import ZERO, create_pool

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712

HERE = Path(__file__).parent / "ethers"


@pytest.fixture(scope="session")
def ethers_signer() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the ethers cross-check needs Node.js")
    if not (HERE / "node_modules" / "ethers" / "package.json").exists():
        pytest.skip("ethers is not installed in tests/chain/ethers: scripts/setup.sh installs it")
    return HERE / "sign.mjs"


def _hexify(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {k: _hexify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hexify(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2**53:
        return str(value)  # a JS number would lose it (e.g. OpenChannel's nonce)
    return value


def ethers_sign(script: Path, jobs: list[tuple[Any, dict]]) -> list[bytes]:
    payload = json.dumps([{"key": "0x" + bytes(k.key).hex(), "typed": _hexify(t)} for k, t in jobs])
    proc = subprocess.run(
        ["node", str(script)], input=payload, capture_output=True, text=True, timeout=60, check=True
    )
    return [bytes.fromhex(s.removeprefix("0x")) for s in json.loads(proc.stdout)]


def test_ethers_and_eth_account_agree_and_the_contract_accepts(ethers_signer, contracts, accounts):
    c, renter, provider, relayer, admin = (
        contracts,
        accounts[1],
        accounts[2],
        accounts[3],
        accounts[4],
    )
    domain, deadline = escrow_domain(c), now(c) + 3600
    session, session2, session3 = Account.create(), Account.create(), Account.create()
    student = accounts[5]
    pool_id = create_pool(c, admin, 5 * USD)
    deposit = 2 * USD
    cid = eip712.channel_id_for(renter.address, session.address)
    jobs = [
        (
            renter,
            eip712.open_channel(
                domain,
                renter=renter.address,
                provider=provider.address,
                token=c.token.address,
                deposit=deposit,
                session_key=session.address,
                relay_fee=1_000,
                deadline=deadline,
            ),
        ),
        (
            renter,
            eip712.permit(
                token_domain(c),
                owner=renter.address,
                spender=c.escrow.address,
                value=deposit,
                nonce=c.token.functions.nonces(renter.address).call(),
                deadline=deadline,
            ),
        ),
        (session, eip712.voucher(domain, cid, 777)),
        (
            admin,
            eip712.grant(
                domain,
                pool_id=pool_id,
                student=student.address,
                cap=USD,
                expiry=deadline,
                provider=ZERO,
            ),
        ),
        (  # a pool-funded opening: poolId names the pool that pays
            student,
            eip712.open_channel(
                domain,
                renter=student.address,
                provider=provider.address,
                token=c.token.address,
                deposit=USD,
                session_key=session3.address,
                relay_fee=1_000,
                deadline=deadline,
                pool_id=pool_id,
            ),
        ),
    ]
    theirs = ethers_sign(ethers_signer, jobs)
    ours = [eip712.sign_typed_data(key.key, typed) for key, typed in jobs]
    assert theirs == ours
    open_sig, permit_sig, voucher, grant_sig, pool_open_sig = theirs
    send(
        c.w3,
        relayer,
        c.escrow.functions.openFor(
            renter.address,
            provider.address,
            c.token.address,
            deposit,
            session.address,
            1_000,
            deadline,
            open_sig,
            permit_sig[64],
            permit_sig[:32],
            permit_sig[32:64],
        ),
    )
    send(c.w3, provider, c.escrow.functions.redeem(cid, 777, voucher))
    assert c.escrow.functions.channels(cid).call()[5] == 777
    send(
        c.w3,
        student,
        c.escrow.functions.openFromPool(
            pool_id,
            student.address,
            USD,
            deadline,
            ZERO,
            grant_sig,
            provider.address,
            USD,
            session2.address,
        ),
    )
    assert c.escrow.functions.pools(pool_id).call()[2] == 4 * USD
    grant = (pool_id, student.address, USD * 2, deadline, ZERO)
    grant_sig2 = eip712.sign_typed_data(
        admin.key,
        eip712.grant(
            domain, pool_id=pool_id, student=student.address, cap=2 * USD, expiry=deadline,
            provider=ZERO,
        ),
    )  # fmt: skip
    send(
        c.w3,
        relayer,
        c.escrow.functions.openFromPoolFor(
            *grant, grant_sig2, provider.address, USD, session3.address, 1_000, deadline,
            pool_open_sig,
        ),
    )  # fmt: skip
    assert c.escrow.functions.pools(pool_id).call()[2] == 3 * USD
