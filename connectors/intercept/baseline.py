"""A baseline copy of a volume, taken in a background thread while writes continue.

The copy reads the volume chunk by chunk, each read inside the volume's write lock, and
publishes it as ``BASELINE`` events (split at the event data limit) between
``BASELINE_START`` and ``BASELINE_END``. All-zero chunks are coalesced into one ``ZERO``
event per run; a pending run is published before any other event of the volume
(:meth:`BaselineCopy.flush_pending_zero`), so every event stays in disk order and
replaying the topic from ``BASELINE_START`` gives the disk (docs/FORMAT.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from connectors.errors import VolumeError
from connectors.intercept.backing import is_zero
from connectors.intercept.publisher import Delivery
from schemas.events import EventKind

log = logging.getLogger("kcdp.intercept")


class Emit(Protocol):
    """Publishes one event of the volume (the caller holds the volume lock)."""

    def __call__(
        self, kind: EventKind, *, offset: int = 0, length: int = 0, data: bytes = b""
    ) -> Delivery: ...


class BaselineCopy:
    """One baseline copy of the volume open on ``fd`` (``size`` bytes).

    ``lock`` is the volume's write lock; ``check`` raises when the volume may no longer
    publish; ``emit`` publishes without flushing the pending zero run; ``wait`` waits for
    a delivery and returns its offset. ``chunk`` is the read size, ``max_event_data`` the
    split size.
    """

    def __init__(
        self,
        *,
        name: str,
        fd: int,
        size: int,
        chunk: int,
        max_event_data: int,
        lock: threading.Lock,
        check: Callable[[], None],
        emit: Emit,
        wait: Callable[[Delivery], int],
    ) -> None:
        self.name, self._fd, self._size = name, fd, size
        self._chunk, self._max = chunk, max_event_data
        self._lock, self._check, self._emit, self._wait = lock, check, emit, wait
        self._pending_zero: tuple[int, int] | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.end_offset = -1
        self.thread = threading.Thread(target=self._run, name=f"kcdp-baseline-{name}", daemon=True)

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    @property
    def succeeded(self) -> bool:
        return self.done and self.error is None and self.end_offset >= 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Interrupt the copy (it ends with an error) and wait for the thread."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def flush_pending_zero(self) -> None:
        """Publish the pending run of zero chunks, if any (caller holds the lock)."""
        if self._pending_zero is not None:
            start, end = self._pending_zero
            self._pending_zero = None
            self._emit(EventKind.ZERO, offset=start, length=end - start)

    def _run(self) -> None:
        try:
            with self._lock:
                self._check()
                self._emit(EventKind.BASELINE_START)
            pos = 0
            while pos < self._size:
                if self._stop.is_set():
                    raise VolumeError(f"baseline of {self.name} interrupted by close")
                with self._lock:
                    self._check()
                    n = min(self._chunk, self._size - pos)
                    self._copy_chunk(pos, n)
                pos += n
                time.sleep(0)  # let waiting writers take the lock: the copy must not starve them
            with self._lock:
                self._check()
                self.flush_pending_zero()
                end = self._emit(EventKind.BASELINE_END)
            self.end_offset = self._wait(end)
        except BaseException as exc:
            self.error = exc
            if not self._stop.is_set():
                log.error("baseline of %s failed: %s", self.name, exc)

    def _copy_chunk(self, pos: int, n: int) -> None:
        chunk = os.pread(self._fd, n, pos)
        if len(chunk) != n:
            raise VolumeError(f"short read from the backing of {self.name} at {pos}")
        if is_zero(chunk):
            start = self._pending_zero[0] if self._pending_zero else pos
            self._pending_zero = (start, pos + n)
            return
        self.flush_pending_zero()
        for at in range(0, n, self._max):
            piece = chunk[at : at + self._max]
            self._emit(EventKind.BASELINE, offset=pos + at, length=len(piece), data=piece)
