"""Channel openings a renter cannot pay gas for, and openings paid by a credit pool.

Renter side: :func:`relay_request` signs everything the provider needs to open the channel for
it (OpenChannel + an EIP-2612 permit, or OpenChannel + a pool grant) — no transaction, only
reads. Relayer side (the provider agent): :func:`submit_relay_request` sends ``openFor`` or
``openFromPoolFor``; the escrow pays the signed relay fee (at most a tenth of the deposit) out
of the deposit to the channel's provider, whoever sends the transaction. The signed
OpenChannel names who pays (``poolId``: zero for the renter's wallet, else the grant's pool), so
a relayer cannot turn a pool opening into a wallet-paid one or use another pool. A renter that
holds gas and a grant opens from the pool itself with :func:`open_from_pool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_gpumarket.chain.client import call, send
from jupyter_gpumarket.chain.errors import rpc_errors
from jupyter_gpumarket.chain.leases import PERMIT_WINDOW, LeaseChain, TxInfo
from jupyter_gpumarket.core import eip712, paymsgs
from jupyter_gpumarket.core.claim_code import CLAIM_PREFIX, ClaimTicket
from jupyter_gpumarket.core.grant_code import GrantCode
from jupyter_gpumarket.exceptions import ChainError, ConfigError, PaymentError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "grant_room",
    "has_gas_for_open",
    "open_from_pool",
    "pool_token",
    "relay_request",
    "submit_relay_request",
]

OPEN_GAS = 250_000  # an open with permit uses ~125k; leave room for a busy chain


def has_gas_for_open(chain: LeaseChain, address: str) -> bool:
    """Whether ``address`` can pay for opening a channel itself."""
    with rpc_errors("eth_getBalance"):
        balance = chain.w3.eth.get_balance(address)
        price = chain.w3.eth.gas_price
    return balance >= OPEN_GAS * max(price, 1)


def _pool(chain: LeaseChain, grant: GrantCode | ClaimTicket) -> tuple[str, int]:
    """(token, balance) of the grant's pool; ConfigError when there is no such pool."""
    admin, token, balance = call(
        chain.c.escrow.functions.pools(_grant_args(grant)[0]), what="Escrow.pools"
    )
    if int(admin, 16) == 0:
        raise ConfigError(f"the grant's pool {grant.pool_id} does not exist on this network")
    return token, int(balance)


def pool_token(chain: LeaseChain, grant: GrantCode | ClaimTicket) -> str:
    return _pool(chain, grant)[0]


def grant_room(chain: LeaseChain, grant: GrantCode | ClaimTicket) -> int:
    """How much of the grant is left to spend: min(cap - spent, the pool's balance)."""
    if isinstance(grant, ClaimTicket):
        from jupyter_gpumarket.chain.claims import grant_room_of

        return grant_room_of(chain, grant)
    pool_id, student, cap, expiry, provider, _sig = _grant_args(grant)
    gh = eip712.grant_hash(
        pool_id=pool_id, student=student, cap=cap, expiry=expiry, provider=provider
    )
    spent = call(chain.c.escrow.functions.grant_spent(gh), what="Escrow.grant_spent")
    return max(0, min(cap - int(spent), _pool(chain, grant)[1]))


def _grant_args(g: GrantCode | ClaimTicket) -> tuple[bytes, str, int, int, str, bytes]:
    """The Grant as the escrow's openFromPool* arguments take it."""
    if isinstance(g, ClaimTicket):
        return g.grant_args()
    pool_id, sig = bytes.fromhex(g.pool_id[2:]), bytes.fromhex(g.signature[2:])
    return pool_id, g.student, g.cap, g.expiry, g.provider, sig


def _check_grant(
    chain: LeaseChain, grant: GrantCode | ClaimTicket, student: str, provider: str
) -> None:
    grant.check_for(
        chain_id=chain.w3.eth.chain_id,
        escrow=chain.c.escrow.address,
        student=student,
        provider=provider,
    )
    if grant.expiry < chain.now():
        raise ConfigError("this grant has expired: ask your course admin for a new one")
    if isinstance(grant, ClaimTicket):
        from jupyter_gpumarket.chain.claims import _require

        _require(chain, grant)


