"""The worker's configuration (:class:`WorkerOptions`) and the settings every volume builder
of one worker shares (:class:`BuildOptions`), with their documented defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connectors.config import DEFAULT_GROUP_ID
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


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Worker configuration (defaults in brackets).

    ``workdir``: the volumes' images and Faust data. ``group_id`` [kcdp-increments]: consumer
    group and Faust app id. ``web_port`` [None: no web server]: serves ``/metrics``.
    ``session_timeout`` [6 s] / ``heartbeat_interval`` [1 s]: Kafka group timings.
    ``batch_size`` [1000 records] / ``batch_within`` [0.05 s]: most records per read and
    the longest a read waits for them.
    ``tick_interval`` [0.25 s]: how often deadlines are checked. ``checkpoint_windows``
    [64] / ``checkpoint_bytes`` [1 GiB]: checkpoint cadence per volume.
    ``close_threads`` [2]: threads per partition that store cut windows while the next
    batches are processed (0: store each window before its batch is committed).
    ``store_processes`` [0]: store them in that many child processes instead, shared by
    all partitions and started with the worker (:class:`streams.storing.WindowStorers`:
    decoding and storing then do not share one interpreter lock; ``kcdp worker`` uses 2
    unless the store is ``memory://``, which child processes cannot share).
    ``registry_wait`` [60 s]: with ``settings.schema_registry``, how long a registry that
    cannot answer is retried before the worker fails (:class:`~connectors.errors.RegistryError`:
    its records are never dead-lettered for it).
    """

    workdir: Path
    policy: WindowPolicy
    group_id: str = DEFAULT_GROUP_ID
    web_port: int | None = None
    web_host: str = "127.0.0.1"
    session_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    batch_size: int = 1000
    batch_within: float = 0.05
    tick_interval: float = 0.25
    checkpoint_windows: int = 64
    checkpoint_bytes: int = 1 << 30
    close_threads: int = 2
    store_processes: int = 0
    flush_timeout: float = 30.0
    registry_wait: float = 60.0
