"""Deploy tests/chain/contracts/HostileToken.vy (compiled by vyper in the test, never shipped)
and escrows that hold it: worthless, fee-on-transfer and blacklisting tokens."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jupyter_gpumarket.chain.client import Contracts, _finish, deploy
from jupyter_gpumarket.chain.compile import EVM_VERSION

SOURCE = Path(__file__).parent / "contracts" / "HostileToken.vy"


@functools.cache
def _compiled() -> tuple[list[Any], str]:
    from vyper import compile_code
    from vyper.compiler.settings import Settings

    out = compile_code(
        SOURCE.read_text(),
        output_formats=["abi", "bytecode"],
        settings=Settings(evm_version=EVM_VERSION),
    )
    return out["abi"], out["bytecode"]


def deploy_hostile_token(w3, deployer, *, fake: bool = False, fee_bps: int = 0) -> Any:
    """A HostileToken contract handle."""
    abi, bytecode = _compiled()
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    tx = dict(
        factory.constructor(fake, fee_bps).build_transaction(
            {"from": deployer.address, "gasPrice": 0}
        )
    )
    tx.pop("gasPrice", None)
    tx.pop("gas", None)
    receipt = _finish(w3, deployer, tx, "deploy HostileToken")
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)


def escrow_holding(c: Contracts, deployer, token: Any, close_delay: int = 600) -> Contracts:
    """A second Escrow whose one token is ``token`` (with the deployment's registry)."""
    escrow = deploy(c.w3, deployer, "Escrow", close_delay, token.address)
    return Contracts.at(c.w3, token.address, escrow, c.registry.address)