def relay_request(
    chain: LeaseChain,
    renter: LocalAccount,
    *,
    provider: str,
    deposit: int,
    relay_fee: int,
    session_key: LocalAccount,
    grant: GrantCode | ClaimTicket | None = None,
    window: int = PERMIT_WINDOW,
) -> paymsgs.RelayOpen:
    """Sign an opening the provider relays; ``deposit`` includes ``relay_fee``."""
    if relay_fee > deposit // eip712.MAX_RELAY_FEE_DIVISOR:
        raise PaymentError(
            f"relay fee {relay_fee} is above a tenth of the deposit {deposit} (the escrow's "
            "limit): raise the budget or send the wallet a little gas"
        )
    deadline = chain.now() + window
    permit = ""
    pool_id = bytes(32)
    if grant is not None:
        _check_grant(chain, grant, renter.address, provider)
        token = pool_token(chain, grant)
        pool_id = _grant_args(grant)[0]
    else:
        token = chain.c.token.address
        chain.check_balance(renter.address, deposit)
        args = chain.permit_args(renter, deposit, deadline)
        if args is None:
            raise ChainError(
                f"token {token} has no EIP-2612 permit, so a wallet without gas cannot open a "
                "channel: send the wallet a little gas"
            )
        _deadline, v, r, s = args
        permit = "0x" + (r + s + bytes([v])).hex()
    typed = eip712.open_channel(
        eip712.Domain(chain.w3.eth.chain_id, chain.c.escrow.address),
        renter=renter.address,
        provider=provider,
        token=token,
        deposit=deposit,
        session_key=session_key.address,
        relay_fee=relay_fee,
        deadline=deadline,
        pool_id=pool_id,
    )
    open_sig = eip712.sign_typed_data(renter.key, typed)
    return paymsgs.RelayOpen(
        renter=renter.address,
        provider=typed["message"]["provider"],
        token=token,
        deposit=deposit,
        session_key=session_key.address,
        relay_fee=relay_fee,
        deadline=deadline,
        open_sig="0x" + open_sig.hex(),
        permit=permit,
        grant=grant.encode() if grant else "",
    )


def submit_relay_request(
    chain: LeaseChain, relayer: LocalAccount, req: paymsgs.RelayOpen
) -> tuple[bytes, TxInfo]:
    """Send the relayed opening (the relayer pays gas; ``relay_fee`` goes to the channel's
    provider, normally the relayer itself); (channel id, tx)."""
    escrow = chain.c.escrow.functions
    open_sig = bytes.fromhex(req.open_sig[2:])
    if req.grant.startswith(CLAIM_PREFIX):
        from jupyter_gpumarket.chain.claims import open_from_claim_tx

        t = ClaimTicket.decode(req.grant)
        if t.student.lower() != req.renter.lower():
            raise PaymentError("the course claim is for another wallet than the one that signed")
        fn = open_from_claim_tx(
            chain,
            t,
            provider=req.provider,
            deposit=req.deposit,
            session_key=req.session_key,
            relay_fee=req.relay_fee,
            deadline=req.deadline,
            open_sig=open_sig,
        )
        kind = "Escrow.openFromClaimFor"
    elif req.grant:
        g = GrantCode.decode(req.grant)
        if g.student.lower() != req.renter.lower():
            raise PaymentError("the grant is for another wallet than the one that signed")
        fn = escrow.openFromPoolFor(
            *_grant_args(g),
            req.provider,
            req.deposit,
            req.session_key,
            req.relay_fee,
            req.deadline,
            open_sig,
        )
        kind = "Escrow.openFromPoolFor"
    else:
        p = bytes.fromhex(req.permit[2:]) if req.permit else b""
        v, r, s = (p[64], p[:32], p[32:64]) if p else (0, b"\0" * 32, b"\0" * 32)
        fn = escrow.openFor(
            req.renter,
            req.provider,
            req.token,
            req.deposit,
            req.session_key,
            req.relay_fee,
            req.deadline,
            open_sig,
            v,
            r,
            s,
        )
        kind = "Escrow.openFor"
    receipt = send(chain.w3, relayer, fn, what=kind)
    return eip712.channel_id_for(req.renter, req.session_key), TxInfo.of("open", receipt)


def open_from_pool(
    chain: LeaseChain,
    student: LocalAccount,
    *,
    grant: GrantCode | ClaimTicket,
    provider: str,
    deposit: int,
    session_key: LocalAccount,
) -> TxInfo:
    """The student opens from the pool itself (it holds gas): ``openFromPool``, or for a
    course code ``openFromClaimFor`` with no relay fee."""
    _check_grant(chain, grant, student.address, provider)
    if isinstance(grant, ClaimTicket):
        from jupyter_gpumarket.chain.claims import open_from_claim_tx, student_open_sig

        deadline = chain.now() + PERMIT_WINDOW
        sig = student_open_sig(
            chain,
            student,
            grant,
            provider=provider,
            deposit=deposit,
            session_key=session_key.address,
            relay_fee=0,
            deadline=deadline,
        )
        fn = open_from_claim_tx(
            chain,
            grant,
            provider=provider,
            deposit=deposit,
            session_key=session_key.address,
            relay_fee=0,
            deadline=deadline,
            open_sig=sig,
        )
        return TxInfo.of("open", send(chain.w3, student, fn, what="Escrow.openFromClaimFor"))
    fn = chain.c.escrow.functions.openFromPool(
        *_grant_args(grant), provider, deposit, session_key.address
    )
    return TxInfo.of("open", send(chain.w3, student, fn, what="Escrow.openFromPool"))
