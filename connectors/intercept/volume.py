"""The intercept for programs that own their writes: :class:`InterceptedVolume`.

Every change is captured as a ``WriteEvent`` on the topic and applied to the backing file
inside one critical section, so topic order is disk order (docs/FORMAT.md). Sessions,
sequences, the state file, baselines and bookmarks follow the rules of that page.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson

from connectors.errors import (
    ConfigError,
    DeliveryError,
    InvalidEventError,
    KcdpError,
    VolumeError,
)
from connectors.intercept.control import ControlServer, socket_path
from connectors.intercept.publisher import Delivery, Publisher
from connectors.intercept.state import InterceptState, load_state, save_state
from connectors.kafka import MAX_EVENT_DATA, ensure_topics, producer_config
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, crc32c, now_us

log = logging.getLogger("kcdp.intercept")

VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
Mode = Literal["sync", "async"]
BaselinePolicy = Literal["auto", "always", "never"]

#: Default bound on unacknowledged event bytes (async mode, and baselines in either mode).
DEFAULT_MAX_IN_FLIGHT = 64 * 1024 * 1024
#: Default size of one baseline read.
DEFAULT_BASELINE_CHUNK = 1024 * 1024

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZERO_BLOCK = bytes(1024 * 1024)
_libc = ctypes.CDLL(None, use_errno=True)


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
        for what, value in (("volume", volume), ("group", group)):
            if not isinstance(value, str) or not VOLUME_NAME.fullmatch(value):
                raise ConfigError(f"invalid {what} name {value!r}: use [A-Za-z0-9][A-Za-z0-9._-]*")
        if mode not in ("sync", "async"):
            raise ConfigError(f"mode must be 'sync' or 'async', not {mode!r}")
        if baseline not in ("auto", "always", "never"):
            raise ConfigError(f"baseline must be auto, always or never, not {baseline!r}")
        for what, number in (
            ("max_in_flight_bytes", max_in_flight_bytes),
            ("baseline_chunk", baseline_chunk),
            ("max_event_data", max_event_data),
        ):
            if number <= 0:
                raise ConfigError(f"{what} must be positive, not {number}")
        if delivery_timeout <= 0:
            raise ConfigError("delivery_timeout must be positive")
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
        self._pending_zero: tuple[int, int] | None = None
        self._baseline_thread: threading.Thread | None = None
        self._baseline_done = threading.Event()
        self._baseline_error: BaseException | None = None
        self._baseline_end = -1
        self._baseline_stop = threading.Event()
        self._control: ControlServer | None = None
        self._run_link: Path | None = None

        created = self._open_backing(size)
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
                self._start_control(run_dir)
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
        self._check_range("write", offset, len(buf))
        deliveries: list[Delivery] = []
        with self._lock:
            self._check_usable()
            whole = len(buf) <= self.max_event_data  # bytes need no copy then
            for start in range(0, len(buf), self.max_event_data):
                piece = (
                    data
                    if whole and isinstance(data, bytes)
                    else bytes(buf[start : start + self.max_event_data])
                )
                deliveries.append(
                    self._emit(
                        EventKind.WRITE, offset=offset + start, length=len(piece), data=piece
                    )
                )
            self._apply(lambda: _pwrite_all(self._fd, buf, offset))
        return self._settle(deliveries)

    def read(self, offset: int, length: int) -> bytes:
        """The volume's bytes ``[offset, offset+length)`` (reads are not captured)."""
        self._check_open()
        self._check_range("read", offset, length)
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
            if self._baseline_thread is None or self._baseline_done.is_set():
                self._start_baseline_locked()
        if not wait:
            return -1
        return self.wait_baseline()

    def wait_baseline(self, timeout: float | None = None) -> int:
        """Wait for the running baseline and its acknowledgements; BASELINE_END's offset."""
        thread = self._baseline_thread
        if thread is None:
            return self._baseline_end
        thread.join(timeout)
        if thread.is_alive():
            raise VolumeError(f"baseline of {self.volume} still running after {timeout}s")
        if self._baseline_error is not None:
            raise self._baseline_error
        self.flush()
        return self._baseline_end

    @property
    def baseline_complete(self) -> bool:
        """True once no baseline is running or pending and the last one succeeded."""
        return self._baseline_thread is None or (
            self._baseline_done.is_set() and self._baseline_error is None
        )

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
        self._baseline_stop.set()
        if self._baseline_thread is not None:
            self._baseline_thread.join()
        clean = False
        try:
            if self._failure is None:
                with self._lock:
                    self._emit(EventKind.SESSION_END)
                self.flush()
                clean = self.baseline_complete
        except (DeliveryError, VolumeError) as exc:
            log.error("volume %s closed uncleanly: %s", self.volume, exc)
            raise
        finally:
            self._closed = True
            self._publisher.close()
            save_state(self.path, self._state(clean=clean))
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
    def _open_backing(self, size: int | None) -> bool:
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ConfigError(f"volume size must be a positive number of bytes, not {size!r}")
        created = False
        try:
            if not self.path.exists():
                if size is None:
                    raise VolumeError(f"{self.path} does not exist and no size was given")
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                os.ftruncate(fd, size)
                created = True
            else:
                fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise VolumeError(f"cannot open backing file {self.path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise VolumeError(f"{self.path} is already used by another intercept") from None
        actual = os.lseek(fd, 0, os.SEEK_END)
        self._is_file = stat.S_ISREG(os.fstat(fd).st_mode)
        if size is not None and actual != size:
            os.close(fd)
            raise VolumeError(f"{self.path} holds {actual} bytes, not the {size} asked for")
        if actual <= 0:
            os.close(fd)
            raise VolumeError(f"{self.path} is empty: a volume needs a positive size")
        self._fd, self._size = fd, actual
        return created

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
            if created:
                self._emit(EventKind.BASELINE_START)
                self._emit(EventKind.BASELINE_END)
        self.session_offset = self._settle([first], always_wait=True)
        if not created and (policy == "always" or (policy == "auto" and not resumed)):
            with self._lock:
                self._start_baseline_locked()

    def _start_baseline_locked(self) -> None:
        self._baseline_done.clear()
        self._baseline_error = None
        self._baseline_thread = threading.Thread(
            target=self._run_baseline, name=f"kcdp-baseline-{self.volume}", daemon=True
        )
        self._baseline_thread.start()

    def _run_baseline(self) -> None:
        try:
            with self._lock:
                self._check_usable()
                self._emit(EventKind.BASELINE_START)
            pos = 0
            while pos < self._size:
                if self._baseline_stop.is_set():
                    raise VolumeError(f"baseline of {self.volume} interrupted by close")
                with self._lock:
                    self._check_usable()
                    n = min(self.baseline_chunk, self._size - pos)
                    chunk = os.pread(self._fd, n, pos)
                    if len(chunk) != n:
                        raise VolumeError(f"short read from {self.path} at {pos}")
                    if _is_zero(chunk):
                        start = self._pending_zero[0] if self._pending_zero else pos
                        self._pending_zero = (start, pos + n)
                    else:
                        self._flush_pending_zero()
                        for at in range(0, n, self.max_event_data):
                            piece = chunk[at : at + self.max_event_data]
                            self._emit(
                                EventKind.BASELINE, offset=pos + at, length=len(piece), data=piece
                            )
                pos += n
            with self._lock:
                self._check_usable()
                end = self._emit(EventKind.BASELINE_END)
            self._baseline_end = self._publisher.wait(end)
        except BaseException as exc:
            self._baseline_error = exc
            if not isinstance(exc, VolumeError) or not self._baseline_stop.is_set():
                log.error("baseline of %s failed: %s", self.volume, exc)
        finally:
            self._baseline_done.set()

    def _flush_pending_zero(self) -> None:
        """Publish the baseline's pending run of zero chunks (caller holds the lock)."""
        if self._pending_zero is not None:
            start, end = self._pending_zero
            self._pending_zero = None
            self._emit_event(EventKind.ZERO, offset=start, length=end - start)

    # -- capture internals (the caller holds self._lock) --------------------------------
    def _emit(
        self,
        kind: EventKind,
        *,
        offset: int = 0,
        length: int = 0,
        data: bytes = b"",
        name: str = "",
    ) -> Delivery:
        self._flush_pending_zero()
        return self._emit_event(kind, offset=offset, length=length, data=data, name=name)

    def _emit_event(
        self,
        kind: EventKind,
        *,
        offset: int = 0,
        length: int = 0,
        data: bytes = b"",
        name: str = "",
    ) -> Delivery:
        event = WriteEvent(
            group=self.group,
            volume=self.volume,
            sequence=self._sequence + 1,
            kind=kind,
            timestamp_us=now_us(),
            offset=offset,
            length=length,
            data=data,
            volume_size=self._size,
            crc32c=crc32c(data) if data else 0,
            session=self._session,
            host=self._host,
            name=name,
        )
        event.validate()
        value = self._codec.encode(_record(event))
        try:
            delivery = self._publisher.send(self._key, value)
        except KcdpError as exc:  # nothing of this call may be half-published silently
            self._fail(exc.message)
            raise
        self._sequence = event.sequence
        return delivery

    def _clear(self, kind: EventKind, offset: int, length: int) -> int:
        self._check_range(kind.lower(), offset, length)
        with self._lock:
            self._check_usable()
            delivery = self._emit(kind, offset=offset, length=length)
            self._apply(lambda: _clear_range(self._fd, offset, length, punch=self._is_file))
        return self._settle([delivery])

    def _apply(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            self._fail(f"backing file {self.path}: {exc}")
            raise VolumeError(f"cannot update backing file {self.path}: {exc}") from None

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

    def _check_range(self, what: str, offset: int, length: int) -> None:
        if not isinstance(offset, int) or not isinstance(length, int):
            raise InvalidEventError(f"{what}: offset and length must be integers")
        if offset < 0 or length < 0:
            raise InvalidEventError(f"{what}: negative offset or length ({offset}, {length})")
        if length == 0:
            raise InvalidEventError(f"{what}: empty {what} at {offset} on volume {self.volume}")
        if offset + length > self._size:
            raise InvalidEventError(
                f"{what} [{offset}, {offset + length}) ends past the end of volume "
                f"{self.volume} ({self._size} bytes)"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise VolumeError(f"volume {self.volume} is closed")

    def _check_usable(self) -> None:
        self._check_open()
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
    def _start_control(self, run_dir: str | os.PathLike[str] | None) -> None:
        self._control = ControlServer(socket_path(self.path), self._handle_control)
        if run_dir is not None:
            link = Path(run_dir) / f"{self.volume}.sock"
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(self._control.path.resolve())
            self._run_link = link

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
        if self._run_link is not None:
            if self._run_link.is_symlink():
                self._run_link.unlink()
            self._run_link = None

    def _abandon(self) -> None:
        """Tear down after a failed open: the state stays unclean."""
        self._closed = True
        self._stop_control()
        self._baseline_stop.set()
        self._publisher.close()
        os.close(self._fd)


def _record(event: WriteEvent) -> dict[str, Any]:
    """``event.to_record()`` without dataclasses.asdict's deep copy (hot path)."""
    return {
        "format_version": event.format_version,
        "group": event.group,
        "volume": event.volume,
        "session": event.session,
        "host": event.host,
        "sequence": event.sequence,
        "kind": str(event.kind),
        "offset": event.offset,
        "length": event.length,
        "data": event.data,
        "volume_size": event.volume_size,
        "timestamp_us": event.timestamp_us,
        "crc32c": event.crc32c,
        "name": event.name,
    }


def _is_zero(chunk: bytes) -> bool:
    n = len(chunk)
    if n <= len(_ZERO_BLOCK):
        return chunk == _ZERO_BLOCK[:n]
    return chunk.count(0) == n


def _pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    done = 0
    while done < len(buf):
        done += os.pwrite(fd, buf[done:], offset + done)


def _clear_range(fd: int, offset: int, length: int, *, punch: bool) -> None:
    """Make ``[offset, offset+length)`` read as zeros: punch a hole, else write zeros."""
    if punch:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        res = _libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length))
        if res == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    end = offset + length
    while offset < end:
        n = min(len(_ZERO_BLOCK), end - offset)
        _pwrite_all(fd, memoryview(_ZERO_BLOCK)[:n], offset)
        offset += n
