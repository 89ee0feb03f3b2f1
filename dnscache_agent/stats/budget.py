"""The per-interface packet budget: upstream packets/s against EC2's link-local limit (1024/s).

Samples arrive once a second. Each minute keeps its peak second as well as its mean, because
the limit is enforced per second: a minute averaging 300/s can still hold a 2000/s burst that
lost half its packets. Warnings use hysteresis (warn below one headroom, recover only above a
higher one) so a budget hovering at the threshold logs two lines, not two hundred.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_LIMIT_PPS = 1024
DEFAULT_WARN_HEADROOM_PCT = 20.0
#: Recovery needs this much more headroom than the warning threshold.
DEFAULT_HYSTERESIS_PCT = 10.0


@dataclass(frozen=True)
class BudgetEvent:
    """A warning (headroom fell below the threshold) or a recovery."""

    kind: str  # "warning" or "recovery"
    interface: str
    at: float
    pps: float
    limit_pps: float
    headroom_ratio: float

    @property
    def message(self) -> str:
        if self.kind == "warning":
            return (f"{self.interface}: upstream DNS at {self.pps:.0f} packets/s, "
                    f"headroom {self.headroom_ratio:.0%} of the {self.limit_pps:.0f}/s limit")
        return (f"{self.interface}: upstream DNS back to {self.pps:.0f} packets/s, "
                f"headroom {self.headroom_ratio:.0%}")


@dataclass(frozen=True)
class MinuteSummary:
    """One minute of one interface: the peak second is what gets dropped, the mean is cost."""

    interface: str
    minute_start: float
    samples: int
    peak_pps: float
    mean_pps: float
    limit_pps: float

    @property
    def min_headroom_ratio(self) -> float:
        return headroom_ratio(self.peak_pps, self.limit_pps)


@dataclass(frozen=True)
class BudgetStatus:
    """The latest second and the minute so far, for the table, the bar and the sinks."""

    interface: str
    limit_pps: float
    pps: float
    headroom_ratio: float
    minute_peak_pps: float
    minute_mean_pps: float
    warning: bool

    @property
    def headroom_pct(self) -> float:
        return self.headroom_ratio * 100.0

    @property
    def minute_min_headroom_ratio(self) -> float:
        return headroom_ratio(self.minute_peak_pps, self.limit_pps)


def headroom_ratio(pps: float, limit_pps: float) -> float:
    """Unused share of the limit: 1.0 idle, 0.0 at the limit, negative over it."""
    return (limit_pps - pps) / limit_pps


class _Minute:
    __slots__ = ("start", "count", "total", "peak")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.total = 0.0
        self.peak = 0.0

    def add(self, pps: float) -> None:
        self.count += 1
        self.total += pps
        self.peak = max(self.peak, pps)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class _Interface:
    __slots__ = ("last_pps", "minute", "warning", "history")

    def __init__(self, history: int) -> None:
        self.last_pps = 0.0
        self.minute: _Minute | None = None
        self.warning = False
        self.history: deque[MinuteSummary] = deque(maxlen=history)


class BudgetTracker:
    """Tracks upstream packets/s per interface against `limit_pps`.

    `record()` returns the events it raised (and logs them: WARNING for a warning, INFO for a
    recovery). Times come from the injected `clock` unless passed explicitly."""

    def __init__(self, limit_pps: float = DEFAULT_LIMIT_PPS, *,
                 warn_headroom_pct: float = DEFAULT_WARN_HEADROOM_PCT,
                 recover_headroom_pct: float | None = None,
                 clock: Callable[[], float] = time.time, history_minutes: int = 60) -> None:
        if limit_pps <= 0:
            raise ValueError(f"limit_pps must be positive, got {limit_pps!r}")
        if recover_headroom_pct is None:
            recover_headroom_pct = min(100.0, warn_headroom_pct + DEFAULT_HYSTERESIS_PCT)
        if recover_headroom_pct < warn_headroom_pct:
            raise ValueError("recover_headroom_pct must not be below warn_headroom_pct")
        self.limit_pps = float(limit_pps)
        self.warn_ratio = warn_headroom_pct / 100.0
        self.recover_ratio = recover_headroom_pct / 100.0
        self.clock = clock
        self._history = history_minutes
        self._ifaces: dict[str, _Interface] = {}

    def record(self, interface: str, pps: float, at: float | None = None) -> list[BudgetEvent]:
        """Add one one-second sample. Negative or non-finite samples count as 0."""
        now = self.clock() if at is None else at
        if not pps >= 0 or pps == float("inf"):
            pps = 0.0
        state = self._ifaces.get(interface)
        if state is None:
            state = self._ifaces[interface] = _Interface(self._history)
        minute_start = now - (now % 60.0)
        if state.minute is None or state.minute.start != minute_start:
            self._close_minute(interface, state)
            state.minute = _Minute(minute_start)
        state.minute.add(pps)
        state.last_pps = pps
        ratio = headroom_ratio(pps, self.limit_pps)
        events: list[BudgetEvent] = []
        if not state.warning and ratio < self.warn_ratio:
            state.warning = True
            events.append(BudgetEvent("warning", interface, now, pps, self.limit_pps, ratio))
            log.warning("%s", events[-1].message)
        elif state.warning and ratio >= self.recover_ratio:
            state.warning = False
            events.append(BudgetEvent("recovery", interface, now, pps, self.limit_pps, ratio))
            log.info("%s", events[-1].message)
        return events

    def _close_minute(self, interface: str, state: _Interface) -> None:
        m = state.minute
        if m is not None and m.count:
            state.history.append(MinuteSummary(interface, m.start, m.count, m.peak, m.mean,
                                               self.limit_pps))

    def interfaces(self) -> tuple[str, ...]:
        return tuple(sorted(self._ifaces))

    def status(self, interface: str) -> BudgetStatus:
        """Latest figures; an interface never recorded shows zero use. """
        state = self._ifaces.get(interface)
        if state is None or state.minute is None:
            return BudgetStatus(interface, self.limit_pps, 0.0, 1.0, 0.0, 0.0, False)
        return BudgetStatus(interface, self.limit_pps, state.last_pps,
                            headroom_ratio(state.last_pps, self.limit_pps),
                            state.minute.peak, state.minute.mean, state.warning)

    def statuses(self) -> dict[str, BudgetStatus]:
        return {name: self.status(name) for name in self.interfaces()}

    def minutes(self, interface: str) -> tuple[MinuteSummary, ...]:
        """Completed minutes, oldest first (at most `history_minutes`)."""
        state = self._ifaces.get(interface)
        return tuple(state.history) if state else ()
