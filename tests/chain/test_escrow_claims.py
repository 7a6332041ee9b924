"""Course codes claimed before the student has a wallet: the escrow binds the first wallet the
code's claim key signs for, refuses every other afterwards, and the off-chain checks agree."""

from __future__ import annotations

import pytest
from chain_helpers import USD, advance, balance, escrow_domain, now, reverts, voucher_sig
from eth_account import Account
from pool_helpers import ZERO, create_pool

from jupyter_gpumarket.chain.client import send
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.claim_code import ClaimCode, ClaimTicket, claim, issue_claim_code
from jupyter_gpumarket.exceptions import TransactionReverted

N = eip712.SECP256K1_N


def _code(c, admin, pool_id, cap=5 * USD, provider=ZERO, expiry=None) -> ClaimCode:
    return issue_claim_code(
        admin.key,
        escrow_domain(c),
        pool_id=pool_id,
        cap=cap,
        expiry=expiry or now(c) + 3600,
        provider=provider,
    )


def _claim_grant(c, sender, ticket: ClaimTicket, claim_sig: bytes | None = None):
    fn = c.escrow.functions.claimGrant(
        *ticket.grant_args(),
        ticket.student,
        claim_sig if claim_sig is not None else bytes.fromhex(ticket.claim_sig[2:]),
    )
    return send(c.w3, sender, fn)


def _open_sig(c, student, provider, session, deposit, fee, deadline, pool_id) -> bytes:
    typed = eip712.open_channel(
        escrow_domain(c),
        renter=student.address,
        provider=provider.address,
        token=c.token.address,
        deposit=deposit,
        session_key=session.address,
        relay_fee=fee,
        deadline=deadline,
        pool_id=pool_id,
    )
    return eip712.sign_typed_data(student.key, typed)


def _open_from_claim(c, relayer, ticket, student, provider, deposit=2 * USD, fee=0, claim_sig=None):
    session = Account.create()
    deadline = now(c) + 600
    pool_id = ticket.grant_args()[0]
    sig = claim_sig if claim_sig is not None else bytes.fromhex(ticket.claim_sig[2:])
    fn = c.escrow.functions.openFromClaimFor(
        *ticket.grant_args(),
        sig,
        student.address,
        provider.address,
        deposit,
        session.address,
        fee,
        deadline,
        _open_sig(c, student, provider, session, deposit, fee, deadline, pool_id),
    )
    receipt = send(c.w3, relayer, fn)
    return eip712.channel_id_for(student.address, session.address), session, receipt


def test_first_wallet_is_bound_gaslessly_and_a_second_wallet_is_refused(contracts, accounts):
    c, provider, relayer, admin = contracts, accounts[2], accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 20 * USD)
    code = _code(c, admin, pool_id)
    first, second = Account.create(), Account.create()  # fresh wallets: no tokens, no gas
    cid, session, _ = _open_from_claim(c, relayer, code.ticket_for(first.address), first, provider)
    assert c.escrow.functions.grant_holder(code.grant_hash).call() == first.address
    assert c.escrow.functions.channels(cid).call()[0] == first.address
    assert c.escrow.functions.grant_spent(code.grant_hash).call() == 2 * USD
    assert c.w3.eth.get_balance(first.address) == 0
    # the same code, redeemed by another wallet (it holds the whole code, claim key included)
    with reverts("already redeemed by another wallet"):
        _open_from_claim(c, relayer, code.ticket_for(second.address), second, provider)
    with reverts("already redeemed by another wallet"):
        _claim_grant(c, relayer, code.ticket_for(second.address))
    # the bound wallet keeps using it; its leases settle back into the pool
    send(c.w3, provider, c.escrow.functions.settle(cid, USD, voucher_sig(c, session, cid, USD)))
    assert c.escrow.functions.grant_spent(code.grant_hash).call() == USD
    _open_from_claim(c, relayer, code.ticket_for(first.address), first, provider)
    assert balance(c, first) == 0


def test_claim_grant_binds_before_any_lease_and_replays_are_no_ops(contracts, accounts):
    c, relayer, admin = contracts, accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 5 * USD)
    code = _code(c, admin, pool_id)
    student = Account.create()
    ticket = code.ticket_for(student.address)
    receipt = _claim_grant(c, relayer, ticket)
    (event,) = c.escrow.events.GrantClaimed().process_receipt(receipt)
    assert event["args"]["student"] == student.address
    replay = _claim_grant(c, accounts[1], ticket)  # anyone replays the same claim: nothing new
    assert c.escrow.events.GrantClaimed().process_receipt(replay) == ()
    assert c.escrow.functions.grant_holder(code.grant_hash).call() == student.address


