"""The intercept for programs that own their writes: :class:`InterceptedVolume`.

Every change is captured as a ``WriteEvent`` on the topic and applied to the backing file
inside one critical section, so topic order is disk order (docs/FORMAT.md). Sessions,
sequences, the state file, baselines and bookmarks follow the rules of that page.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from connectors.errors import (
    DeliveryError,
    InvalidEventError,
    KcdpError,
    VolumeError,
)
from connectors.fsutil import pwrite_all
from connectors.intercept.backing import Backing, Writeback, clear_range
from connectors.intercept.baseline import BaselineCopy
from connectors.intercept.control import ControlServer, socket_path
from connectors.intercept.options import (
    DEFAULT_BASELINE_CHUNK,
    DEFAULT_MAX_IN_FLIGHT,
    BaselinePolicy,
    Mode,
    check_options,
    check_range,
)
from connectors.intercept.publisher import Delivery, Publisher
from connectors.intercept.state import InterceptState, load_state, save_state
from connectors.kafka import MAX_EVENT_DATA, ensure_topics, producer_config
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, now_us

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
        self._key = group.encode("utf-8")
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._sequence = -1
        self._failure: str | None = None
        self._closed = False
        self._ending = False
        self._baseline: BaselineCopy | None = None
        self._baseline_end = -1
        self._control: ControlServer | None = None

        backing = Backing.open(self.path, size)
        self._fd, self._size, self._is_file = backing.fd, backing.size, backing.is_file
        self._writeback = Writeback(self._fd)
        created = backing.created
        self.size = self._size
        base: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "message.timeout.ms": max(1, int(delivery_timeout * 1000)),
        }
        if mode == "sync":
            base["linger.ms"] = 0
        base.update(client_config or {})
        try:
            ensure_topics(
                {"bootstrap.servers": bootstrap_servers, **(client_config or {})},
                {topic: 1},
                timeout=delivery_timeout,
            )
            self._codec = AvroCodec(
                "WriteEvent", registry_url=schema_registry, subject=f"{topic}-value"
            )
            self._publisher = Publisher(
                producer_config(base),
                topic,
                delivery_timeout=delivery_timeout,
                max_in_flight_bytes=max_in_flight_bytes,
            )
        except BaseException:
            os.close(self._fd)
            raise
        try:
            self._start_session(created, baseline)
            if control_socket:
                link = Path(run_dir) / f"{volume}.sock" if run_dir is not None else None
                self._control = ControlServer(
                    socket_path(self.path), self._handle_control, link=link
                )
        except BaseException:
            self._abandon()
            raise

    # -- public API ---------------------------------------------------------------------
    @property
    def session(self) -> str:
        """This open's session id (32 hex digits)."""
        return self._session

    #: Kafka offset of this session's SESSION_START (replay a session from here).
    session_offset: int

    @property
    def sequence(self) -> int:
        """Sequence number of the last event this session produced."""
        return self._sequence

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
                deliveries.append(self._emit(EventKind.WRITE, offset, piece, track=track))
            else:
                for start in range(0, len(buf), self.max_event_data):
                    piece = bytes(buf[start : start + self.max_event_data])
                    deliveries.append(
                        self._emit(EventKind.WRITE, offset + start, piece, track=track)
                    )
            try:
                pwrite_all(self._fd, buf, offset)
            except OSError as exc:
                raise self._apply_failed(exc) from None
            self._writeback.wrote(len(buf))  # so flush's fsync finds little left to write
        return self._settle(deliveries)

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
            delivery = self._emit(EventKind.BOOKMARK, name=name)
        return self._settle([delivery], always_wait=True)

    def flush(self) -> int:
        """Wait for every event in flight and fsync; the last acknowledged offset."""
        self._check_open()
        try:
            last = self._publisher.drain()
        except DeliveryError as exc:
            self._fail(exc.message)
            raise
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
            if self._baseline is None or self._baseline.done:
                self._start_baseline_locked()
        if not wait:
            return -1
        return self.wait_baseline()

    def wait_baseline(self, timeout: float | None = None) -> int:
        """Wait for the running baseline and its acknowledgements; BASELINE_END's offset."""
        copy = self._baseline
        if copy is None:
            return self._baseline_end
        copy.thread.join(timeout)
        if not copy.done:
            raise VolumeError(f"baseline of {self.volume} still running after {timeout}s")
        if copy.error is not None:
            raise copy.error
        self.flush()
        return copy.end_offset

    @property
    def baseline_complete(self) -> bool:
        """True once no baseline is running and the last one succeeded."""
        return self._baseline is None or self._baseline.succeeded

    def status(self) -> dict[str, Any]:
        """A JSON-friendly summary (what the control socket's ``status`` answers)."""
        return {
            "volume": self.volume,
            "group": self.group,
            "topic": self.topic,
            "session": self._session,
            "sequence": self._sequence,
            "volume_size": self.size,
            "mode": self.mode,
            "baseline_complete": self.baseline_complete,
            "failed": self._failure is not None,
        }

    def close(self) -> None:
        """Publish SESSION_END, wait for all events, fsync; the state is clean if all went well."""
        if self._closed:
            return
        self._stop_control()
        if self._baseline is not None:
            self._baseline.stop()
        clean = False
        try:
            with self._lock:
                self._ending = True  # nothing may follow SESSION_END
                if self._failure is None:
                    self._emit(EventKind.SESSION_END)
            if self._failure is None:
                self.flush()
                clean = self.baseline_complete
        except (DeliveryError, VolumeError) as exc:
            log.error("volume %s closed uncleanly: %s", self.volume, exc)
            raise
        finally:
            self._closed = True
            self._publisher.close()
            try:
                save_state(self.path, self._state(clean=clean))
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

    # -- session and baseline -----------------------------------------------------------
    def _start_session(self, created: bool, policy: BaselinePolicy) -> None:
        previous = load_state(self.path)
        resumed = (
            not created
            and previous is not None
            and previous.clean
            and previous.matches(volume=self.volume, group=self.group, volume_size=self._size)
        )
        self._session = uuid.uuid4().hex
        save_state(self.path, self._state(clean=False))
        with self._lock:
            first = self._emit(
                EventKind.SESSION_START, name=previous.session if resumed and previous else ""
            )
            opening = [first]
            if created:  # a new, all-zero volume: an empty baseline
                opening.append(self._emit(EventKind.BASELINE_START))
                opening.append(self._emit(EventKind.BASELINE_END))
        self._settle(opening, always_wait=True)
        self.session_offset = first.offset
        if created:
            self._baseline_end = opening[-1].offset
        if not created and (policy == "always" or (policy == "auto" and not resumed)):
            with self._lock:
                self._start_baseline_locked()

    def _start_baseline_locked(self) -> None:
        self._baseline = BaselineCopy(
            name=self.volume,
            fd=self._fd,
            size=self._size,
            chunk=self.baseline_chunk,
            max_event_data=self.max_event_data,
            lock=self._lock,
            check=self._check_usable,
            emit=self._emit_event,
            wait=self._publisher.wait,
        )
        self._baseline.start()

    # -- capture internals (the caller holds self._lock) --------------------------------
    def _emit(
        self,
        kind: EventKind,
        offset: int = 0,
        data: bytes = b"",
        *,
        length: int | None = None,
        name: str = "",
        track: bool = True,
    ) -> Delivery:
        if self._baseline is not None:
            self._baseline.flush_pending_zero()
        return self._emit_event(kind, offset, data, length=length, name=name, track=track)

    def _emit_event(
        self,
        kind: EventKind,
        offset: int = 0,
        data: bytes = b"",
        *,
        length: int | None = None,
        name: str = "",
        track: bool = True,
    ) -> Delivery:
        """Number, check, encode and publish one event (``length`` None: ``len(data)``).

        ``track`` False: the returned Delivery is not followed (nobody waits for it).
        """
        event = WriteEvent(
            group=self.group,
            volume=self.volume,
            sequence=self._sequence + 1,
            kind=kind,
            timestamp_us=now_us(),
            offset=offset,
            length=len(data) if length is None else length,
            data=data,
            volume_size=self._size,
            session=self._session,
            host=self._host,
            name=name,
        ).seal()
        event.validate_trusting_crc()  # the seal was just computed from the fields above
        value = self._codec.encode_event(event)
        try:
            delivery = self._publisher.send(self._key, value, track=track)
        except KcdpError as exc:  # nothing of this call may be half-published silently
            self._fail(exc.message)
            raise
        self._sequence = event.sequence
        return delivery

    def _clear(self, kind: EventKind, offset: int, length: int) -> int:
        check_range(self.volume, self._size, kind.lower(), offset, length)
        with self._lock:
            self._check_usable()
            delivery = self._emit(kind, offset=offset, length=length)
            self._apply(lambda: clear_range(self._fd, offset, length, punch=self._is_file))
        return self._settle([delivery])

    def _apply(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            raise self._apply_failed(exc) from None

    def _apply_failed(self, exc: OSError) -> VolumeError:
        self._fail(f"backing file {self.path}: {exc}")
        return VolumeError(f"cannot update backing file {self.path}: {exc}")

    def _settle(self, deliveries: list[Delivery], *, always_wait: bool = False) -> int:
        if self.mode == "async" and not always_wait:
            return -1
        offset = -1
        try:
            for delivery in deliveries:
                offset = self._publisher.wait(delivery)
        except DeliveryError as exc:
            self._fail(exc.message)
            raise
        return offset

    def _check_open(self) -> None:
        if self._closed:
            raise VolumeError(f"volume {self.volume} is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._ending:
            raise VolumeError(f"volume {self.volume} is closing")
        if self._failure is not None:
            raise DeliveryError(
                f"volume {self.volume} stopped capturing after a failure ({self._failure}); "
                "reopen it (the next open takes a baseline)"
            )

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason

    def _state(self, *, clean: bool) -> InterceptState:
        return InterceptState(
            volume=self.volume,
            group=self.group,
            session=self._session,
            sequence=self._sequence,
            clean=clean,
            volume_size=self._size,
        )

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
        if self._baseline is not None:
            self._baseline.stop()
        self._publisher.close()
        os.close(self._fd)
