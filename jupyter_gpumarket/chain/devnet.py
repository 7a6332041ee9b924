"""Start a local chain (anvil, else the embedded py-evm chain), deploy, fund, write a profile.

From Python (e.g. a test fixture)::

    with start_devnet(port=0, embedded=False, profile_path=tmp / "devnet.json") as net:
        net.profile.rpc_url, net.profile.escrow, ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jupyter_gpumarket.chain.anvil import find_anvil, install_anvil, start_anvil
from jupyter_gpumarket.chain.client import connect
from jupyter_gpumarket.chain.deploy import DEFAULT_CLOSE_DELAY, FAUCET_AMOUNT, deploy_all
from jupyter_gpumarket.chain.dev_accounts import DEV_PRIVATE_KEYS, dev_account
from jupyter_gpumarket.chain.embedded import start_embedded
from jupyter_gpumarket.chain.profiles import NetworkProfile, save_profile
from jupyter_gpumarket.exceptions import ChainError

__all__ = ["Devnet", "start_chain", "start_devnet"]

log = logging.getLogger(__name__)


class ChainProcess(Protocol):
    rpc_url: str

    def stop(self) -> None: ...


@dataclass
class Devnet:
    """A running devnet: its profile (addresses), where it was written, and the chain."""

    profile: NetworkProfile
    chain: ChainProcess
    kind: str  # "anvil" or "embedded"
    profile_path: Path | None

    def stop(self) -> None:
        self.chain.stop()

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_chain(port: int = 0, embedded: bool = False) -> tuple[ChainProcess, str]:
    """anvil (installed with npm when missing) or, when asked or when that fails, embedded."""
    if not embedded:
        try:
            binary = find_anvil() or install_anvil()
            return start_anvil(port, binary=binary), "anvil"
        except ChainError as exc:
            log.warning("anvil unavailable (%s); falling back to the embedded py-evm chain", exc)
    return start_embedded(port), "embedded"


def start_devnet(
    *,
    port: int = 0,
    embedded: bool = False,
    close_delay: int = DEFAULT_CLOSE_DELAY,
    profile_path: Path | None = None,
    write_profile: bool = True,
    name: str = "devnet",
) -> Devnet:
    """Start a chain, deploy the contracts, mint 10,000 TestUSD to the 10 dev accounts and
    write the profile (to ``profile_path`` or ``$GPUMARKET_HOME/networks/<name>.json``)."""
    chain, kind = start_chain(port, embedded)
    try:
        w3 = connect(chain.rpc_url)
        accounts = [dev_account(i).address for i in range(len(DEV_PRIVATE_KEYS))]
        deployment = deploy_all(
            w3, dev_account(0), close_delay, fund=accounts, amount=FAUCET_AMOUNT
        )
        profile = NetworkProfile(
            name=name,
            rpc_url=chain.rpc_url,
            chain_id=w3.eth.chain_id,
            token=deployment.token,
            escrow=deployment.escrow,
            registry=deployment.registry,
            close_delay=close_delay,
            token_symbol="TUSD",
            token_decimals=6,
            devnet=True,
            extra={"chain": kind},
        )
        written = save_profile(profile, profile_path) if write_profile else None
    except BaseException:
        chain.stop()
        raise
    return Devnet(profile=profile, chain=chain, kind=kind, profile_path=written)
