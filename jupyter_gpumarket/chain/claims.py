"""Course codes on chain: read a claimable grant's state, claim it, open from it.

A student's wallet turns a course code (``gpmcode1.``, carrying the claim key) into a
:class:`ClaimTicket` locally (``ClaimCode.ticket_for``); only the ticket travels (to a
provider that relays the opening, or in ``claimGrant`` to whoever pays its gas). The checks
here refuse, off chain and with what to do next, exactly what ``openFromClaimFor`` /
``claimGrant`` would revert on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket.chain.client import call, send
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.claim_code import CLAIM_PREFIX, CODE_PREFIX, ClaimCode, ClaimTicket
from jupyter_gpumarket.core.grant_code import GrantCode
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from jupyter_gpumarket.chain.leases import LeaseChain

__all__ = [
    "ClaimState",
    "channel_grant_expiry",
    "channel_revoked",
    "claim_grant",
    "claim_refusal",
    "claim_state",
    "decode_grant",
    "open_from_claim_tx",
]

ZERO = "0x" + "00" * 20


def decode_grant(text: str, wallet: str | None = None) -> GrantCode | ClaimTicket:
    """Any pool grant the provisioner or an agent may get: a grant code (``gpmgrant1.``),
    a claim ticket (``gpmclaim1.``), or a course code (``gpmcode1.``, turned into the ticket
    for ``wallet`` here: the claim key stays on this machine)."""
    text = (text or "").strip()
    if text.startswith(CODE_PREFIX):
        if wallet is None:
            raise ConfigError("a course code needs the student's wallet to be claimed")
        return ClaimCode.decode(text).ticket_for(wallet)
    if text.startswith(CLAIM_PREFIX):
        return ClaimTicket.decode(text)
    return GrantCode.decode(text)


@dataclass(frozen=True)
class ClaimState:
    """A claimable grant as the escrow sees it."""

    pool_admin: str  # zero: no such pool
    pool_balance: int
    holder: str  # zero: not claimed yet
    spent: int
    revoked: bool
    now: int

    @property
    def claimed(self) -> bool:
        return int(self.holder, 16) != 0


def claim_state(chain: LeaseChain, g: ClaimTicket | ClaimCode) -> ClaimState:
    esc = chain.c.escrow.functions
    gh, pool_id = g.grant_hash, g.grant_args()[0]
    admin, _token, balance = call(esc.pools(pool_id), what="Escrow.pools")
    return ClaimState(
        pool_admin=str(admin),
        pool_balance=int(balance),
        holder=str(call(esc.grant_holder(gh), what="Escrow.grant_holder")),
        spent=int(call(esc.grant_spent(gh), what="Escrow.grant_spent")),
        revoked=bool(call(esc.grant_revoked(pool_id, gh), what="Escrow.grant_revoked")),
        now=chain.now(),
    )


def claim_refusal(
    ticket: ClaimTicket, state: ClaimState, *, chain_id: int, escrow: str
) -> str | None:
    """Why the escrow would refuse to claim ``ticket`` or open from it (None: it would not).
    Pure given ``state``; the same order as the contract's checks."""
    if (chain_id, escrow.lower()) != (ticket.chain_id, ticket.escrow.lower()):
        return f"the course code is for chain {ticket.chain_id} escrow {ticket.escrow}"
    if int(state.pool_admin, 16) == 0:
        return f"the course's pool {ticket.pool_id} does not exist on this network"
    try:
        signer = ticket.admin_signer()
    except PaymentError as exc:
        return f"the course code's grant signature is unreadable ({exc})"
    if signer.lower() != state.pool_admin.lower():
        return "the course code is not signed by the course's pool admin"
    if state.claimed:
        if state.holder.lower() != ticket.student.lower():
            return (
                f"this code was already redeemed by another wallet ({state.holder}); ask your "
                "course admin for a new code"
            )
    else:
        problem = ticket.claim_problem()
        if problem is not None:
            return problem
    if state.revoked:
        return "the course admin revoked this code"
    if state.now > ticket.expiry:
        return "this course code has expired: ask your course admin for a new one"
    return None


