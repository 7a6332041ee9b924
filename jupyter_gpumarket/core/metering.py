"""Pure billing: which seconds of a lease are charged, and what the renter signs when.

**What is billed.** A lease is billed for the seconds its kernel is *ready*: from the first
``kernel_info_reply`` of a kernel generation until that kernel stops (exit, restart, shutdown).
Nothing before the first ready is billed — rent, channel opening, the file push and a launch
that fails never cost anything — and nothing after the stop is billed (the file pull at
shutdown runs after the kernel stopped).

**Restarts are not billed.** Between a kernel's stop and the next generation's ready the
clock is paused. The GPU stays reserved for the lease during a restart, so the provider could
claim those seconds; we do not bill them because (1) the project promises that a renter never
pays for a kernel that is not running, (2) a restart re-pushes the notebook's files and file
sync is never charged, and keeping the clock running would charge exactly that, and (3) a
restart takes seconds, so the provider's loss is small and bounded by the kernel's start time,
which is the provider's own machine. A kernel that is running while the renter's link is down
is still billed: it is running (and its output is buffered for the renter).

**Rounding.** ``billed_seconds`` is the floor of the running time and ``amount_due`` rounds down
(``core.money.cost``, the same rule as ``Registry.cost``): the renter is never charged for time
it did not use, and the charge for T seconds is below ``price * T / 3600`` by less than one
second of price plus one base unit.

**Vouchers in arrears, one interval of credit.** Every ``interval`` seconds (default 15) the
renter signs the cumulative amount due for the seconds billed so far (``lead_seconds=0``). The
provider extends one interval of credit (``core.voucher_check``), so its exposure is at most one
interval, and the last voucher at shutdown is exactly the amount due: the provider can settle
``price * T`` and nothing more. Prepaying (``lead_seconds=interval``) would move the one interval
of risk from the provider to the renter: the provider would hold a voucher for up to one
interval that was never used, and "settle exactly ``price * T``" would depend on its honesty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from jupyter_gpumarket.core.money import cost
from jupyter_gpumarket.exceptions import PaymentError

__all__ = [
    "DEFAULT_INTERVAL",
    "BillingClock",
    "ClockState",
    "Tick",
    "VoucherSchedule",
    "amount_due",
    "initial_deposit",
]

DEFAULT_INTERVAL = 15
WARN_PERCENT = 80


def _int(name: str, value: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PaymentError(f"{name} must be an int >= {minimum} (token base units), got {value!r}")
    return value


def amount_due(price_per_hour: int, billed_seconds: int) -> int:
    """What ``billed_seconds`` of a lease at ``price_per_hour`` cost, rounded down."""
    return cost(price_per_hour, billed_seconds)


def initial_deposit(budget: int, price_per_hour: int, initial_hours: float = 1.0) -> int:
    """The deposit to open a channel with: ``min(budget, price_per_hour * initial_hours)``."""
    _int("budget", budget, 1)
    _int("price_per_hour", price_per_hour, 1)
    if not initial_hours > 0:
        raise PaymentError(f"initial_hours must be positive, got {initial_hours!r}")
    return max(1, min(budget, math.ceil(price_per_hour * initial_hours)))


# ---------------------------------------------------------------------------- billing clock
#
#   state     event      -> next state   effect
#   WAITING   READY      -> BILLING      start counting (first kernel_info_reply of a kernel)
#   WAITING   STOPPED    -> WAITING      a kernel that never got ready: nothing to count
#   BILLING   READY      -> BILLING      duplicate ready of the same kernel: ignored
#   BILLING   STOPPED    -> WAITING      stop counting (kernel exit, restart, shutdown)
#   WAITING   ENDED      -> ENDED        the lease is over; the total is final
#   BILLING   ENDED      -> ENDED        stop counting, then final
#   ENDED     any        -> ENDED        late news changes nothing


class ClockState(Enum):
    WAITING = "waiting"
    BILLING = "billing"
    ENDED = "ended"


_CLOCK: dict[tuple[ClockState, str], ClockState] = {
    (ClockState.WAITING, "ready"): ClockState.BILLING,
    (ClockState.WAITING, "stopped"): ClockState.WAITING,
    (ClockState.BILLING, "ready"): ClockState.BILLING,
    (ClockState.BILLING, "stopped"): ClockState.WAITING,
    (ClockState.WAITING, "ended"): ClockState.ENDED,
    (ClockState.BILLING, "ended"): ClockState.ENDED,
    (ClockState.ENDED, "ready"): ClockState.ENDED,
    (ClockState.ENDED, "stopped"): ClockState.ENDED,
    (ClockState.ENDED, "ended"): ClockState.ENDED,
}


class BillingClock:
    """Counts the seconds a lease's kernels were ready. Times are monotonic seconds (floats)
    passed in by the caller (``time.monotonic()`` in the shell, plain numbers in tests)."""

    def __init__(self, carried: float = 0.0) -> None:
        """``carried``: seconds already billed before this clock (a re-adopted lease)."""
        if not isinstance(carried, int | float) or not 0 <= carried < math.inf:
            raise PaymentError(f"carried must be a non-negative number of seconds: {carried!r}")
        self.state = ClockState.WAITING
        self._total = float(carried)
        self._since: float | None = None
        self._last = -math.inf

    def _event(self, event: str, now: float) -> None:
        if not isinstance(now, int | float) or math.isnan(now):
            raise PaymentError(f"now must be a number of seconds, got {now!r}")
        if now < self._last:
            raise PaymentError(f"time went backwards ({now} < {self._last}); use a monotonic clock")
        self._last = now
        new = _CLOCK[(self.state, event)]
        if self.state is ClockState.BILLING and new is not ClockState.BILLING:
            assert self._since is not None
            self._total += now - self._since
            self._since = None
        elif self.state is not ClockState.BILLING and new is ClockState.BILLING:
            self._since = now
        self.state = new

    def kernel_ready(self, now: float) -> None:
        """The kernel answered its first ``kernel_info_request``: billing runs from ``now``."""
        self._event("ready", now)

    def kernel_stopped(self, now: float) -> None:
        """The kernel exited or is being restarted: billing pauses at ``now``."""
        self._event("stopped", now)

    def end(self, now: float) -> None:
        """The lease is over (shutdown, provider stop): the total is final."""
        self._event("ended", now)

    def running_seconds(self, now: float) -> float:
        """Exact billed running time at ``now`` (seconds, float)."""
        if self._since is None:
            return self._total
        return self._total + max(0.0, now - self._since)

    def billed_seconds(self, now: float) -> int:
        """Whole seconds billed at ``now`` (rounded down)."""
        return math.floor(self.running_seconds(now))


# ---------------------------------------------------------------------------- voucher schedule


@dataclass(frozen=True)
class Tick:
    """What the renter does at one tick of its voucher loop.

    ``amount``: the cumulative amount to sign and send now (None: nothing new to sign).
    ``warn``: a message for the notebook, set once when spending crosses 80 % of the limit.
    ``stop``: the limit is reached before the next tick: stop the kernel cleanly now (the
    message says why); the amount signed never exceeds the limit.
    ``top_up``: add this much to the channel's deposit (auto top-up only), then call
    ``VoucherSchedule.deposit_added``.
    """

    amount: int | None
    warn: str | None = None
    stop: str | None = None
    top_up: int = 0

    def __post_init__(self) -> None:
        if self.amount is not None:
            _int("amount", self.amount)
        _int("top_up", self.top_up)


class VoucherSchedule:
    """The renter's side of metering: what to sign at each tick, when to warn, top up, stop.

    The limit on what is ever signed is ``min(budget, deposit)``. With ``auto_top_up`` the
    deposit grows (by ``top_up_step``, default the opening deposit) up to the budget when the
    amount due gets within ``top_up_margin`` intervals of it; without, the deposit is the limit.
    """

    def __init__(
        self,
        *,
        price_per_hour: int,
        deposit: int,
        budget: int,
        interval: int = DEFAULT_INTERVAL,
        auto_top_up: bool = False,
        top_up_step: int | None = None,
        top_up_margin: int = 4,
        lead_seconds: int = 0,
        course_left: int | None = None,
    ) -> None:
        self.price_per_hour = _int("price_per_hour", price_per_hour, 1)
        self.deposit = _int("deposit", deposit, 1)
        self.budget = _int("budget", budget, 1)
        self.interval = _int("interval", interval, 1)
        self.auto_top_up = bool(auto_top_up)
        self.top_up_step = _int("top_up_step", top_up_step or deposit, 1)
        self.top_up_margin = _int("top_up_margin", top_up_margin, 1)
        self.lead_seconds = _int("lead_seconds", lead_seconds)
        # a course's credit pays (None: the renter's own money): what is left of the student's
        # credit beyond this lease; the messages then speak of course credit, not budgets
        self.course_left = None if course_left is None else _int("course_left", course_left)
        self.signed = 0
        self.warned = False
        self.stopped = False
        self._top_up_pending = 0

    @property
    def limit(self) -> int:
        """The most this schedule will ever sign right now."""
        return min(self.budget, self.deposit)

    def _spend_limit(self) -> int:
        """The limit spending is measured against for the 80 % warning."""
        return self.budget if self.auto_top_up else self.limit

    def deposit_added(self, amount: int) -> None:
        """A top-up of ``amount`` was mined: the deposit (and so the limit) grows."""
        self.deposit += _int("amount", amount, 1)
        self._top_up_pending = 0

    def top_up_failed(self) -> None:
        """The top-up transaction failed: allow asking again at the next tick."""
        self._top_up_pending = 0

    def tick(self, billed_seconds: int) -> Tick:
        """The renter's voucher loop calls this every ``interval`` seconds with the billed time."""
        _int("billed_seconds", billed_seconds)
        if self.stopped:
            return Tick(amount=None, stop="the budget is spent; the lease was stopped")
        due = amount_due(self.price_per_hour, billed_seconds + self.lead_seconds)
        ahead = amount_due(self.price_per_hour, billed_seconds + self.lead_seconds + self.interval)
        top_up = self._want_top_up(billed_seconds)
        amount = min(due, self.limit)
        new = amount if amount > self.signed else None
        if new is not None:
            self.signed = new
        warn = None
        if not self.warned and self.signed * 100 >= self._spend_limit() * WARN_PERCENT:
            self.warned = True
            warn = self._warning()
        stop = None
        # Stop when the next interval cannot be paid: never sign above the limit, and stop
        # before the kernel runs seconds nobody can pay for. A pending top-up may still land.
        if ahead > self.limit and not top_up and not self._top_up_pending:
            self.stopped = True
            stop = self._stop_message()
        return Tick(amount=new, warn=warn, stop=stop, top_up=top_up)

    def final(self, billed_seconds: int) -> int:
        """The last voucher at shutdown: exactly what the billed time costs, capped by the limit
        and never below what was already signed (vouchers are cumulative)."""
        _int("billed_seconds", billed_seconds)
        due = amount_due(self.price_per_hour, billed_seconds)
        self.signed = max(self.signed, min(due, self.limit))
        return self.signed

    def _want_top_up(self, billed_seconds: int) -> int:
        if not self.auto_top_up or self._top_up_pending or self.deposit >= self.budget:
            return 0
        horizon = billed_seconds + self.lead_seconds + self.interval * self.top_up_margin
        if amount_due(self.price_per_hour, horizon) <= self.deposit:
            return 0
        self._top_up_pending = min(self.top_up_step, self.budget - self.deposit)
        return self._top_up_pending

    def _warning(self) -> str:
        if self.course_left is not None:
            return (
                f"{WARN_PERCENT} % of this kernel's course credit is spent ({self.signed} of "
                f"{self.limit} base units): save your work; the kernel stops at 100 %"
            )
        what = "budget cap" if self._spend_limit() == self.budget else "deposit"
        return (
            f"{WARN_PERCENT} % of this lease's {what} is spent ({self.signed} of "
            f"{self._spend_limit()} base units): save your work; the kernel stops at 100 %"
            + ("" if self.auto_top_up else " (raise the budget or allow auto top-up to go on)")
        )

    def _stop_message(self) -> str:
        if self.course_left:  # the lease had a slice of the credit: more is left for another
            return (
                f"this kernel's share of your course credit ({self.limit} base units) is used "
                "up: the kernel is stopped cleanly; restart the kernel to go on with the "
                f"{self.course_left} base units of course credit you have left"
            )
        if self.course_left is not None:
            return (
                f"your course credit for this kernel ({self.limit} base units) is used up: the "
                "kernel is stopped cleanly; ask your course's educator for more credit (you "
                "are never charged yourself)"
            )
        what = "budget cap" if self.limit == self.budget else "deposit"
        return (
            f"the lease's {what} ({self.limit} base units) is spent: the kernel is stopped "
            "cleanly; start a new lease with a larger budget to go on"
        )
