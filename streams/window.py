"""Window policies (docs/FORMAT.md "Windows") as pure code.

:class:`WindowPolicy` is the configuration; :class:`WindowCutter` is the per-volume state
machine that decides, for every event of the volume and for every ``TICK``, whether the
open window closes before or after it. Decisions depend only on event times, counts and
byte totals, so re-processing a partition reproduces the same windows.

Rules (all times are event times in microseconds):

* time (``seconds = T``): deadline ``(⌊t₀/T⌋+1)·T``, t₀ = time of the window's first
  event; the window closes before the first event or ``TICK`` whose time ≥ the deadline.
* adaptive: like time, with period ``P`` per window. The first window uses
  ``adaptive_min``; window k+1 uses ``P = clamp(target · dur_k / bytes_k, min, max)`` with
  ``dur_k`` = last - first event time of window k (at least 1 ms) and ``bytes_k`` its
  WRITE/BASELINE bytes; ``P = max`` when ``bytes_k = 0``. Busy volumes get short windows,
  quiet ones long windows, and each window aims at about ``target`` bytes.
* count (``count = N``): closes after the N-th event.
* bytes (``bytes = B``): closes after the event that brings data to ≥ B.
* memory cap (``max_bytes``, always on): closes after the event that brings the window's
  changed bytes (data plus ZERO/TRIM lengths, which the backward increment must read) to ≥
  the cap.

Event times that go backwards are clamped to the largest time seen for the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.errors import UsageError

US = 1_000_000


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """How windows are cut; the first limit reached closes a window.

    Defaults: 10 s time windows (when no policy is given at all use
    :meth:`default`), a 256 MiB memory cap, adaptive target 64 MiB within 1-300 s,
    TICK grace 0.5 s.
    """

    seconds: float | None = None
    count: int | None = None
    bytes: int | None = None
    adaptive: bool = False
    max_bytes: int = 256 << 20
    adaptive_target: int = 64 << 20
    adaptive_min: float = 1.0
    adaptive_max: float = 300.0
    grace: float = 0.5

    def __post_init__(self) -> None:
        if self.seconds is not None and self.seconds <= 0:
            raise UsageError("--window-seconds must be positive")
        if self.count is not None and self.count <= 0:
            raise UsageError("--window-count must be positive")
        if self.bytes is not None and self.bytes <= 0:
            raise UsageError("--window-bytes must be positive")
        if self.max_bytes <= 0:
            raise UsageError("--window-max-bytes must be positive")
        if self.adaptive and self.seconds is not None:
            raise UsageError("--window-adaptive and --window-seconds exclude each other")
        if not 0 < self.adaptive_min <= self.adaptive_max:
            raise UsageError("adaptive window bounds need 0 < min <= max")
        if self.adaptive_target <= 0 or self.grace < 0:
            raise UsageError("adaptive target must be positive and grace not negative")

    @classmethod
    def default(cls) -> WindowPolicy:
        """The policy used when no limit is configured: 10-second windows."""
        return cls(seconds=10.0)

    @property
    def timed(self) -> bool:
        return self.seconds is not None or self.adaptive

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``policy`` object."""
        return {
            "seconds": self.seconds,
            "count": self.count,
            "bytes": self.bytes,
            "adaptive": {
                "target_bytes": self.adaptive_target,
                "min_seconds": self.adaptive_min,
                "max_seconds": self.adaptive_max,
            }
            if self.adaptive
            else None,
            "max_bytes": self.max_bytes,
        }


def aligned_deadline(t0_us: int, period_us: int) -> int:
    return (t0_us // period_us + 1) * period_us


class WindowCutter:
    """Per-volume window state: feed each event with :meth:`close_before` then :meth:`add`.

    ``next_period_us`` carries the adaptive period across windows (restore it on resume
    from the last manifest's ``period_us`` with :meth:`resume_adaptive`).
    """

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.max_time_us = 0
        self.open = False
        self.first_time_us = 0
        self.last_time_us = 0
        self.events = 0
        self.data_bytes = 0
        self.changed_bytes = 0
        self.deadline_us: int | None = None
        self.period_us: int | None = None
        self._next_period_us: int | None = (
            round(policy.adaptive_min * US) if policy.adaptive else None
        )
        if policy.seconds is not None:
            self._next_period_us = round(policy.seconds * US)

    def clamp(self, t_us: int) -> int:
        """The event time, clamped to the largest seen so far (and remembered)."""
        if t_us > self.max_time_us:
            self.max_time_us = t_us
        return self.max_time_us

    def close_before(self, t_us: int) -> str | None:
        """For an event of this volume at (clamped) time ``t_us``: ``"time"`` if the open
        window must close before it, else None."""
        if self.open and self.deadline_us is not None and t_us >= self.deadline_us:
            return "time"
        return None

    def due(self, tick_us: int) -> bool:
        """Does a ``TICK`` at ``tick_us`` close the open window?"""
        return self.open and self.deadline_us is not None and tick_us >= self.deadline_us

    def add(self, t_us: int, data_bytes: int, changed_bytes: int) -> str | None:
        """Account an event (clamped time ``t_us``) to the window, opening it if needed.

        Returns the close reason if the window must close after this event."""
        if not self.open:
            self.open = True
            self.first_time_us = t_us
            self.period_us = self._next_period_us
            self.deadline_us = (
                aligned_deadline(t_us, self.period_us) if self.period_us is not None else None
            )
        self.last_time_us = t_us
        self.events += 1
        self.data_bytes += data_bytes
        self.changed_bytes += changed_bytes
        p = self.policy
        if p.count is not None and self.events >= p.count:
            return "count"
        if p.bytes is not None and self.data_bytes >= p.bytes:
            return "bytes"
        if self.changed_bytes >= p.max_bytes:
            return "size"
        return None

    def closed(self) -> None:
        """Reset after the open window was closed; derive the next adaptive period."""
        if self.policy.adaptive and self.open:
            self._next_period_us = self.adaptive_period(
                self.last_time_us - self.first_time_us, self.data_bytes
            )
        self.open = False
        self.events = 0
        self.data_bytes = 0
        self.changed_bytes = 0
        self.deadline_us = None
        self.period_us = None

    def adaptive_period(self, dur_us: int, data_bytes: int) -> int:
        p = self.policy
        lo, hi = round(p.adaptive_min * US), round(p.adaptive_max * US)
        if data_bytes <= 0:
            return hi
        period = p.adaptive_target * max(dur_us, 1000) // data_bytes
        return max(lo, min(hi, period))

    def resume(
        self, *, last_time_us: int, period_us: int | None, dur_us: int, data_bytes: int
    ) -> None:
        """Restore the state after a stored window (the volume's last manifest)."""
        self.max_time_us = max(self.max_time_us, last_time_us)
        if self.policy.adaptive:
            self._next_period_us = self.adaptive_period(dur_us, data_bytes)
