"""What a provider checks before it spends gas relaying a renter's channel opening (pure).

The escrow checks every signature anyway; these checks refuse, with a reason the renter can act
on, what the provider would not want even if it were valid: an opening that pays someone else,
in another token, below the provider's relay fee, too small for one voucher interval after the
fee, or whose signatures expire before the transaction can be mined.
"""

from __future__ import annotations

from jupyter_gpumarket.core.eip712 import MAX_RELAY_FEE_DIVISOR
from jupyter_gpumarket.core.money import cost
from jupyter_gpumarket.core.paymsgs import RelayOpen

__all__ = ["MIN_DEADLINE_MARGIN", "relay_refusal"]

MIN_DEADLINE_MARGIN = 30  # seconds of signature validity the transaction needs left


def relay_refusal(
    req: RelayOpen,
    *,
    provider: str,
    token: str,
    relay_fee: int,
    price_per_hour: int,
    interval: int,
    now: int,
) -> str | None:
    """Why this provider will not relay ``req`` (None: relay it). ``now``: chain time."""
    if req.provider.lower() != provider.lower():
        return f"this opening pays provider {req.provider}, not this one ({provider})"
    if not req.grant and req.token.lower() != token.lower():
        return f"this provider is paid in {token}, not {req.token}"
    if req.relay_fee < relay_fee:
        return (
            f"relay fee {req.relay_fee} is below this provider's {relay_fee} base units "
            "(published in its offer)"
        )
    need = cost(price_per_hour, interval)
    if req.deposit - req.relay_fee < max(need, 1):
        return (
            f"the deposit after the relay fee ({req.deposit - req.relay_fee}) does not cover one "
            f"voucher interval ({interval} s = {need} base units): raise the budget"
        )
    if req.relay_fee > req.deposit // MAX_RELAY_FEE_DIVISOR:
        return (
            f"relay fee {req.relay_fee} is above a tenth of the deposit {req.deposit} (the "
            "escrow refuses it): raise the budget"
        )
    if req.deadline < now + MIN_DEADLINE_MARGIN:
        return "the signatures expire too soon to be mined: sign again"
    return None
