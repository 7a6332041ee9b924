"""Deploy TestUSD + Escrow + Registry and fund accounts from the TestUSD faucet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from jupyter_gpumarket.chain.client import Deployment, contract_at, deploy, send

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

__all__ = ["DEFAULT_CLOSE_DELAY", "FAUCET_AMOUNT", "deploy_all", "mint"]

DEFAULT_CLOSE_DELAY = 3600
TOKEN_DECIMALS = 6
FAUCET_AMOUNT = 10_000 * 10**TOKEN_DECIMALS


def deploy_all(
    w3: Web3,
    deployer: LocalAccount,
    close_delay: int = DEFAULT_CLOSE_DELAY,
    fund: Iterable[str] = (),
    amount: int = FAUCET_AMOUNT,
) -> Deployment:
    """Deploy the three contracts with ``deployer``; mint ``amount`` TestUSD to each of ``fund``.
    The escrow holds TestUSD only (one token per escrow, fixed at deployment)."""
    token = deploy(w3, deployer, "TestUSD")
    escrow = deploy(w3, deployer, "Escrow", close_delay, token)
    registry = deploy(w3, deployer, "Registry")
    deployment = Deployment(token=token, escrow=escrow, registry=registry, close_delay=close_delay)
    for address in fund:
        mint(w3, deployer, deployment.token, address, amount)
    return deployment


def mint(w3: Web3, minter: LocalAccount, token: str, to: str, amount: int) -> None:
    """TestUSD faucet: ``minter`` (the deployer) mints ``amount`` base units to ``to``."""
    send(w3, minter, contract_at(w3, "TestUSD", token).functions.mint(to, amount), what="mint")
