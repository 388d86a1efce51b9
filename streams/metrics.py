"""Prometheus metrics of an increments worker (one registry per app, no globals).

Names carry the ``kcdp_`` prefix and base units. Counters and histograms are updated as
windows become durable; ``kcdp_rpo_seconds`` and ``kcdp_checkpoint_age_seconds`` are
computed when scraped from the live builder state (see :class:`VolumeGauges`).

* ``kcdp_rpo_seconds{volume}`` — age of the oldest event of the volume that is consumed but
  not yet in a durable window (0 when everything consumed is durable).
* ``kcdp_checkpoint_age_seconds{volume}`` — time since the newest checkpoint was taken.
* ``kcdp_lag_events{volume}``, ``kcdp_lag_bytes{volume}`` — consumed events (and their
  WRITE/BASELINE bytes) not yet in a durable window: the open window.
* ``kcdp_quarantined_events{volume}`` — events held in quarantine (docs/FORMAT.md
  "Quarantine"); ``kcdp_fenced_sessions{volume}`` — sessions fenced out of the history;
  ``kcdp_reread_found_total{volume}`` — events a re-read found that the broker had not
  delivered (each one a gap that was not declared).
* ``kcdp_windows_total{volume,reason}``, ``kcdp_window_bytes``,
  ``kcdp_window_duration_seconds``, ``kcdp_increment_bytes_total{volume,object}``,
  ``kcdp_events_total``, ``kcdp_dlq_events_total{error}`` (dead letters by reason: the
  error class), ``kcdp_gaps_total{volume,kind}``, ``kcdp_rereads_total`` (re-reads of a
  range before judging a gap), ``kcdp_committed_offset{partition}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.manifest import Manifest

_BYTES = tuple(float(1 << k) for k in range(10, 31, 2))
_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class VolumeState:
    """What the gauges need of one volume, read at scrape time."""

    volume: str
    oldest_pending_us: int | None
    checkpoint_us: int | None
    pending_events: int = 0
    pending_bytes: int = 0
    quarantined: int = 0
    fenced_sessions: int = 0
    reread_found: int = 0


class VolumeGauges(Collector):
    """Computes the per-volume gauges from ``source()`` on every scrape."""

    def __init__(self, source: Callable[[], Iterable[VolumeState]]) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = time.time()
        rpo = GaugeMetricFamily(
            "kcdp_rpo_seconds",
            "Age of the oldest consumed event not yet in a durable window (0 if none)",
            labels=["volume"],
        )
        age = GaugeMetricFamily(
            "kcdp_checkpoint_age_seconds", "Seconds since the newest checkpoint", labels=["volume"]
        )
        lag = GaugeMetricFamily(
            "kcdp_lag_events", "Consumed events not yet in a durable window", labels=["volume"]
        )
        lag_bytes = GaugeMetricFamily(
            "kcdp_lag_bytes",
            "WRITE/BASELINE bytes of consumed events not yet in a durable window",
            labels=["volume"],
        )
        held = GaugeMetricFamily(
            "kcdp_quarantined_events", "Events held in quarantine", labels=["volume"]
        )
        fenced = GaugeMetricFamily(
            "kcdp_fenced_sessions", "Sessions fenced out of the history", labels=["volume"]
        )
        found = CounterMetricFamily(
            "kcdp_reread_found",
            "Events a re-read found that the broker had not delivered",
            labels=["volume"],
        )
        for st in self.source():
            held.add_metric([st.volume], st.quarantined)
            fenced.add_metric([st.volume], st.fenced_sessions)
            found.add_metric([st.volume], st.reread_found)
            pending = 0.0 if st.oldest_pending_us is None else now - st.oldest_pending_us / 1e6
            rpo.add_metric([st.volume], max(0.0, pending))
            lag.add_metric([st.volume], st.pending_events)
            lag_bytes.add_metric([st.volume], st.pending_bytes)
            if st.checkpoint_us is not None:
                age.add_metric([st.volume], max(0.0, now - st.checkpoint_us / 1e6))
        yield rpo
        yield lag
        yield lag_bytes
        yield age
        yield held
        yield fenced
        yield found

    def describe(self) -> list[GaugeMetricFamily]:
        return []


class WorkerMetrics:
    """The metrics of one worker app, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.windows = Counter(
            "kcdp_windows", "Windows made durable", ["volume", "reason"], registry=r
        )
        self.window_bytes = Histogram(
            "kcdp_window_bytes", "WRITE/BASELINE bytes per window", buckets=_BYTES, registry=r
        )
        self.window_duration = Histogram(
            "kcdp_window_duration_seconds",
            "Event-time span of a window",
            buckets=_SECONDS,
            registry=r,
        )
        self.increment_bytes = Counter(
            "kcdp_increment_bytes",
            "Stored bytes of window objects",
            ["volume", "object"],
            registry=r,
        )
        self.events = Counter("kcdp_events", "Records consumed from the write topic", registry=r)
        self.dlq = Counter(
            "kcdp_dlq_events", "Records sent to the dead-letter topic", ["error"], registry=r
        )
        self.gaps = Counter("kcdp_gaps", "Gaps detected", ["volume", "kind"], registry=r)
        self.rereads = Counter("kcdp_rereads", "Ranges read again before judging a gap", registry=r)
        self.committed = Gauge(
            "kcdp_committed_offset", "Last committed offset", ["partition"], registry=r
        )

    def watch(self, source: Callable[[], Iterable[VolumeState]]) -> None:
        """Register the scrape-time gauges over ``source``."""
        self.registry.register(VolumeGauges(source))

    def window(self, m: Manifest) -> None:
        self.windows.labels(m.volume, m.close_reason).inc()
        self.window_bytes.observe(m.bytes_written)
        self.window_duration.observe((m.last_time_us - m.first_time_us) / 1e6)
        for name, ref in (
            ("forward", m.forward),
            ("backward", m.backward),
            ("writelog", m.writelog),
        ):
            if ref is not None:
                self.increment_bytes.labels(m.volume, name).inc(ref.size)
