"""A student joins a course with its code: a wallet (created when there is none), the code
checked against the chain, the wallet bound to it (on chain now when the wallet holds gas,
else by the first kernel's relayed opening), and the offers the course allows.

``join(code)`` is what the picker widget, the JupyterLab panel and `gpumarket course join`
call. The course code stays on the student's machine (``$GPUMARKET_HOME/course-codes/``,
mode 0600): only claim tickets for this wallet leave it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.core.claim_code import ClaimCode
from jupyter_gpumarket.core.course import Terms
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

__all__ = ["JoinResult", "allowed_offers", "join", "profile_for_code", "saved_codes"]

PASSWORD_ENV = "GPUMARKET_WALLET_PASSWORD"


@dataclass(frozen=True)
class JoinResult:
    wallet: str
    created: bool
    network: str
    pool_id: str
    cap: int
    remaining: int
    expiry: int
    window: str
    binding: str  # what happened about the on-chain binding, in words
    offers: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def profile_for_code(code: ClaimCode, network: str | None = None) -> Any:
    """The network profile the code is for: ``network`` if given (checked), else the active
    one when it matches, else any saved profile with the code's chain id and escrow."""
    from jupyter_gpumarket.chain.profiles import active_profile, list_profiles, load_profile

    def fits(p: Any) -> bool:
        return p.chain_id == code.chain_id and str(p.escrow).lower() == code.escrow.lower()

    if network:
        profile = load_profile(network)
        if not fits(profile):
            raise ConfigError(
                f"this course code is for chain {code.chain_id} escrow {code.escrow}, not "
                f"network {profile.name}: leave --network out or add the course's network"
            )
        return profile
    try:
        active = active_profile()
        if fits(active):
            return active
    except ConfigError:
        pass
    for p in list_profiles():
        if fits(p):
            return p
    raise ConfigError(
        f"no saved network is chain {code.chain_id} with escrow {code.escrow}: ask your course "
        "admin for the network profile and add it with `gpumarket network add`"
    )


def _wallet(password: str | None) -> tuple[str, bool]:
    from jupyter_gpumarket.chain.keystore import create_keystore, keystore_address, keystore_path

    if keystore_path().exists():
        return keystore_address(), False
    password = password if password is not None else os.environ.get(PASSWORD_ENV)
    if not password:
        raise ConfigError(
            f"no wallet yet, and no password to protect a new one: set {PASSWORD_ENV} (the "
            "kernel uses it too) and join again"
        )
    return create_keystore(password), True


def allowed_offers(profile: Any, terms: Terms, code: Any) -> list[Any]:
    """Active offers this course pays for: its providers (the grant's one, or the course's
    list), GPU class and price ceiling; course-private offers only of this course's pool.
    ``code``: a ClaimCode, ClaimTicket or GrantCode (pool_id, provider, any_provider)."""
    from jupyter_gpumarket.core.offer_meta import parse_offer_metadata
    from jupyter_gpumarket.market.index import OfferIndex

    index = OfferIndex(profile)
    index.refresh()
    providers = {p.lower() for p in terms.providers}
    if not code.any_provider:
        providers = {code.provider.lower()}
    out = []
    for o in index.offers(active_only=True, course_pool=code.pool_id):
        meta = parse_offer_metadata(o.terms.metadata_uri)
        private = meta.get("course_pool", "")
        if private and private.lower() != code.pool_id.lower():
            continue
        if providers and o.provider.lower() not in providers:
            continue
        if terms.max_price and o.terms.price_per_hour > terms.max_price:
            continue
        if terms.gpu and terms.gpu.lower() not in o.terms.gpu_model.lower():
            continue
        out.append(o)
    return sorted(out, key=lambda o: (o.terms.price_per_hour, o.offer_id))


def _save_code(code: ClaimCode, network: str) -> None:
    directory = gpumarket_home() / "course-codes"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{code.grant_hash.hex()}.json"
    statefile.write_json(path, {"code": code.encode(), "network": network})


def saved_codes() -> list[tuple[str, str]]:
    """(code, network) of the courses this machine joined."""
    directory = gpumarket_home() / "course-codes"
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text()[:8192])
            out.append((str(data["code"]), str(data["network"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def join(code: str, *, network: str | None = None, password: str | None = None) -> JoinResult:
    """Join a course with its code (see the module docstring). PaymentError when the code
    was redeemed by another wallet, revoked, expired or is not the pool admin's."""
    from jupyter_gpumarket.chain.claims import claim_refusal, claim_state
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.course import pool_terms
    from jupyter_gpumarket.chain.leases import LeaseChain
    from jupyter_gpumarket.chain.relay import has_gas_for_open

    parsed = ClaimCode.decode(code)
    profile = profile_for_code(parsed, network)
    wallet, created = _wallet(password)
    c = Contracts.bound(connect(profile.rpc_url), *profile.require_contracts())
    chain = LeaseChain(c)
    ticket = parsed.ticket_for(wallet)
    state = claim_state(chain, ticket)
    reason = claim_refusal(ticket, state, chain_id=c.w3.eth.chain_id, escrow=c.escrow.address)
    if reason is not None:
        raise PaymentError(f"cannot join with this code: {reason}")
    terms = pool_terms(c, ticket.grant_args()[0])
    if state.claimed:
        binding = "this wallet is bound to the code on chain"
    elif has_gas_for_open(chain, wallet):
        from jupyter_gpumarket.chain.claims import claim_grant
        from jupyter_gpumarket.chain.keystore import load_account

        pw = password if password is not None else os.environ.get(PASSWORD_ENV, "")
        claim_grant(chain, load_account(pw), ticket)
        binding = "bound this wallet to the code on chain"
    else:
        binding = (
            "the code is claimed for this wallet; your first kernel binds it on chain (the "
            "provider relays it: no gas needed)"
        )
    _save_code(parsed, network or profile.name)
    offers = [
        {
            "offer_id": o.offer_id,
            "provider": o.provider,
            "gpu": f"{o.terms.gpu_count}x {o.terms.gpu_model}",
            "price_per_hour": o.terms.price_per_hour,
            "private": "course_pool" in o.terms.metadata_uri,
        }
        for o in allowed_offers(profile, terms, parsed)
    ]
    return JoinResult(
        wallet=wallet,
        created=created,
        network=network or profile.name,
        pool_id=parsed.pool_id,
        cap=parsed.cap,
        remaining=max(0, min(parsed.cap - state.spent, state.pool_balance)),
        expiry=parsed.expiry,
        window=terms.window,
        binding=binding,
        offers=offers,
    )