def _forged_claims(c, code: ClaimCode, student: str) -> dict[str, bytes]:
    good = bytes.fromhex(code.ticket_for(student).claim_sig[2:])
    r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    other = issue_claim_code(
        Account.create().key, escrow_domain(c), pool_id=bytes(32), cap=1, expiry=1, provider=ZERO
    )
    return {
        "random key": eip712.sign_typed_data(
            Account.create().key, claim(escrow_domain(c), grant=code.grant_hash, student=student)
        ),
        "another code's claim key": eip712.sign_typed_data(
            bytes.fromhex(other.claim_secret[2:]),
            claim(escrow_domain(c), grant=code.grant_hash, student=student),
        ),
        "claim of another grant": eip712.sign_typed_data(
            bytes.fromhex(code.claim_secret[2:]),
            claim(escrow_domain(c), grant=b"\x01" * 32, student=student),
        ),
        "claim for another student": eip712.sign_typed_data(
            bytes.fromhex(code.claim_secret[2:]),
            claim(escrow_domain(c), grant=code.grant_hash, student=Account.create().address),
        ),
        "other chain's domain": eip712.sign_typed_data(
            bytes.fromhex(code.claim_secret[2:]),
            claim(
                eip712.Domain(c.w3.eth.chain_id + 1, c.escrow.address),
                grant=code.grant_hash,
                student=student,
            ),
        ),
        "high s": r + (N - s).to_bytes(32, "big") + bytes([55 - v]),
        "v 0/1": good[:64] + bytes([v - 27]),
        "64-byte compact": good[:64],
        "zeros": bytes(65),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "random key",
        "another code's claim key",
        "claim of another grant",
        "claim for another student",
        "other chain's domain",
        "high s",
        "v 0/1",
        "64-byte compact",
        "zeros",
    ],
)
def test_forged_claims_are_refused_on_chain_and_off_chain(contracts, accounts, kind):
    c, provider, relayer, admin = contracts, accounts[2], accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 5 * USD)
    code = _code(c, admin, pool_id)
    student = Account.create()
    forged = _forged_claims(c, code, student.address)[kind]
    good = code.ticket_for(student.address)
    with pytest.raises(TransactionReverted):
        _claim_grant(c, relayer, good, forged)
    with pytest.raises(TransactionReverted):
        _open_from_claim(c, relayer, good, student, provider, claim_sig=forged)
    assert int(c.escrow.functions.grant_holder(code.grant_hash).call(), 16) == 0
    if len(forged) == 65:  # the off-chain check refuses exactly these too
        ticket = ClaimTicket(**{**good.__dict__, "claim_sig": "0x" + forged.hex()})
        assert ticket.claim_problem() is not None
    assert good.claim_problem() is None
    _claim_grant(c, relayer, good)  # and the real claim still works afterwards


def test_a_claimable_grant_is_not_a_grant_for_its_claim_key(contracts, accounts):
    """The claim key is in the mailed code: it must not be a wallet that spends the grant."""
    c, provider, relayer, admin = contracts, accounts[2], accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 5 * USD)
    code = _code(c, admin, pool_id)
    claim_key = Account.from_key(bytes.fromhex(code.claim_secret[2:]))
    session, deadline = Account.create(), now(c) + 600
    open_sig = _open_sig(c, claim_key, provider, session, USD, 0, deadline, pool_id)
    with reverts("grant not signed by the pool admin"):
        send(
            c.w3,
            relayer,
            c.escrow.functions.openFromPoolFor(
                *code.grant_args(), provider.address, USD, session.address, 0, deadline, open_sig
            ),
        )


def test_a_grant_signed_by_someone_else_is_refused(contracts, accounts):
    c, relayer, admin = contracts, accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 5 * USD)
    forged = _code(c, accounts[1], pool_id)  # not the pool's admin
    with reverts("grant not signed by the pool admin"):
        _claim_grant(c, relayer, forged.ticket_for(Account.create().address))


