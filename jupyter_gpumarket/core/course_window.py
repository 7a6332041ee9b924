"""A course's time window: when its students' kernels may run (pure).

    "Mon 10:00-12:00 Europe/Berlin"
    "Mon,Wed 09:15-10:45 America/New_York"
    "Tue 14:00-16:00 UTC; Thu 08:00-09:30 UTC"

Days: Mon..Sun, comma-separated; times HH:MM in 24 h, the end after the start on the same
day; the zone is an IANA name (DST follows the zone: a 10:00 lecture is 10:00 local in
winter and summer). Checks take unix seconds (chain or wall time) and answer in them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jupyter_gpumarket.exceptions import ConfigError

__all__ = ["CourseWindow", "Slot", "parse_window"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MAX_TEXT = 512
_MAX_SLOTS = 32
_SLOT = re.compile(
    r"^(?P<days>[A-Za-z]{3}(?:,[A-Za-z]{3})*)\s+"
    r"(?P<h1>\d{2}):(?P<m1>\d{2})-(?P<h2>\d{2}):(?P<m2>\d{2})\s+"
    r"(?P<zone>[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2})\Z"
)
_HELP = 'a window looks like "Mon 10:00-12:00 Europe/Berlin" (several: separate with ";")'


@dataclass(frozen=True)
class Slot:
    """Weekly: ``days`` (0 = Monday) from ``start`` to ``end`` minutes after local midnight."""

    days: frozenset[int]
    start: int
    end: int
    zone: str

    def __post_init__(self) -> None:
        if not self.days or not all(0 <= d <= 6 for d in self.days):
            raise ConfigError(f"window days must be Mon..Sun: {_HELP}")
        if not 0 <= self.start < self.end <= 24 * 60:
            raise ConfigError(f"window end must be after its start, within one day: {_HELP}")

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def contains(self, ts: int) -> bool:
        local = datetime.fromtimestamp(ts, UTC).astimezone(self._tz())
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start <= minute < self.end

    def end_of(self, ts: int) -> int | None:
        """Unix seconds when the occurrence containing ``ts`` ends (None: not inside)."""
        if not self.contains(ts):
            return None
        local = datetime.fromtimestamp(ts, UTC).astimezone(self._tz())
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        end = (midnight + timedelta(minutes=self.end)).replace(tzinfo=self._tz())
        return int(end.timestamp())

    def next_start(self, ts: int) -> int:
        """Unix seconds of the next start at or after ``ts``."""
        local = datetime.fromtimestamp(ts, UTC).astimezone(self._tz())
        day0 = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        for offset in range(8):
            day = day0 + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start = (day + timedelta(minutes=self.start)).replace(tzinfo=self._tz())
            if int(start.timestamp()) >= ts:
                return int(start.timestamp())
        raise AssertionError("a weekly slot starts within 8 days")  # days is non-empty


@dataclass(frozen=True)
class CourseWindow:
    """The union of weekly slots; no slots = always open."""

    slots: tuple[Slot, ...] = ()
    text: str = ""

    def open_at(self, ts: int) -> bool:
        return not self.slots or any(s.contains(ts) for s in self.slots)

    def closes_at(self, ts: int) -> int | None:
        """When the window open at ``ts`` closes (None: always open, or closed at ``ts``).
        Back-to-back slots count as one."""
        if not self.slots:
            return None
        end: int | None = None
        t = ts
        for _ in range(len(self.slots) + 1):
            ends = [e for s in self.slots if (e := s.end_of(t)) is not None]
            if not ends:
                break
            end = max(ends)
            t = end
        return end

    def next_open(self, ts: int) -> int:
        """When the window is next open (``ts`` itself when open now)."""
        if self.open_at(ts):
            return ts
        return min(s.next_start(ts) for s in self.slots)

    def refusal(self, ts: int) -> str | None:
        """Why a kernel may not run at ``ts`` (None: it may)."""
        if self.open_at(ts):
            return None
        when = datetime.fromtimestamp(self.next_open(ts), UTC).strftime("%a %Y-%m-%d %H:%M UTC")
        return f"outside the course's time window ({self.text}); it opens next {when}"


def parse_window(text: str) -> CourseWindow:
    """Parse a window text; "" = always open. ConfigError with the expected form."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise ConfigError(f"the window is too long: {_HELP}")
    parts = [p.strip() for p in text.split(";") if p.strip()]
    if len(parts) > _MAX_SLOTS:
        raise ConfigError(f"at most {_MAX_SLOTS} slots in a window")
    slots = []
    for part in parts:
        m = _SLOT.match(part)
        if m is None:
            raise ConfigError(f"cannot read the window {part!r}: {_HELP}")
        names = m["days"].lower().split(",")
        if any(n not in DAYS for n in names):
            raise ConfigError(f"unknown day in {part!r}: days are Mon Tue Wed Thu Fri Sat Sun")
        h1, m1, h2, m2 = (int(m[k]) for k in ("h1", "m1", "h2", "m2"))
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
            raise ConfigError(f"no such time in {part!r}: {_HELP}")
        try:
            ZoneInfo(m["zone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {m['zone']!r}: use an IANA name like Europe/Berlin or UTC"
            ) from None
        slots.append(
            Slot(
                days=frozenset(DAYS.index(n) for n in names),
                start=h1 * 60 + m1,
                end=h2 * 60 + m2,
                zone=m["zone"],
            )
        )
    return CourseWindow(slots=tuple(slots), text="; ".join(parts))
