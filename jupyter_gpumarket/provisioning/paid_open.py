"""How the renter's channel gets opened: by the renter (it holds gas), by the provider (a
relayed, gasless opening), from a course's credit pool (a grant code), or both.

    own tokens, gas      openWithPermit (or approve + open)       1 tx, renter pays gas
    own tokens, no gas   provider relays openFor                  renter pays the relay fee
    grant, gas           openFromPool                             the pool pays the deposit
    grant, no gas        provider relays openFromPoolFor          the pool pays deposit + fee

Blocking (web3): callers run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jupyter_gpumarket.chain.leases import LeaseChain, OpenedChannel, TxInfo
from jupyter_gpumarket.chain.relay import (
    grant_room,
    has_gas_for_open,
    open_from_pool,
    pool_token,
    relay_request,
)
from jupyter_gpumarket.chain.session_keys import new_session_key
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.claim_code import ClaimTicket
from jupyter_gpumarket.core.grant_code import GrantCode
from jupyter_gpumarket.core.metering import initial_deposit
from jupyter_gpumarket.core.offer_meta import relay_fee_of
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

__all__ = ["MAX_RELAY_FEE_PERCENT", "open_channel_for_offer"]

log = logging.getLogger(__name__)

MAX_RELAY_FEE_PERCENT = 10  # of the deposit: above that, funding gas is the better deal


def open_channel_for_offer(
    chain: LeaseChain,
    renter: Any,
    offer: Any,  # provisioning.offers.OfferChoice
    *,
    budget: int,
    grant: GrantCode | ClaimTicket | None = None,
    initial_hours: float = 1.0,
) -> tuple[OpenedChannel, str]:
    """Open the lease's channel the way that works for this wallet; (channel, how)."""
    if offer.token.lower() != chain.c.token.address.lower() and grant is None:
        raise ConfigError(
            f"offer {offer.offer_id} is paid in {offer.token}, not this network's token "
            f"{chain.c.token.address}; pick an offer in this network's token"
        )
    has_gas = has_gas_for_open(chain, renter.address)
    if grant is None and has_gas:
        opened = chain.open_for_offer(
            renter, offer.offer_id, budget=budget, initial_hours=initial_hours
        )
        return opened, "own"
    deposit = initial_deposit(budget, offer.price_per_hour, initial_hours)
    if grant is not None:
        if pool_token(chain, grant).lower() != offer.token.lower():
            raise ConfigError(
                f"the grant's pool pays in another token than offer {offer.offer_id}: pick an "
                "offer in the course's token"
            )
        room = grant_room(chain, grant)
        if room <= 0:
            raise PaymentError("this grant is spent (or its pool is empty): ask for a new one")
        deposit = min(deposit, room)
    key = new_session_key()
    # a course code's opening is always relayed: the pool pays the fee, the student's own
    # wallet (even one holding gas) pays nothing
    if grant is not None and has_gas and not isinstance(grant, ClaimTicket):
        tx = open_from_pool(
            chain, renter, grant=grant, provider=offer.provider, deposit=deposit, session_key=key
        )
        return _opened(chain, renter, offer, key, deposit, tx), "pool"
    fee = relay_fee_of(offer.metadata)
    if fee is None:
        raise ConfigError(
            f"the wallet {renter.address} holds no gas to open a channel, and offer "
            f"{offer.offer_id}'s provider does not relay openings: send the wallet a little "
            "gas, or pick a provider that relays"
        )
    if fee * 100 > deposit * MAX_RELAY_FEE_PERCENT:
        raise PaymentError(
            f"offer {offer.offer_id}'s provider asks {fee} base units to relay the opening, more "
            f"than {MAX_RELAY_FEE_PERCENT} % of the deposit {deposit}: raise the budget or send "
            "the wallet a little gas"
        )
    req = relay_request(
        chain,
        renter,
        provider=offer.provider,
        deposit=deposit,
        relay_fee=fee,
        session_key=key,
        grant=grant,
    )
    from jupyter_gpumarket.provisioning.relay_client import request_relay

    log.info("no gas in %s: asking the provider to relay the opening", renter.address)
    result = asyncio.run(request_relay(offer.endpoint, offer.tls_fingerprint, req))
    receipt = chain.w3.eth.get_transaction_receipt(result.tx_hash)
    opened = _opened(
        chain, renter, offer, key, deposit - fee, TxInfo.of("open", receipt), relayed_fee=fee
    )
    return opened, "pool-relayed" if grant is not None else "relayed"


def _opened(
    chain: LeaseChain,
    renter: Any,
    offer: Any,
    key: Any,
    deposit: int,
    tx: TxInfo,
    *,
    relayed_fee: int = 0,
) -> OpenedChannel:
    """Check the channel on chain (a relayer's word is not enough) and describe it."""
    cid = eip712.channel_id_for(renter.address, key.address)
    info = chain.channel(cid)
    if (
        info.state != "open"
        or info.renter.lower() != renter.address.lower()
        or info.provider.lower() != offer.provider.lower()
        or info.deposit != deposit
    ):
        raise PaymentError(
            f"channel 0x{cid.hex()} on chain is not the one asked for (state {info.state}, "
            f"provider {info.provider}, deposit {info.deposit}; wanted {deposit} to "
            f"{offer.provider}); nothing is streamed to it — run `gpumarket leases`"
        )
    if relayed_fee:
        log.info("provider relayed channel 0x%s (relay fee %s)", cid.hex(), relayed_fee)
    return OpenedChannel(
        channel_id=cid,
        renter=renter.address,
        provider=offer.provider,
        token=info.token,
        deposit=deposit,
        price_per_hour=offer.price_per_hour,
        session_key=key,
        txs=(tx,),
    )