def _require(chain: LeaseChain, ticket: ClaimTicket) -> ClaimState:
    state = claim_state(chain, ticket)
    reason = claim_refusal(
        ticket, state, chain_id=chain.w3.eth.chain_id, escrow=chain.c.escrow.address
    )
    if reason is not None:
        raise PaymentError(reason)
    return state


def claim_grant(chain: LeaseChain, sender: LocalAccount, ticket: ClaimTicket) -> Any:
    """Send ``claimGrant`` (``sender`` pays the gas: the student, or anyone relaying it)."""
    _require(chain, ticket)
    fn = chain.c.escrow.functions.claimGrant(
        *ticket.grant_args(), ticket.student, bytes.fromhex(ticket.claim_sig[2:])
    )
    return send(chain.w3, sender, fn, what="Escrow.claimGrant")


def open_from_claim_tx(
    chain: LeaseChain,
    ticket: ClaimTicket,
    *,
    provider: str,
    deposit: int,
    session_key: str,
    relay_fee: int,
    deadline: int,
    open_sig: bytes,
) -> Any:
    """The ``openFromClaimFor`` call (after the off-chain checks); who sends it pays gas."""
    _require(chain, ticket)
    return chain.c.escrow.functions.openFromClaimFor(
        *ticket.grant_args(),
        bytes.fromhex(ticket.claim_sig[2:]),
        ticket.student,
        provider,
        deposit,
        session_key,
        relay_fee,
        deadline,
        open_sig,
    )


def grant_room_of(chain: LeaseChain, ticket: ClaimTicket) -> int:
    """How much of the claimable grant is left: min(cap - spent, the pool's balance)."""
    state = claim_state(chain, ticket)
    return max(0, min(ticket.cap - state.spent, state.pool_balance))


def student_open_sig(
    chain: LeaseChain,
    student: LocalAccount,
    ticket: ClaimTicket,
    *,
    provider: str,
    deposit: int,
    session_key: str,
    relay_fee: int,
    deadline: int,
) -> bytes:
    typed = eip712.open_channel(
        eip712.Domain(chain.w3.eth.chain_id, chain.c.escrow.address),
        renter=student.address,
        provider=provider,
        token=chain.c.token.address,
        deposit=deposit,
        session_key=session_key,
        relay_fee=relay_fee,
        deadline=deadline,
        pool_id=ticket.grant_args()[0],
    )
    return eip712.sign_typed_data(student.key, typed)


def channel_revoked(chain: LeaseChain, channel_id: bytes) -> bool:
    """Whether the course grant that paid this pool channel was revoked."""
    fn = chain.c.escrow.functions.channel_revoked(channel_id)
    return bool(call(fn, what="Escrow.channel_revoked"))


def channel_grant_expiry(chain: LeaseChain, channel_id: bytes) -> int:
    """The expiry of the grant that paid this pool channel (unix seconds), read from the
    arguments of the escrow call that opened it (the contract keeps no per-channel expiry; it
    checked this one when the channel opened). PaymentError when it cannot be read."""
    from jupyter_gpumarket.chain.errors import rpc_errors

    esc = chain.c.escrow
    with rpc_errors("eth_getLogs (Escrow PoolChannelOpened)"):
        logs = esc.events.PoolChannelOpened.get_logs(
            argument_filters={"channel_id": channel_id}, from_block=0
        )
    if not logs:
        raise PaymentError(f"no pool opening of channel 0x{channel_id.hex()} on this network")
    with rpc_errors("eth_getTransactionByHash"):
        tx = chain.w3.eth.get_transaction(logs[0]["transactionHash"])
    if str(tx.get("to") or "").lower() != esc.address.lower():
        raise PaymentError(f"channel 0x{channel_id.hex()} was opened through another contract")
    try:
        _fn, args = esc.decode_function_input(tx["input"])
        return int(args["expiry"])
    except (ValueError, KeyError, TypeError) as exc:
        what = f"cannot read the grant of channel 0x{channel_id.hex()}: {exc}"
        raise PaymentError(what) from None
