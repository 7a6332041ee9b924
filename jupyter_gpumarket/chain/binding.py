"""Check that a profile's addresses are one deployment: contracts with code, and an Escrow
that holds the profile's token.

The Escrow takes exactly one token (``escrow.token()``, fixed at deployment). A profile whose
``token`` is another one would sign permits and OpenChannel messages for a token the Escrow
refuses, or show balances of a token the leases are not paid in::

    check_binding(Contracts.at(w3, profile.token, profile.escrow, profile.registry))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_gpumarket.chain.client import call
from jupyter_gpumarket.exceptions import ConfigError

if TYPE_CHECKING:
    from jupyter_gpumarket.chain.client import Contracts

__all__ = ["check_binding"]


def check_binding(c: Contracts) -> None:
    """ConfigError unless the escrow, registry and token have code and ``escrow.token()`` is
    the profile's token. One ``eth_getCode`` per contract and one ``eth_call``."""
    from eth_utils import to_checksum_address

    for what, contract in (("escrow", c.escrow), ("registry", c.registry), ("token", c.token)):
        if not bytes(c.w3.eth.get_code(contract.address)):
            raise ConfigError(
                f"the profile's {what} {contract.address} has no code on this chain: check "
                f"the network's RPC URL and the address (gpumarket network add NAME --{what} ...)"
            )
    held = to_checksum_address(call(c.escrow.functions.token(), what="Escrow.token"))
    if held != to_checksum_address(c.token.address):
        raise ConfigError(
            f"the escrow {c.escrow.address} takes the token {held}, but the profile names the "
            f"token {c.token.address}: set --token {held} "
            f"(gpumarket network add NAME --token {held} ...)"
        )
