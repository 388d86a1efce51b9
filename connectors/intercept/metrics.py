"""Prometheus metrics of one intercepted volume (its own registry, no globals).

Names carry the ``kcdp_intercept_`` prefix and base units; every series has the label
``volume``. The in-flight gauges are read from the :class:`Publisher` when scraped; the
counters and the histogram move in the publisher's delivery callbacks.

* ``kcdp_intercept_in_flight_bytes{volume}``, ``kcdp_intercept_in_flight_events{volume}`` —
  event bytes (and events) produced but not yet acknowledged by Kafka, or failed.
* ``kcdp_intercept_max_in_flight_bytes{volume}`` — the bound on in-flight bytes (``send``
  blocks above it).
* ``kcdp_intercept_ack_latency_seconds{volume}`` — histogram of the time from producing an
  event to Kafka's acknowledgement (librdkafka's ``Message.latency()``).
* ``kcdp_intercept_events_total{volume}``, ``kcdp_intercept_published_bytes_total{volume}`` —
  events Kafka acknowledged, and their record bytes.
* ``kcdp_intercept_delivery_failures_total{volume}`` — events Kafka did not acknowledge
  (the first one stops the capture: docs/FORMAT.md).

``InterceptedVolume(metrics_port=P)`` (``kcdp intercept nbd --metrics-port P``) serves them at
``http://HOST:P/metrics``; :attr:`InterceptMetrics.registry` is there for programs that
serve them their own way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Buckets of the acknowledgement latency, seconds (sync writes wait this long).
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class InFlight(Protocol):
    """What the gauges read at scrape time (a :class:`Publisher`)."""

    @property
    def in_flight_bytes(self) -> int: ...

    @property
    def in_flight_events(self) -> int: ...

    @property
    def max_in_flight_bytes(self) -> int: ...


class _InFlightGauges(Collector):
    def __init__(self, volume: str, source: InFlight) -> None:
        self.volume, self.source = volume, source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, doc, value in (
            (
                "kcdp_intercept_in_flight_bytes",
                "Event bytes produced and not yet acknowledged by Kafka",
                self.source.in_flight_bytes,
            ),
            (
                "kcdp_intercept_in_flight_events",
                "Events produced and not yet acknowledged by Kafka",
                self.source.in_flight_events,
            ),
            (
                "kcdp_intercept_max_in_flight_bytes",
                "Bound on unacknowledged event bytes (writes block above it)",
                self.source.max_in_flight_bytes,
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=["volume"])
            family.add_metric([self.volume], value)
            yield family

    def describe(self) -> list[GaugeMetricFamily]:
        return []


class InterceptMetrics:
    """The metrics of one intercepted volume; the publisher's delivery observer."""

    def __init__(self, volume: str, registry: CollectorRegistry | None = None) -> None:
        self.volume = volume
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "kcdp_intercept_events", "Events Kafka acknowledged", ["volume"], registry=r
        ).labels(volume)
        self.published_bytes = Counter(
            "kcdp_intercept_published_bytes",
            "Record bytes of the events Kafka acknowledged",
            ["volume"],
            registry=r,
        ).labels(volume)
        self.failures = Counter(
            "kcdp_intercept_delivery_failures",
            "Events Kafka did not acknowledge",
            ["volume"],
            registry=r,
        ).labels(volume)
        self.ack_latency = Histogram(
            "kcdp_intercept_ack_latency_seconds",
            "Seconds from producing an event to Kafka's acknowledgement",
            ["volume"],
            buckets=ACK_BUCKETS,
            registry=r,
        ).labels(volume)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def watch(self, source: InFlight) -> None:
        """Register the scrape-time in-flight gauges over ``source``."""
        self.registry.register(_InFlightGauges(self.volume, source))

    # -- the publisher's observer ---------------------------------------------------------
    def acknowledged(self, size: int, latency: float | None) -> None:
        self.events.inc()
        self.published_bytes.inc(size)
        if latency is not None and latency >= 0:
            self.ack_latency.observe(latency)

    def failed(self, size: int) -> None:
        self.failures.inc()

    # -- serving ------------------------------------------------------------------------
    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) in a daemon thread."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        address = server.server_address
        return str(address[0]), int(address[1])

    def stop(self) -> None:
        """Stop serving (no-op if not serving)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
