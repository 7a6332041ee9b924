"""A course as an educator manages it (pure): its state file, roster, terms and report.

The state file (``$GPUMARKET_HOME/courses/NAME.json``) keeps what the educator needs to find
the money on chain again: the network, the pool, and per student the claim key's ADDRESS and
the grant's fields (never a claim key: a lost code is reissued, not recovered). Money state
(pool balance, what each grant spent, who redeemed it) is read from the chain.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_gpumarket.core.course_window import parse_window
from jupyter_gpumarket.exceptions import ConfigError

__all__ = [
    "REPORT_COLUMNS",
    "Course",
    "ReportRow",
    "StudentGrant",
    "course_kernel_budget",
    "course_terms",
    "parse_roster",
    "parse_terms",
    "report_csv",
]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
MAX_ROSTER_BYTES = 1 << 20
MAX_STUDENTS = 5000
MAX_TERMS = 512  # the escrow's PoolTerms string
KERNEL_HOURS = 3  # one kernel's slice of a student's course credit, in hours at its price
REPORT_COLUMNS = ("student", "address", "cap", "spent", "remaining", "leases", "seconds")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(
            f"course name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit)"
        )
    return name


@dataclass(frozen=True)
class StudentGrant:
    """One student's code as issued: the grant's fields, not its claim key."""

    student: str
    email: str
    claim_key: str
    grant_hash: str
    cap: int
    expiry: int
    provider: str
    revoked: bool = False

    def __post_init__(self) -> None:
        ok = (
            isinstance(self.student, str)
            and 0 < len(self.student) <= 200
            and isinstance(self.email, str)
            and len(self.email) <= 200
            and isinstance(self.claim_key, str)
            and bool(_ADDR.match(self.claim_key))
            and isinstance(self.grant_hash, str)
            and bool(_B32.match(self.grant_hash))
            and isinstance(self.provider, str)
            and bool(_ADDR.match(self.provider))
            and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in (self.cap, self.expiry)
            )
            and isinstance(self.revoked, bool)
        )
        if not ok:
            raise ConfigError(f"course state: student entry {self.student!r} is damaged")


@dataclass(frozen=True)
class Course:
    name: str
    network: str
    chain_id: int
    escrow: str
    pool_id: str
    admin: str
    per_student: int
    expires: int  # unix seconds: the codes' expiry
    providers: tuple[str, ...] = ()
    gpu: str = ""
    max_price: int = 0  # base units per hour; 0 = any
    window: str = ""
    students: tuple[StudentGrant, ...] = field(default=())
    closed: bool = False

    def __post_init__(self) -> None:
        check_name(self.name)
        parse_window(self.window)
        if not (_B32.match(self.pool_id) and _ADDR.match(self.escrow) and _ADDR.match(self.admin)):
            raise ConfigError(f"course {self.name}: the state file is damaged (pool/escrow/admin)")
        if not all(isinstance(p, str) and _ADDR.match(p) for p in self.providers):
            raise ConfigError(f"course {self.name}: a provider is not an address")

    def student(self, who: str) -> StudentGrant:
        """By roster name, email, or claim key / student address."""
        found = [s for s in self.students if who in (s.student, s.email) and who]
        if len(found) > 1:  # reissued after a revocation: the live code
            found = [s for s in found if not s.revoked] or found[-1:]
        if not found:
            raise ConfigError(
                f"no student {who!r} in course {self.name}: `gpumarket course report "
                f"{self.name}` lists them"
            )
        if len(found) > 1:
            raise ConfigError(f"{who!r} names several students of {self.name}: use the email")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["providers"] = list(self.providers)
        data["students"] = [asdict(s) for s in self.students]
        return data

    @classmethod
    def from_json(cls, data: Any) -> Course:
        try:
            students = tuple(StudentGrant(**s) for s in data.pop("students", []))
            providers = tuple(data.pop("providers", []))
            return cls(**data, providers=providers, students=students)
        except (TypeError, AttributeError):
            raise ConfigError("the course state file is damaged or from a newer version") from None


def parse_roster(text: str) -> list[tuple[str, str]]:
    """(student, email) per CSV row with a ``student`` or an ``email`` column (or both)."""
    if len(text.encode()) > MAX_ROSTER_BYTES:
        raise ConfigError("the roster is over 1 MiB: split it")
    reader = csv.DictReader(io.StringIO(text))
    columns = {(c or "").strip().lower() for c in reader.fieldnames or []}
    if not columns & {"student", "email"}:
        raise ConfigError("the roster needs a `student` or an `email` column (CSV with a header)")
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        student, email = row.get("student", ""), row.get("email", "")
        if not student and not email:
            continue
        student = student or email
        if len(student) > 200 or len(email) > 200 or any(ord(ch) < 32 for ch in student + email):
            raise ConfigError(f"roster line {n}: a name or email is too long or has control chars")
        key = (email or student).lower()
        if key in seen:
            raise ConfigError(f"roster line {n}: {key!r} appears twice")
        seen.add(key)
        rows.append((student, email))
        if len(rows) > MAX_STUDENTS:
            raise ConfigError(f"the roster has more than {MAX_STUDENTS} students")
    if not rows:
        raise ConfigError("the roster lists no students")
    return rows


def course_terms(*, window: str, gpu: str, max_price: int, providers: tuple[str, ...]) -> str:
    """The terms published on chain with the pool (PoolTerms), as compact JSON."""
    text = json.dumps(
        {"window": window, "gpu": gpu, "max_price": max_price, "providers": list(providers)},
        separators=(",", ":"),
    )
    if len(text) > MAX_TERMS:
        raise ConfigError("the course terms are too long: list fewer providers")
    return text


@dataclass(frozen=True)
class Terms:
    window: str = ""
    gpu: str = ""
    max_price: int = 0
    providers: tuple[str, ...] = ()


def parse_terms(text: str) -> Terms:
    """Published terms (hostile text: a pool admin wrote it); bad fields are ConfigError."""
    if len(text) > MAX_TERMS:
        raise ConfigError("the course terms on chain are too long")
    try:
        obj = json.loads(text) if text else {}
    except ValueError:
        raise ConfigError("the course terms on chain are not JSON") from None
    if not isinstance(obj, dict):
        raise ConfigError("the course terms on chain are not an object")
    window, gpu = obj.get("window", ""), obj.get("gpu", "")
    price, providers = obj.get("max_price", 0), obj.get("providers", [])
    if not (
        isinstance(window, str)
        and isinstance(gpu, str)
        and isinstance(price, int)
        and not isinstance(price, bool)
        and price >= 0
        and isinstance(providers, list)
        and all(isinstance(p, str) and _ADDR.match(p) for p in providers)
    ):
        raise ConfigError("the course terms on chain are damaged")
    parse_window(window)
    return Terms(window=window, gpu=gpu, max_price=price, providers=tuple(providers))


@dataclass(frozen=True)
class ReportRow:
    student: str
    address: str  # the wallet bound on chain ("" = not redeemed yet)
    cap: int
    spent: int  # the grant's grant_spent on chain: paid + held in its open channels
    remaining: int  # cap - spent
    leases: int
    seconds: int

    def as_list(self) -> list[Any]:
        return [getattr(self, c) for c in REPORT_COLUMNS]


def report_csv(rows: list[ReportRow]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)
    for r in rows:
        w.writerow([_csv_safe(v) for v in r.as_list()])
    return out.getvalue()


def _csv_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (roster names are the students')."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def course_kernel_budget(room: int, price_per_hour: int) -> int:
    """What one kernel of a student takes from the ``room`` left of the course credit: a
    slice of KERNEL_HOURS at the offer's price, so a second kernel can run beside it (the
    contract's per-grant cap still bounds their sum); all of it when less is left."""
    if room <= 0 or price_per_hour <= 0:
        return max(0, room)
    return min(room, price_per_hour * KERNEL_HOURS)
