"""Delivery tracking over one confluent-kafka producer.

:class:`Publisher` enqueues records and follows their delivery reports: each send returns
a :class:`Delivery` that completes with the real Kafka offset or an error. A poller thread
serves the reports. In-flight bytes are bounded (``send`` blocks while the bound is
exceeded), and the first failed delivery is remembered: once a delivery failed, every
further ``send``/``drain`` raises :class:`DeliveryError`. An optional :class:`DeliveryObserver`
(the intercept's metrics) hears of every record that leaves flight.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaException, Producer

from connectors.config import redact_text
from connectors.errors import BrokerError, DeliveryError

log = logging.getLogger("kcdp.intercept")


class DeliveryObserver(Protocol):
    """Told of every record that left flight, on the delivery poller thread."""

    def acknowledged(self, size: int, latency: float | None) -> None:
        """Kafka acknowledged a record of ``size`` bytes ``latency`` s after it was produced."""

    def failed(self, size: int) -> None:
        """A record of ``size`` bytes was not acknowledged."""


class Delivery:
    """The outcome of one produced record: ``offset``/``partition`` once acknowledged."""

    __slots__ = ("done", "error", "offset", "partition", "size")

    def __init__(self, size: int) -> None:
        self.done = False
        self.size = size
        self.offset = -1
        self.partition = -1
        self.error: str | None = None


class Publisher:
    """A producer for one topic with bounded in-flight bytes and a delivery poller.

    ``conf`` is the full librdkafka configuration. ``delivery_timeout`` (seconds) bounds
    every wait for an acknowledgement and for room under ``max_in_flight_bytes``.
    """

    def __init__(
        self,
        conf: Mapping[str, Any],
        topic: str,
        *,
        delivery_timeout: float,
        max_in_flight_bytes: int,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.topic = topic
        self._observer = observer
        self.delivery_timeout = delivery_timeout
        self.max_in_flight_bytes = max_in_flight_bytes
        self._lock = threading.RLock()  # taken directly on hot paths (C, not Python)
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # threads inside a wait on _cond: notify only when > 0
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._last_offset = -1
        self._error: str | None = None
        try:
            self._producer = Producer(
                {**conf, "error_cb": self._on_error, "on_delivery": self._on_untracked}
            )
        except KafkaException as exc:
            raise BrokerError(f"invalid Kafka producer configuration: {exc}") from None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kcdp-delivery", daemon=True)
        self._poller.start()

    @property
    def failure(self) -> str | None:
        """The first delivery failure, or None."""
        return self._error

    @property
    def in_flight_bytes(self) -> int:
        """Bytes of records produced and not yet acknowledged or failed."""
        return self._in_flight_bytes

    @property
    def in_flight_events(self) -> int:
        """Records produced and not yet acknowledged or failed."""
        return self._in_flight

    @property
    def last_offset(self) -> int:
        """Largest acknowledged offset so far (-1 before the first)."""
        return self._last_offset

    def send(self, key: bytes, value: bytes, *, track: bool = True) -> Delivery:
        """Enqueue one record (never empty); blocks while in-flight bytes exceed the bound.

        With ``track`` False (for records nobody waits for) the returned :class:`Delivery`
        is never completed; the record still counts in the bound, :meth:`drain` and the
        failure, through the producer-wide delivery callback.
        """
        size = len(value)
        deadline = 0.0  # set on the first wait: most sends never wait
        with self._lock:
            self._raise_if_failed()
            while self._in_flight and self._in_flight_bytes + size > self.max_in_flight_bytes:
                if not deadline:
                    deadline = time.monotonic() + self.delivery_timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryError(
                        f"{self._in_flight_bytes} bytes still unacknowledged after "
                        f"{self.delivery_timeout:g}s"
                    )
                self._wait(remaining)
                self._raise_if_failed()
            self._in_flight += 1
            self._in_flight_bytes += size
        delivery = Delivery(size)
        while True:
            try:
                if track:
                    callback = functools.partial(self._on_delivery, delivery)
                    self._producer.produce(self.topic, value, key, on_delivery=callback)
                else:
                    self._producer.produce(self.topic, value, key)
                return delivery
            except BufferError:
                if not deadline:
                    deadline = time.monotonic() + self.delivery_timeout
                if time.monotonic() > deadline:
                    self._settle(delivery, -1, -1, "local producer queue full")
                    raise DeliveryError("local producer queue stayed full") from None
                time.sleep(0.002)
            except KafkaException as exc:
                self._settle(delivery, -1, -1, str(exc))
                raise BrokerError(f"cannot produce to {self.topic}: {exc}") from None

    def wait(self, delivery: Delivery) -> int:
        """The acknowledged offset of ``delivery``; DeliveryError on failure or timeout."""
        if not delivery.done:
            with self._lock:
                deadline = time.monotonic() + self.delivery_timeout + 5.0
                while not delivery.done and (remaining := deadline - time.monotonic()) > 0:
                    self._wait(remaining)
                if not delivery.done:
                    raise DeliveryError(
                        f"event to {self.topic} not acknowledged within {self.delivery_timeout:g}s"
                    )
        if delivery.error is not None:
            raise DeliveryError(
                f"Kafka did not acknowledge an event to {self.topic}: {delivery.error}"
            )
        return delivery.offset

    def drain(self, timeout: float | None = None) -> int:
        """Wait until nothing is in flight; the last acknowledged offset, or DeliveryError."""
        limit = self.delivery_timeout + 5.0 if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._lock:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryError(
                        f"{self._in_flight} events to {self.topic} not acknowledged "
                        f"within {limit:g}s"
                    )
                self._wait(remaining)
            self._raise_if_failed()
            return self._last_offset

    def close(self) -> None:
        """Stop the poller and drop the producer (call :meth:`drain` first to keep data)."""
        self._stop.set()
        self._poller.join(timeout=5.0)
        self._producer.flush(0)

    # -- internals ----------------------------------------------------------------------
    def _wait(self, timeout: float) -> None:
        """Wait on the condition (lock held) for at most ``timeout`` seconds."""
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise DeliveryError(f"an earlier event to {self.topic} failed: {self._error}")

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _on_delivery(self, delivery: Delivery, err: Any, msg: Any) -> None:
        if err is not None:
            self._settle(delivery, -1, -1, redact_text(str(err)))
        else:
            self._settle(delivery, msg.offset(), msg.partition(), None, msg)

    def _on_untracked(self, err: Any, msg: Any) -> None:
        self._account(len(msg), -1 if err is not None else msg.offset(), err, msg=msg)

    def _settle(
        self, delivery: Delivery, offset: int, partition: int, error: str | None, msg: Any = None
    ) -> None:
        delivery.offset, delivery.partition, delivery.error = offset, partition, error
        self._account(delivery.size, offset, error, delivery, msg)

    def _account(
        self,
        size: int,
        offset: int,
        error: Any,
        delivery: Delivery | None = None,
        msg: Any = None,
    ) -> None:
        """One record left flight: update the bound, the failure, the last offset; wake waiters."""
        if self._observer is not None:
            if error is None:
                self._observer.acknowledged(size, msg.latency() if msg is not None else None)
            else:
                self._observer.failed(size)
        if error is not None and not isinstance(error, str):
            error = redact_text(str(error))
        with self._lock:
            self._in_flight -= 1
            self._in_flight_bytes -= size
            if error is not None:
                if self._error is None:
                    log.error("delivery to %s failed: %s", self.topic, error)
                    self._error = error
            elif offset > self._last_offset:
                self._last_offset = offset
            if delivery is not None:
                delivery.done = True
            if self._waiting:
                self._cond.notify_all()

    def _on_error(self, err: Any) -> None:
        text = redact_text(str(err))
        if err.fatal():
            with self._cond:
                if self._error is None:
                    self._error = f"fatal producer error: {text}"
                self._cond.notify_all()
        log.warning("Kafka producer: %s", text)
