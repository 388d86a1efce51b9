"""The session of one open of an intercepted volume (docs/FORMAT.md "Event rules", "Local
state files"): its id and the sequence of its events, whether it resumes the previous
session, the publication of its events, its baselines, and the state file that tells the
next open how this one ended.

A session stops capturing at its first failure (an event not published or not
acknowledged, the backing file not updated) and once it publishes ``SESSION_END``; its
state file says ``clean`` only after a close that published and acknowledged everything.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from connectors.errors import DeliveryError, KcdpError, VolumeError
from connectors.intercept.baseline import BaselineCopy
from connectors.intercept.options import BaselinePolicy
from connectors.intercept.publisher import Delivery, Publisher
from connectors.intercept.state import InterceptState, load_state, save_state
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, now_us


class Session:
    """The events of one open of ``volume`` (of ``group``, ``size`` bytes, backed by
    ``path``), published through ``publisher`` encoded by ``codec``; ``sync``: each call
    waits for its acknowledgement.

    ``lock`` is the volume's write lock: :meth:`emit`, :meth:`publish`, :meth:`end` and
    :meth:`start_baseline` are called with it held; :meth:`begin` and the baseline copies
    take it themselves.
    """

    def __init__(
        self,
        path: Path,
        *,
        volume: str,
        group: str,
        size: int,
        host: str,
        lock: threading.Lock,
        publisher: Publisher,
        codec: AvroCodec,
        sync: bool,
    ) -> None:
        self.path, self.volume, self.group, self.size, self.host = path, volume, group, size, host
        self._lock, self._publisher, self._codec, self._sync = lock, publisher, codec, sync
        self._key = group.encode("utf-8")
        #: This session's id (32 hex digits).
        self.id = uuid.uuid4().hex
        #: Sequence of the last event handed to the producer (-1 before SESSION_START).
        self.sequence = -1
        #: Kafka offset of SESSION_START (set by :meth:`begin`).
        self.start_offset = -1
        #: The first failure that stopped capturing, or None.
        self.failure: str | None = None
        #: True once SESSION_END is due: nothing may follow it.
        self.ending = False
        self._baseline_end = -1  # BASELINE_END of a new volume's empty baseline
        self._copy: BaselineCopy | None = None

    # -- opening and closing ------------------------------------------------------------
    def begin(
        self, *, created: bool, policy: BaselinePolicy, new_copy: Callable[[], BaselineCopy]
    ) -> None:
        """Open the session: read the state file, record this session as open (unclean),
        publish SESSION_START (and a new volume's empty baseline) and wait for it, then
        start a baseline copy (``new_copy``) if ``policy`` asks for one.

        The session resumes the previous one (SESSION_START names it) only after that one's
        clean close of the same volume, group and size, on a backing that already existed
        (``created`` False). With ``auto`` it copies the volume unless it resumes; with
        ``always`` unless ``created``. :class:`VolumeError` if the state file is of an
        unknown version or cannot be written.
        """
        previous = load_state(self.path)
        resumed = (
            not created
            and previous is not None
            and previous.clean
            and previous.matches(volume=self.volume, group=self.group, volume_size=self.size)
        )
        self.save(clean=False)
        with self._lock:
            first = self.emit(
                EventKind.SESSION_START, name=previous.session if resumed and previous else ""
            )
            opening = [first]
            if created:  # a new, all-zero volume: an empty baseline
                opening.append(self.emit(EventKind.BASELINE_START))
                opening.append(self.emit(EventKind.BASELINE_END))
        self.settle(opening, always_wait=True)
        self.start_offset = first.offset
        if created:
            self._baseline_end = opening[-1].offset
        if not created and (policy == "always" or (policy == "auto" and not resumed)):
            with self._lock:
                self.start_baseline(new_copy)

    def end(self) -> None:
        """Publish SESSION_END unless capturing stopped; nothing may follow (lock held)."""
        self.ending = True
        if self.failure is None:
            self.emit(EventKind.SESSION_END)

    def save(self, *, clean: bool) -> None:
        """Record the session in the state file; ``clean`` only after a clean close."""
        save_state(
            self.path,
            InterceptState(
                volume=self.volume,
                group=self.group,
                session=self.id,
                sequence=self.sequence,
                clean=clean,
                volume_size=self.size,
            ),
        )

    # -- events -------------------------------------------------------------------------
    def emit(
        self,
        kind: EventKind,
        offset: int = 0,
        data: bytes = b"",
        *,
        length: int | None = None,
        name: str = "",
        track: bool = True,
    ) -> Delivery:
        """:meth:`publish`, after the running baseline's pending run of zero chunks."""
        if self._copy is not None:
            self._copy.flush_pending_zero()
        return self.publish(kind, offset, data, length=length, name=name, track=track)

    def publish(
        self,
        kind: EventKind,
        offset: int = 0,
        data: bytes = b"",
        *,
        length: int | None = None,
        name: str = "",
        track: bool = True,
    ) -> Delivery:
        """Number, seal, encode and publish the session's next event (``length`` None:
        ``len(data)``); a failure to publish stops capturing.

        ``track`` False: the returned Delivery is not followed (nobody waits for it).
        """
        event = WriteEvent(
            group=self.group,
            volume=self.volume,
            sequence=self.sequence + 1,
            kind=kind,
            timestamp_us=now_us(),
            offset=offset,
            length=len(data) if length is None else length,
            data=data,
            volume_size=self.size,
            session=self.id,
            host=self.host,
            name=name,
        ).seal()
        event.validate_trusting_crc()  # the seal was just computed from the fields above
        value = self._codec.encode_event(event)
        try:
            delivery = self._publisher.send(self._key, value, track=track)
        except KcdpError as exc:  # nothing of this call may be half-published silently
            self.fail(exc.message)
            raise
        self.sequence = event.sequence
        return delivery

    def settle(self, deliveries: list[Delivery], *, always_wait: bool = False) -> int:
        """The offset of the last of ``deliveries`` once all are acknowledged; -1 without
        waiting in async mode unless ``always_wait``. A failed delivery stops capturing."""
        if not self._sync and not always_wait:
            return -1
        offset = -1
        try:
            for delivery in deliveries:
                offset = self._publisher.wait(delivery)
        except DeliveryError as exc:
            self.fail(exc.message)
            raise
        return offset

    def drain(self) -> int:
        """Wait for every event in flight; the last acknowledged offset."""
        try:
            return self._publisher.drain()
        except DeliveryError as exc:
            self.fail(exc.message)
            raise

    def check_capturing(self) -> None:
        """Raise unless the session may still publish: not ending, not stopped by a failure."""
        if self.ending:
            raise VolumeError(f"volume {self.volume} is closing")
        if self.failure is not None:
            raise DeliveryError(
                f"volume {self.volume} stopped capturing after a failure ({self.failure}); "
                "reopen it (the next open takes a baseline)"
            )

    def fail(self, reason: str) -> None:
        """Stop capturing for ``reason`` (the first failure is kept)."""
        if self.failure is None:
            self.failure = reason

    # -- baselines ----------------------------------------------------------------------
    def start_baseline(self, new_copy: Callable[[], BaselineCopy]) -> None:
        """Start a baseline copy made by ``new_copy`` unless one is running (lock held)."""
        if self._copy is None or self._copy.done:
            self._copy = new_copy()
            self._copy.start()

    def wait_baseline(self, timeout: float | None, flush: Callable[[], object]) -> int:
        """Wait for the running (or last) baseline copy, then ``flush``; the offset of its
        BASELINE_END (no copy taken: the empty baseline's, or -1).

        :class:`VolumeError` if it still runs after ``timeout``; the copy's error if it
        failed."""
        copy = self._copy
        if copy is None:
            return self._baseline_end
        copy.thread.join(timeout)
        if not copy.done:
            raise VolumeError(f"baseline of {self.volume} still running after {timeout}s")
        if copy.error is not None:
            raise copy.error
        flush()
        return copy.end_offset

    @property
    def baseline_complete(self) -> bool:
        """True once no baseline copy is running and the last one succeeded."""
        return self._copy is None or self._copy.succeeded

    def stop_baseline(self) -> None:
        """Interrupt a running copy (it ends with an error) and wait for it."""
        if self._copy is not None:
            self._copy.stop()
