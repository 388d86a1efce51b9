"""The settings every volume builder of one worker shares (:class:`BuildOptions`), with
their documented defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.checkpoint import DEFAULT_CHUNK_SIZE
from schemas.events import now_us
from streams.admission import DEFAULT_HOLD_US, DEFAULT_SUPPORT
from streams.window import WindowPolicy


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """Settings shared by the builders of one worker.

    ``checkpoint_windows`` (default 64) and ``checkpoint_bytes`` (default 1 GiB of written
    data): a checkpoint is taken after the window that reaches either since the last one;
    0 disables that trigger. ``chunk_size``: checkpoint chunk size (4 MiB).
    ``image_sync_windows`` (default 16, at least 1): the volume's image is fsynced and its
    applied offset recorded after every that many windows (and when the builder closes).
    ``close_threads`` (default 0): background threads that store cut windows while the
    partition processor goes on feeding (:class:`streams.partition.PartitionProcessor`);
    0 stores each window before the feed that cut it returns (unless the processor is
    given :class:`~streams.storing.WindowStorers`: child processes).
    ``quarantine_support`` (default 3) and ``quarantine_us`` (default 10 s of log time):
    how long an out-of-line event is held (:class:`streams.admission.VolumeLine`).
    """

    topic: str
    partition: int
    workdir: Path
    policy: WindowPolicy
    checkpoint_windows: int = 64
    checkpoint_bytes: int = 1 << 30
    chunk_size: int = DEFAULT_CHUNK_SIZE
    image_sync_windows: int = 16
    close_threads: int = 0
    quarantine_support: int = DEFAULT_SUPPORT
    quarantine_us: int = DEFAULT_HOLD_US
    clock: Callable[[], int] = now_us
