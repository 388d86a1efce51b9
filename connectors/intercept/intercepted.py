"""The intercept for programs that own their writes: :class:`InterceptedVolume`.

Every change is captured as a ``WriteEvent`` on the topic and applied to the backing file
inside one critical section, so topic order is disk order (docs/FORMAT.md). The events of
one open, its state file and its baselines are its :class:`Session`
(:mod:`connectors.intercept.session`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from connectors.errors import ConfigError, DeliveryError, InvalidEventError, VolumeError
from connectors.fsutil import pwrite_all
from connectors.intercept.backing import Backing, Writeback, clear_range
from connectors.intercept.baseline import BaselineCopy
from connectors.intercept.control import ControlServer, socket_path
from connectors.intercept.metrics import InterceptMetrics
from connectors.intercept.options import (
    DEFAULT_BASELINE_CHUNK,
    DEFAULT_MAX_IN_FLIGHT,
    BaselinePolicy,
    Mode,
    check_options,
    check_range,
)
from connectors.intercept.publisher import Delivery, Publisher
from connectors.intercept.session import Session
from connectors.kafka import MAX_EVENT_DATA, capture_producer_base, producer_config
from connectors.topics import DEFAULT_LAG_BUDGET_SECONDS, prepare_write_topic
from schemas.codec import AvroCodec
from schemas.events import EventKind

log = logging.getLogger("kcdp.intercept")


class InterceptedVolume:
    """A protected volume over a backing file or block device; a context manager.

    ``path`` is created sparse at ``size`` bytes if missing (``size`` None: use the
    existing size). ``group`` (default: the volume) is the Kafka key. ``mode="sync"``
    returns from each call once Kafka acknowledged it (idempotent producer, acks=all)
    and the bytes are applied; ``mode="async"`` returns once queued (offset -1) and
    :meth:`flush` waits, raising :class:`DeliveryError` if any delivery failed.
    ``max_in_flight_bytes`` (64 MiB) bounds unacknowledged event bytes; writes over
    ``max_event_data`` (512 KiB) are split; ``delivery_timeout`` (30 s) bounds every wait.

    ``baseline``: ``auto`` (default) copies the volume in the background when its history
    cannot be trusted (existing data without a clean state file); ``always`` copies even
    after a clean close; ``never`` trusts the caller that the topic already holds the
    volume's bytes — if it does not, restores of this volume are wrong until a baseline.
    ``control_socket`` (default True) serves bookmarks at ``<path>.kcdp.sock``;
    ``run_dir`` additionally links it as ``<run_dir>/<volume>.sock`` for ``kcdp bookmark``.
    ``metrics_port`` (default None: off; 0: any free port) serves the volume's Prometheus
    metrics (:mod:`connectors.intercept.metrics`) at ``http://metrics_host:PORT/metrics``
    while the volume is open; :attr:`metrics_address` is where.
    ``planned_workers`` and ``lag_budget_seconds`` (settings of the same names) are what
    the write topic's settings are checked against once at open
    (:func:`connectors.topics.warn_topic_problems`: a warning each, unless ``check_topics``
    is False); a missing topic is created with ``planned_workers`` partitions.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        volume: str,
        size: int | None = None,
        *,
        group: str | None = None,
        bootstrap_servers: str,
        topic: str = "kcdp.writes",
        mode: Mode = "sync",
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT,
        client_config: Mapping[str, Any] | None = None,
        baseline: BaselinePolicy = "auto",
        baseline_chunk: int = DEFAULT_BASELINE_CHUNK,
        max_event_data: int = MAX_EVENT_DATA,
        delivery_timeout: float = 30.0,
        schema_registry: str | None = None,
        control_socket: bool = True,
        run_dir: str | os.PathLike[str] | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        planned_workers: int = 1,
        lag_budget_seconds: float = DEFAULT_LAG_BUDGET_SECONDS,
        check_topics: bool = True,
    ) -> None:
        group = group or volume
        check_options(
            volume=volume,
            group=group,
            mode=mode,
            baseline=baseline,
            max_in_flight_bytes=max_in_flight_bytes,
            baseline_chunk=baseline_chunk,
            max_event_data=max_event_data,
            delivery_timeout=delivery_timeout,
        )
        self.path = Path(path)
        self.volume, self.group, self.topic, self.mode = volume, group, topic, mode
        self.max_event_data = max_event_data
        self.baseline_chunk = baseline_chunk
        self._lock = threading.Lock()
        self._closed = False
        self._control: ControlServer | None = None
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0..65535, not {metrics_port}")
        #: the volume's metrics, or None without ``metrics_port``.
        self.metrics = InterceptMetrics(volume) if metrics_port is not None else None
        #: ``(host, port)`` the metrics are served on, or None.
        self.metrics_address: tuple[str, int] | None = None

        backing = Backing.open(self.path, size)
        self._fd, self._size, self._is_file = backing.fd, backing.size, backing.is_file
        self._writeback = Writeback(self._fd)
        created = backing.created
        self.size = self._size
        base = capture_producer_base(
            bootstrap_servers, delivery_timeout, sync=mode == "sync", client=client_config
        )
        try:
            prepare_write_topic(
                {"bootstrap.servers": bootstrap_servers, **(client_config or {})},
                topic,
                planned_workers=planned_workers,
                lag_budget_seconds=lag_budget_seconds if check_topics else None,
                timeout=delivery_timeout,
                logger=log,
            )
            codec = AvroCodec("WriteEvent", registry_url=schema_registry, subject=f"{topic}-value")
            self._publisher = Publisher(
                producer_config(base),
                topic,
                delivery_timeout=delivery_timeout,
                max_in_flight_bytes=max_in_flight_bytes,
                observer=self.metrics,
            )
        except BaseException:
            os.close(self._fd)
            raise
        if self.metrics is not None:
            self.metrics.watch(self._publisher)
        self._session = Session(
            self.path,
            volume=volume,
            group=group,
            size=self._size,
            host=socket.gethostname(),
            lock=self._lock,
            publisher=self._publisher,
            codec=codec,
            sync=mode == "sync",
        )
        try:
            self._session.begin(created=created, policy=baseline, new_copy=self._new_baseline)
            self.session_offset = self._session.start_offset
            if control_socket:
                link = Path(run_dir) / f"{volume}.sock" if run_dir is not None else None
                self._control = ControlServer(
                    socket_path(self.path), self._handle_control, link=link
                )
            if self.metrics is not None and metrics_port is not None:
                try:
                    self.metrics_address = self.metrics.serve(metrics_port, metrics_host)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
                    ) from None
                log.info(
                    "volume %s: metrics at http://%s:%d/metrics", volume, *self.metrics_address
                )
        except BaseException:
            self._abandon()
            raise

    # -- public API ---------------------------------------------------------------------
    @property
    def session(self) -> str:
        """This open's session id (32 hex digits)."""
        return self._session.id

    #: Kafka offset of this session's SESSION_START (replay a session from here).
    session_offset: int

    @property
    def sequence(self) -> int:
        """Sequence number of the last event this session produced."""
        return self._session.sequence

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Capture and apply ``data`` at ``offset``; the offset of the (last) event."""
        try:
            buf = memoryview(data).cast("B")
        except (TypeError, ValueError):
            raise InvalidEventError(
                f"write data must be bytes-like, not {type(data).__name__}"
            ) from None
        check_range(self.volume, self._size, "write", offset, len(buf))
        deliveries: list[Delivery] = []
        track = self.mode == "sync"  # async writes are never waited for one by one
        with self._lock:
            self._check_usable()
            if len(buf) <= self.max_event_data:  # one event; bytes need no copy
                piece = data if isinstance(data, bytes) else bytes(buf)
                deliveries.append(self._session.emit(EventKind.WRITE, offset, piece, track=track))
            else:
                for start in range(0, len(buf), self.max_event_data):
                    piece = bytes(buf[start : start + self.max_event_data])
                    deliveries.append(
                        self._session.emit(EventKind.WRITE, offset + start, piece, track=track)
                    )
            try:
                pwrite_all(self._fd, buf, offset)
            except OSError as exc:
                raise self._apply_failed(exc) from None
            self._writeback.wrote(len(buf))  # so flush's fsync finds little left to write
        return self._session.settle(deliveries)

    def read(self, offset: int, length: int) -> bytes:
        """The volume's bytes ``[offset, offset+length)`` (reads are not captured)."""
        self._check_open()
        check_range(self.volume, self._size, "read", offset, length)
        out = bytearray()
        while len(out) < length:
            part = os.pread(self._fd, length - len(out), offset + len(out))
            if not part:
                raise VolumeError(f"short read from {self.path} at {offset + len(out)}")
            out += part
        return bytes(out)

    def zero(self, offset: int, length: int) -> int:
        """Capture and apply a ZERO of ``[offset, offset+length)``; the event's offset."""
        return self._clear(EventKind.ZERO, offset, length)

    def trim(self, offset: int, length: int) -> int:
        """Capture and apply a TRIM (reads back as zeros); the event's offset."""
        return self._clear(EventKind.TRIM, offset, length)

    def bookmark(self, name: str) -> int:
        """Publish a BOOKMARK named ``name`` and wait for it (either mode); its offset."""
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            raise InvalidEventError(f"invalid bookmark name {name!r}: non-empty, one line")
        with self._lock:
            self._check_usable()
            delivery = self._session.emit(EventKind.BOOKMARK, name=name)
        return self._session.settle([delivery], always_wait=True)

    def flush(self) -> int:
        """Wait for every event in flight and fsync; the last acknowledged offset."""
        self._check_open()
        last = self._session.drain()
        self._apply(lambda: os.fsync(self._fd))
        return last

    def baseline(self, *, wait: bool = True) -> int:
        """Start a baseline copy unless one runs; with ``wait``, the offset of BASELINE_END.

        The copy reads the volume chunk by chunk inside the write lock, in a background
        thread, so writes continue and interleave. Without ``wait`` returns -1.
        """
        self._check_open()
        with self._lock:
            self._check_usable()
            self._session.start_baseline(self._new_baseline)
        if not wait:
            return -1
        return self.wait_baseline()

    def wait_baseline(self, timeout: float | None = None) -> int:
        """Wait for the running baseline and its acknowledgements; BASELINE_END's offset."""
        return self._session.wait_baseline(timeout, self.flush)

    @property
    def baseline_complete(self) -> bool:
        """True once no baseline is running and the last one succeeded."""
        return self._session.baseline_complete

    def status(self) -> dict[str, Any]:
        """A JSON-friendly summary (what the control socket's ``status`` answers)."""
        return {
            "volume": self.volume,
            "group": self.group,
            "topic": self.topic,
            "session": self.session,
            "sequence": self.sequence,
            "volume_size": self.size,
            "mode": self.mode,
            "baseline_complete": self.baseline_complete,
            "failed": self._session.failure is not None,
        }

    def close(self) -> None:
        """Publish SESSION_END, wait for all events, fsync; the state is clean if all went well."""
        if self._closed:
            return
        self._stop_control()
        self._session.stop_baseline()
        clean = False
        try:
            with self._lock:
                self._session.end()
            if self._session.failure is None:
                self.flush()
                clean = self.baseline_complete
        except (DeliveryError, VolumeError) as exc:
            log.error("volume %s closed uncleanly: %s", self.volume, exc)
            raise
        finally:
            self._closed = True
            self._publisher.close()
            if self.metrics is not None:
                self.metrics.stop()
            try:
                self._session.save(clean=clean)
            finally:
                os.close(self._fd)

    def __enter__(self) -> InterceptedVolume:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------
    def _new_baseline(self) -> BaselineCopy:
        return BaselineCopy(
            name=self.volume,
            fd=self._fd,
            size=self._size,
            chunk=self.baseline_chunk,
            max_event_data=self.max_event_data,
            lock=self._lock,
            check=self._check_usable,
            emit=self._session.publish,
            wait=self._publisher.wait,
        )

    def _clear(self, kind: EventKind, offset: int, length: int) -> int:
        check_range(self.volume, self._size, kind.lower(), offset, length)
        with self._lock:
            self._check_usable()
            delivery = self._session.emit(kind, offset=offset, length=length)
            self._apply(lambda: clear_range(self._fd, offset, length, punch=self._is_file))
        return self._session.settle([delivery])

    def _apply(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            raise self._apply_failed(exc) from None

    def _apply_failed(self, exc: OSError) -> VolumeError:
        self._session.fail(f"backing file {self.path}: {exc}")
        return VolumeError(f"cannot update backing file {self.path}: {exc}")

    def _check_open(self) -> None:
        if self._closed:
            raise VolumeError(f"volume {self.volume} is closed")

    def _check_usable(self) -> None:
        self._check_open()
        self._session.check_capturing()

    # -- control socket -----------------------------------------------------------------
    def _handle_control(self, line: str) -> str:
        command, _, arg = line.strip().partition(" ")
        if command == "bookmark":
            return str(self.bookmark(arg.strip()))
        if command == "status":
            return orjson.dumps(self.status()).decode()
        raise InvalidEventError(f"unknown control command {command!r}")

    def _stop_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def _abandon(self) -> None:
        """Tear down after a failed open: the state stays unclean."""
        self._closed = True
        self._stop_control()
        self._session.stop_baseline()
        self._publisher.close()
        if self.metrics is not None:
            self.metrics.stop()
        os.close(self._fd)
