"""Courses on chain, educator side: create + fund a pool, issue course codes, fund, revoke,
close and report. Course state (names, emails, claim key addresses) lives in the educator's
``$GPUMARKET_HOME/courses/NAME.json``; money state is read from the chain every time.

Blocking (web3). The student side (``join``) is in market/course_join.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_gpumarket import statefile
from jupyter_gpumarket.chain.client import Contracts, call, send
from jupyter_gpumarket.chain.errors import rpc_errors
from jupyter_gpumarket.chain.paths import gpumarket_home
from jupyter_gpumarket.core import eip712
from jupyter_gpumarket.core.claim_code import issue_claim_code
from jupyter_gpumarket.core.course import (
    Course,
    ReportRow,
    StudentGrant,
    Terms,
    check_name,
    course_terms,
    parse_terms,
)
from jupyter_gpumarket.exceptions import ConfigError, PaymentError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "close_course",
    "course_path",
    "course_report",
    "create_course",
    "fund_course",
    "issue_codes",
    "load_course",
    "pool_terms",
    "revoke_student",
    "save_course",
]

ZERO = "0x" + "00" * 20


def course_path(name: str) -> Path:
    return gpumarket_home() / "courses" / f"{check_name(name)}.json"


def load_course(name: str) -> Course:
    path = course_path(name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no course {name!r} in {path.parent}: `gpumarket course create {name} ...` makes "
            "it (GPUMARKET_HOME selects whose courses these are)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the course file {path} is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the course file {path} is damaged")
    return Course.from_json(data)


def save_course(course: Course, *, new: bool = False) -> Path:
    path = course_path(course.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        statefile.write_json(path, course.to_json(), exclusive=new)
    except FileExistsError:
        raise ConfigError(
            f"a course {course.name!r} exists already ({path}): pick another name"
        ) from None
    return path


def _pool_id(course: Course) -> bytes:
    return bytes.fromhex(course.pool_id[2:])


def _require_admin(c: Contracts, course: Course, admin: LocalAccount) -> None:
    if c.escrow.address.lower() != course.escrow.lower():
        raise ConfigError(
            f"course {course.name} is on escrow {course.escrow} ({course.network}), not the "
            f"selected network's {c.escrow.address}: pass --network {course.network}"
        )
    if admin.address.lower() != course.admin.lower():
        raise ConfigError(
            f"course {course.name} is administered by {course.admin}, not this wallet "
            f"{admin.address}: use that wallet (GPUMARKET_WALLET)"
        )


def create_course(
    c: Contracts,
    admin: LocalAccount,
    *,
    name: str,
    network: str,
    budget: int,
    per_student: int,
    expires: int,
    providers: tuple[str, ...] = (),
    gpu: str = "",
    max_price: int = 0,
    window: str = "",
) -> Course:
    """Create and fund the pool, publish the course terms, write the course file."""
    from web3.logs import DISCARD

    check_name(name)
    if course_path(name).exists():
        raise ConfigError(f"a course {name!r} exists already: pick another name")
    if per_student <= 0 or budget <= 0:
        raise ConfigError("--budget and --per-student must be above 0")
    terms = course_terms(window=window, gpu=gpu, max_price=max_price, providers=providers)
    send(c.w3, admin, c.token.functions.approve(c.escrow.address, budget), what="approve")
    receipt = send(
        c.w3, admin, c.escrow.functions.createPool(c.token.address, budget), what="createPool"
    )
    (event,) = c.escrow.events.PoolCreated().process_receipt(receipt, errors=DISCARD)
    pool_id = bytes(event["args"]["pool_id"])
    send(c.w3, admin, c.escrow.functions.setPoolTerms(pool_id, terms), what="setPoolTerms")
    course = Course(
        name=name,
        network=network,
        chain_id=c.w3.eth.chain_id,
        escrow=c.escrow.address,
        pool_id="0x" + pool_id.hex(),
        admin=admin.address,
        per_student=per_student,
        expires=expires,
        providers=providers,
        gpu=gpu,
        max_price=max_price,
        window=window,
    )
    save_course(course, new=True)
    return course


def issue_codes(
    c: Contracts, admin: LocalAccount, course: Course, roster: list[tuple[str, str]]
) -> tuple[Course, list[tuple[str, str, str]]]:
    """One course code per roster row (a student with a live code keeps it: a row for them is
    refused, so a code is never issued twice by accident; after `revoke` a new one is
    issued). Returns (course, rows of (student, email, code)); the course file gains the claim
    keys' addresses only."""
    _require_admin(c, course, admin)
    issued = {(s.email or s.student).lower() for s in course.students if not s.revoked}
    again = [e or s for s, e in roster if (e or s).lower() in issued]
    if again:
        raise ConfigError(
            f"{len(again)} roster rows already have codes (e.g. {again[0]!r}): remove them from "
            "the roster, or `gpumarket course revoke` theirs first (a lost or leaked code)"
        )
    provider = course.providers[0] if len(course.providers) == 1 else ZERO
    domain = eip712.Domain(course.chain_id, course.escrow)
    out: list[tuple[str, str, str]] = []
    grants: list[StudentGrant] = []
    for student, email in roster:
        code = issue_claim_code(
            admin.key,
            domain,
            pool_id=_pool_id(course),
            cap=course.per_student,
            expiry=course.expires,
            provider=provider,
        )
        grants.append(
            StudentGrant(
                student=student,
                email=email,
                claim_key=code.claim_key,
                grant_hash="0x" + code.grant_hash.hex(),
                cap=code.cap,
                expiry=code.expiry,
                provider=code.provider,
            )
        )
        out.append((student, email, code.encode()))
    course = replace(course, students=course.students + tuple(grants))
    save_course(course)
    return course, out


