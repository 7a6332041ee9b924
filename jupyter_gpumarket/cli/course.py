"""`gpumarket course create | codes | fund | revoke | close | report | join`.

Educator commands use the educator's wallet (GPUMARKET_WALLET, GPUMARKET_WALLET_PASSWORD) and
keep the course file in $GPUMARKET_HOME/courses/; `join` is the student's: it creates a
wallet when there is none and binds it to the code.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from jupyter_gpumarket.cli import argtypes
from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["register"]

MAX_ROSTER = 1 << 20


def _date(text: str) -> int:
    """YYYY-MM-DD: codes work through the end of that day (UTC)."""
    try:
        day = dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-31") from None
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp())


def _addresses(text: str) -> tuple[str, ...]:
    from eth_utils import is_address, to_checksum_address

    out = tuple(p.strip() for p in str(text).split(",") if p.strip())
    bad = [p for p in out if not is_address(p)]
    if bad or not out or len(out) > 8:
        raise argparse.ArgumentTypeError(
            f"give 1-8 provider addresses separated by commas: {text!r}"
        )
    return tuple(to_checksum_address(p) for p in out)


def _window(text: str) -> str:
    from jupyter_gpumarket.core.course_window import parse_window

    try:
        return parse_window(text).text
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[Any]) -> None:
    course = sub.add_parser("course", help="courses: fund GPU time for students with codes")
    csub = course.add_subparsers(dest="course_command", metavar="COMMAND", required=True)
    c = csub.add_parser("create", help="create and fund a course's credit pool")
    c.add_argument("name")
    c.add_argument("--budget", required=True, type=argtypes.token_amount, help="in tokens")
    c.add_argument("--per-student", required=True, type=argtypes.token_amount, help="cap, tokens")
    c.add_argument("--expires", required=True, type=_date, help="YYYY-MM-DD (last day, UTC)")
    c.add_argument("--providers", type=_addresses, default=(), help="ADDR,... (default: any)")
    c.add_argument("--gpu", default="", help="GPU class the course uses (e.g. A100)")
    c.add_argument(
        "--max-price",
        type=argtypes.int_in(0, 2**88 - 1, "base units per hour, 0 (any) to 2**88-1"),
        default=0,
        help="base units per hour (0: any)",
    )
    c.add_argument("--window", type=_window, default="", help='"Mon 10:00-12:00 Europe/Berlin"')
    k = csub.add_parser("codes", help="one course code per roster row, into a CSV")
    k.add_argument("name")
    k.add_argument("--students", required=True, type=Path, help="roster CSV (student/email)")
    k.add_argument("--out", required=True, type=Path, help="CSV: student, email, code")
    f = csub.add_parser("fund", help="add AMOUNT tokens to the course's pool")
    f.add_argument("name")
    f.add_argument("amount", type=argtypes.token_amount)
    r = csub.add_parser("revoke", help="stop one student's credit (running kernels stop)")
    r.add_argument("name")
    r.add_argument("student", help="roster name or email")
    x = csub.add_parser("close", help="revoke all codes, return the unspent money to you")
    x.add_argument("name")
    x.add_argument(
        "--wait",
        type=argtypes.seconds(zero_ok=True, high=86_400),
        default=120.0,
        help="seconds to wait for running leases to settle (120)",
    )
    p = csub.add_parser("report", help="per student: cap, spent, remaining, leases, seconds")
    p.add_argument("name")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    j = csub.add_parser("join", help="student: bind your wallet to a course code")
    j.add_argument("code")
    for q in (c, k, f, r, x, p, j):
        q.add_argument("--network", help="profile name or JSON path (default: the active one)")
    c.set_defaults(func=_create)
    k.set_defaults(func=_codes)
    f.set_defaults(func=_fund)
    r.set_defaults(func=_revoke)
    x.set_defaults(func=_close)
    p.set_defaults(func=_report)
    j.set_defaults(func=_join)


def _setup(args: argparse.Namespace, *, wallet: bool = True) -> tuple[Any, Any, Any]:
    from jupyter_gpumarket.chain.client import Contracts, connect
    from jupyter_gpumarket.chain.keystore import load_account
    from jupyter_gpumarket.chain.profiles import active_profile, load_profile
    from jupyter_gpumarket.cli.wallet import read_password

    profile = load_profile(args.network) if args.network else active_profile()
    c = Contracts.bound(connect(profile.rpc_url), *profile.require_contracts())
    return profile, c, load_account(read_password()) if wallet else None


def _fmt(profile: Any, amount: int) -> str:
    from jupyter_gpumarket.core.money import format_amount

    return format_amount(amount, profile.token_decimals, profile.token_symbol)


def _create(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.course import create_course

    profile, c, admin = _setup(args)
    budget = argtypes.base_units(args.budget, profile.token_decimals, "--budget")
    per = argtypes.base_units(args.per_student, profile.token_decimals, "--per-student")
    course = create_course(
        c,
        admin,
        name=args.name,
        network=args.network or profile.name,
        budget=budget,
        per_student=per,
        expires=args.expires,
        providers=args.providers,
        gpu=args.gpu,
        max_price=args.max_price,
        window=args.window,
    )
    print(f"course {course.name}: pool {course.pool_id}, {_fmt(profile, budget)}")
    print(f"codes: gpumarket course codes {course.name} --students roster.csv --out codes.csv")
    return 0


def _codes(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.course import issue_codes, load_course
    from jupyter_gpumarket.core.course import parse_roster

    course = load_course(args.name)
    try:
        with args.students.open("rb") as fh:
            raw = fh.read(MAX_ROSTER + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the roster {args.students}: {exc}") from None
    roster = parse_roster(raw.decode("utf-8-sig", errors="replace"))
    if args.out.exists():
        raise ConfigError(f"{args.out} exists: codes are never overwritten; pick another --out")
    _profile, c, admin = _setup(args)
    course, rows = issue_codes(c, admin, course, roster)
    from jupyter_gpumarket import statefile

    out = _rows_csv(rows)
    statefile.write_text(args.out, out, exclusive=True)
    print(f"{len(rows)} codes written to {args.out} (mode 0600): mail each student its row")
    return 0


def _rows_csv(rows: list[tuple[str, str, str]]) -> str:
    import io

    from jupyter_gpumarket.core.course import _csv_safe

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("student", "email", "code"))
    for row in rows:
        w.writerow([_csv_safe(v) for v in row])
    return buf.getvalue()


def _fund(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.course import fund_course, load_course

    course = load_course(args.name)
    profile, c, admin = _setup(args)
    amount = argtypes.base_units(args.amount, profile.token_decimals, "amount")
    balance = fund_course(c, admin, course, amount)
    print(f"course {course.name}: pool balance {_fmt(profile, balance)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.course import load_course, revoke_student

    course = load_course(args.name)
    _profile, c, admin = _setup(args)
    revoke_student(c, admin, course, args.student)
    print(f"revoked {args.student}: running kernels stop at their next voucher check")
    return 0


def _close(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.course import close_course, load_course

    course = load_course(args.name)
    profile, c, admin = _setup(args)
    course, withdrawn, held = close_course(c, admin, course, wait=max(0.0, args.wait))
    print(f"course {course.name}: {_fmt(profile, withdrawn)} returned to {admin.address}")
    if held:
        print(
            f"{_fmt(profile, held)} is still held by running leases; run `gpumarket course "
            f"close {course.name}` again once they settled"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.chain.course import course_report, load_course, report_json
    from jupyter_gpumarket.core.course import report_csv

    course = load_course(args.name)
    profile, c, _ = _setup(args, wallet=False)
    rows = course_report(c, course)
    if args.json:
        print(json.dumps(report_json(rows), indent=1))
    elif args.csv:
        sys.stdout.write(report_csv(rows))
    else:
        print(f"{'student':24} {'cap':>14} {'spent':>14} {'remaining':>14} {'leases':>6} seconds")
        for r in rows:
            print(
                f"{r.student[:24]:24} {_fmt(profile, r.cap):>14} {_fmt(profile, r.spent):>14} "
                f"{_fmt(profile, r.remaining):>14} {r.leases:>6} {r.seconds}"
            )
    return 0


def _join(args: argparse.Namespace) -> int:
    from jupyter_gpumarket.market.course_join import join

    result = join(args.code, network=args.network)
    print(f"wallet {result.wallet}{' (new)' if result.created else ''} joined course pool")
    print(f"  credit: {result.remaining} of {result.cap} base units left")
    if result.window:
        print(f"  window: {result.window}")
    print("  " + result.binding)
    if result.offers:
        print("offers this course allows:")
        for o in result.offers:
            print(f"  #{o['offer_id']:<5} {o['gpu']:<28} {o['price_per_hour']} /h  {o['provider']}")
    else:
        print("no offer this course allows is online right now")
    print("start a kernel: GPUMARKET_GRANT=<your code> with the 'Python 3 (GPU Market)' kernel")
    return 0
