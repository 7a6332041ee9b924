"""The offers a course code alone launches a kernel on (GPUMARKET_GRANT without
GPUMARKET_OFFER): the course's terms from the chain, its window checked first."""

from __future__ import annotations

from typing import Any

from jupyter_gpumarket.exceptions import ConfigError, PaymentError

__all__ = ["course_candidates"]


def course_candidates(network: str, grant: str) -> list[Any]:
    """The offers a course code (or grant code) alone launches on, cheapest first, as the
    provisioner's OfferChoice; PaymentError outside the course's time window."""
    import time

    from jupyter_gpumarket.chain.claims import decode_grant
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.course import pool_terms
    from jupyter_gpumarket.core.claim_code import CODE_PREFIX, ClaimCode
    from jupyter_gpumarket.core.course_window import parse_window
    from jupyter_gpumarket.market.course_join import allowed_offers, profile_for_code
    from jupyter_gpumarket.provisioning.offers import OfferChoice

    if grant.strip().startswith(CODE_PREFIX):
        code: Any = ClaimCode.decode(grant)
        profile = profile_for_code(code, network or None)
    else:
        from jupyter_gpumarket.chain.profiles import active_profile, load_profile

        code = decode_grant(grant)
        profile = load_profile(network) if network else active_profile()
    c = Contracts.bound(connect(profile.rpc_url), *profile.require_contracts())
    terms = pool_terms(c, bytes.fromhex(code.pool_id[2:]))
    refusal = parse_window(terms.window).refusal(int(time.time()))
    if refusal is not None:
        raise PaymentError(f"no kernel now: {refusal}")
    offers = allowed_offers(profile, terms, code)
    if not offers:
        raise ConfigError(
            "no offer this course allows is online: ask your course admin, or try again later"
        )
    return [OfferChoice.from_market(o) for o in offers]