def fund_course(c: Contracts, admin: LocalAccount, course: Course, amount: int) -> int:
    """Add ``amount`` to the pool; the pool's free balance after."""
    _require_admin(c, course, admin)
    send(c.w3, admin, c.token.functions.approve(c.escrow.address, amount), what="approve")
    send(c.w3, admin, c.escrow.functions.fundPool(_pool_id(course), amount), what="fundPool")
    return pool_balance(c, course)


def pool_balance(c: Contracts, course: Course) -> int:
    _admin, _token, balance = call(c.escrow.functions.pools(_pool_id(course)))
    return int(balance)


def revoke_student(c: Contracts, admin: LocalAccount, course: Course, who: str) -> Course:
    """Revoke one student's grant on chain: no new lease opens from it, and providers stop
    its running kernels at their next voucher check."""
    _require_admin(c, course, admin)
    s = course.student(who)
    grant = bytes.fromhex(s.grant_hash[2:])
    send(c.w3, admin, c.escrow.functions.revokeGrant(_pool_id(course), grant), what="revokeGrant")
    course = replace(
        course,
        students=tuple(replace(x, revoked=True) if x is s else x for x in course.students),
    )
    save_course(course)
    return course


def _open_channels(c: Contracts, course: Course) -> list[bytes]:
    from jupyter_gpumarket.chain.escrow import EscrowClient

    escrow = EscrowClient(c)
    return [
        cid
        for cid, _grant, _block in _pool_channels(c, course)
        if escrow.channel(cid).state in ("open", "closing")
    ]


def close_course(
    c: Contracts,
    admin: LocalAccount,
    course: Course,
    *,
    wait: float = 0.0,
    progress: Callable[[str], None] = print,
) -> tuple[Course, int, int]:
    """Revoke every grant (running kernels stop at their next voucher and their providers
    settle, which returns the unspent deposits to the pool), wait up to ``wait`` seconds for
    the open leases to settle, then withdraw the pool's free balance to the educator.
    Returns (course, withdrawn, still held in open channels)."""
    _require_admin(c, course, admin)
    pool_id = _pool_id(course)
    for s in course.students:
        grant = bytes.fromhex(s.grant_hash[2:])
        if not call(c.escrow.functions.grant_revoked(pool_id, grant)):
            send(c.w3, admin, c.escrow.functions.revokeGrant(pool_id, grant), what="revokeGrant")
    deadline = time.monotonic() + wait
    open_now = _open_channels(c, course)
    while open_now and time.monotonic() < deadline:
        progress(f"waiting for {len(open_now)} running lease(s) to settle …")
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        open_now = _open_channels(c, course)
    withdrawn = pool_balance(c, course)
    if withdrawn:
        send(c.w3, admin, c.escrow.functions.withdrawPool(pool_id, withdrawn), what="withdrawPool")
    held = 0
    if open_now:
        from jupyter_gpumarket.chain.escrow import EscrowClient

        escrow = EscrowClient(c)
        for cid in open_now:
            info = escrow.channel(cid)
            held += info.deposit - info.redeemed
    students = tuple(replace(s, revoked=True) for s in course.students)
    course = replace(course, students=students, closed=not open_now)
    save_course(course)
    return course, withdrawn, held