def test_cap_expiry_provider_and_revocation_hold_for_claimed_codes(contracts, accounts):
    c, provider, relayer, admin = contracts, accounts[2], accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 20 * USD)
    student = Account.create()
    code = _code(c, admin, pool_id, cap=3 * USD, provider=provider.address)
    ticket = code.ticket_for(student.address)
    cid, _session, _ = _open_from_claim(c, relayer, ticket, student, provider, 2 * USD)
    with reverts("grant cap exceeded"):
        _open_from_claim(c, relayer, ticket, student, provider, 2 * USD)
    with reverts("grant is for another provider"):
        _open_from_claim(c, relayer, ticket, student, relayer, USD)
    with reverts("only the pool admin can revoke"):
        send(c.w3, relayer, c.escrow.functions.revokeGrant(pool_id, code.grant_hash))
    assert c.escrow.functions.channel_revoked(cid).call() is False
    send(c.w3, admin, c.escrow.functions.revokeGrant(pool_id, code.grant_hash))
    assert c.escrow.functions.channel_revoked(cid).call() is True
    with reverts("grant revoked"):
        _open_from_claim(c, relayer, ticket, student, provider, USD)
    late = _code(c, admin, pool_id, expiry=now(c) + 60)
    advance(c, 120)
    with reverts("grant expired"):
        _open_from_claim(c, relayer, late.ticket_for(student.address), student, provider, USD)


def test_revoking_in_another_pool_does_not_touch_this_grant(contracts, accounts):
    c, provider, relayer, admin, other_admin = (
        contracts, accounts[2], accounts[3], accounts[4], accounts[1],
    )  # fmt: skip
    pool_id = create_pool(c, admin, 5 * USD)
    other_pool = create_pool(c, other_admin, 1 * USD)
    code = _code(c, admin, pool_id)
    send(c.w3, other_admin, c.escrow.functions.revokeGrant(other_pool, code.grant_hash))
    student = Account.create()
    _open_from_claim(c, relayer, code.ticket_for(student.address), student, provider, USD)


def test_gas_of_the_claim_paths(contracts, accounts, record_property):
    """Gas of the new entry points (quoted in the change's report)."""
    c, provider, relayer, admin = contracts, accounts[2], accounts[3], accounts[4]
    pool_id = create_pool(c, admin, 20 * USD)
    a, b = Account.create(), Account.create()
    first_open = _open_from_claim(
        c, relayer, _code(c, admin, pool_id).ticket_for(a.address), a, provider, USD, 1000
    )
    code = _code(c, admin, pool_id)
    claimed = _claim_grant(c, relayer, code.ticket_for(b.address))
    later_open = _open_from_claim(c, relayer, code.ticket_for(b.address), b, provider, USD, 1000)
    revoked = send(c.w3, admin, c.escrow.functions.revokeGrant(pool_id, code.grant_hash))
    # for comparison: a relayed opening under a Grant for a known wallet (openFromPoolFor)
    from chain_helpers import open_channel_sig
    from pool_helpers import grant_args

    d = Account.create()
    grant = grant_args(c, admin, pool_id, d.address, USD, now(c) + 3600)
    session, deadline = Account.create(), now(c) + 600
    sig = open_channel_sig(c, d, provider, session, USD, 1000, deadline, pool_id)
    plain = send(
        c.w3,
        relayer,
        c.escrow.functions.openFromPoolFor(
            *grant, provider.address, USD, session.address, 1000, deadline, sig
        ),
    )
    gas = {
        "openFromClaimFor (first, binds)": first_open[2]["gasUsed"],
        "claimGrant": claimed["gasUsed"],
        "openFromClaimFor (bound)": later_open[2]["gasUsed"],
        "revokeGrant": revoked["gasUsed"],
        "openFromPoolFor (Grant, for comparison)": plain["gasUsed"],
    }
    print(gas)
    for name, used in gas.items():
        record_property(name, used)
    assert gas["openFromClaimFor (bound)"] < gas["openFromClaimFor (first, binds)"]


def test_only_the_pool_admin_publishes_its_terms(contracts, accounts):
    from jupyter_gpumarket.chain.course import pool_terms

    c, admin = contracts, accounts[4]
    pool_id = create_pool(c, admin, USD)
    assert pool_terms(c, pool_id).window == ""
    with reverts("only the pool admin sets its terms"):
        send(c.w3, accounts[1], c.escrow.functions.setPoolTerms(pool_id, '{"window":""}'))
    window = "Mon 10:00-12:00 Europe/Berlin"
    send(c.w3, admin, c.escrow.functions.setPoolTerms(pool_id, '{"window":"' + window + '"}'))
    assert pool_terms(c, pool_id).window == window
    # another pool's admin publishing for this pool id is refused; the latest terms count
    other = create_pool(c, accounts[1], USD)
    send(c.w3, accounts[1], c.escrow.functions.setPoolTerms(other, '{"window":""}'))
    assert pool_terms(c, pool_id).window == window