def _pool_channels(c: Contracts, course: Course) -> list[tuple[bytes, bytes, int]]:
    """(channel id, grant hash, block) of every channel the pool paid, from its events."""
    with rpc_errors("eth_getLogs (Escrow PoolChannelOpened)"):
        logs = c.escrow.events.PoolChannelOpened.get_logs(
            argument_filters={"pool_id": _pool_id(course)}, from_block=0
        )
    return [
        (bytes(e["args"]["channel_id"]), bytes(e["args"]["grant_hash"]), int(e["blockNumber"]))
        for e in logs
    ]


def _closed_blocks(c: Contracts, cids: list[bytes]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    if not cids:
        return out
    with rpc_errors("eth_getLogs (Escrow Settled/Withdrawn)"):
        for name in ("Settled", "Withdrawn"):
            event = getattr(c.escrow.events, name)
            for e in event.get_logs(argument_filters={"channel_id": cids}, from_block=0):
                out[bytes(e["args"]["channel_id"])] = int(e["blockNumber"])
    return out


def course_report(c: Contracts, course: Course) -> list[ReportRow]:
    """Per student, from the chain: the bound wallet, the grant's spent (paid + held in its
    open channels: ``grant_spent``), what is left of the cap, leases and their seconds
    (open to close, or to now for a running one)."""
    channels = _pool_channels(c, course)
    closed = _closed_blocks(c, [cid for cid, _, _ in channels])
    stamp_cache: dict[int, int] = {}

    def stamp(block: int | str) -> int:
        key = block if isinstance(block, int) else -1
        if key not in stamp_cache:
            stamp_cache[key] = int(c.w3.eth.get_block(block)["timestamp"])
        return stamp_cache[key]

    now = stamp("latest")
    rows = []
    esc = c.escrow.functions
    for s in course.students:
        gh = bytes.fromhex(s.grant_hash[2:])
        mine = [(cid, block) for cid, g, block in channels if g == gh]
        seconds = sum(
            (stamp(closed[cid]) if cid in closed else now) - stamp(block) for cid, block in mine
        )
        holder = str(call(esc.grant_holder(gh), what="Escrow.grant_holder"))
        spent = int(call(esc.grant_spent(gh), what="Escrow.grant_spent"))
        rows.append(
            ReportRow(
                student=s.student,
                address="" if int(holder, 16) == 0 else holder,
                cap=s.cap,
                spent=spent,
                remaining=max(0, s.cap - spent),
                leases=len(mine),
                seconds=seconds,
            )
        )
    return rows


def pool_terms(c: Contracts, pool_id: bytes) -> Terms:
    """The latest PoolTerms the pool's admin published (empty terms when none)."""
    admin, _token, _balance = call(c.escrow.functions.pools(pool_id), what="Escrow.pools")
    if int(admin, 16) == 0:
        raise PaymentError(f"no pool 0x{pool_id.hex()} on this network")
    with rpc_errors("eth_getLogs (Escrow PoolTerms)"):
        logs = c.escrow.events.PoolTerms.get_logs(
            argument_filters={"pool_id": pool_id}, from_block=0
        )
    if not logs:
        return Terms()
    return parse_terms(str(logs[-1]["args"]["terms"]))


def report_json(rows: list[ReportRow]) -> list[dict[str, Any]]:
    return [dict(zip(("student", "address", "cap", "spent", "remaining", "leases", "seconds"),
                     r.as_list(), strict=True)) for r in rows]  # fmt: skip
