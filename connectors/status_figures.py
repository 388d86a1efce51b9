"""What ``kcdp status`` reports (:class:`VolumeStatus`, :class:`WorkerHealth`; definitions in
the README, "Status and metrics") and the figures it takes from the store alone: which
volumes exist, the bytes they store, their restorable span.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from connectors.restore.catalog import Catalog
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.checkpoint import load_checkpoint
from schemas.retention import TIER_ANY_POINT, tier_of


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """The worker group as the broker sees it, for one partition."""

    group_id: str
    committed_offset: int | None
    high_watermark: int
    uncommitted: int | None
    members: int | None
    state: str


@dataclass(frozen=True, slots=True)
class VolumeStatus:
    """The status of one volume; every field is JSON-able (times in µs since the epoch)."""

    volume: str
    group: str
    topic: str
    partition: int
    last_captured_offset: int | None
    last_captured_time_us: int | None
    last_durable_first_offset: int | None
    last_durable_offset: int | None
    last_durable_time_us: int | None
    windows: int
    lag_events: int
    lag_bytes: int
    lag_complete: bool
    rpo_seconds: float
    oldest_point: int | None
    newest_point: int | None
    bytes_stored: int
    gaps: list[dict[str, Any]]
    dlq_events: int
    #: dead letters of the volume by reason (the DLQ record's ``error`` class name)
    dlq_by_reason: dict[str, int]
    #: sessions fenced out of the history, as of the newest stored window
    fenced_sessions: list[str]
    #: records held in quarantine now, and records re-reads found, from the workers'
    #: ``/metrics`` (None: no worker that builds the volume was read)
    quarantined: int | None
    reread_found: int | None
    #: why the newest stored window is not vouched for by the volume's head (a deleted or
    #: replaced newest manifest: ``newest_point`` may then be older than the true newest),
    #: None when it is (docs/FORMAT.md "Head")
    history_problem: str | None
    worker: WorkerHealth
    checked_us: int
    #: retention (docs/FORMAT.md "Retention"): seconds of any-point history (newest event
    #: minus the first event of the oldest window of the journal), the policy's keep_within,
    #: whether the journal holds less than 75% of it, the base, and the last prune's time
    history_seconds: float | None = None
    history_target_seconds: float | None = None
    history_short: bool = False
    base_offset: int | None = None
    last_prune_us: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_volumes(store: ObjectStore, topic: str) -> dict[str, int | None]:
    """Volumes in ``store``: name -> partition of ``topic`` from its marker (None: no marker).

    Markers are ``v1/partitions/<topic>/<partition>/<volume>``; volumes with manifests but
    no marker (another topic, or a marker lost) are listed too.
    """
    found: dict[str, int | None] = {}
    prefix = f"{keys.LAYOUT}/partitions/{topic}/"
    for info in store.list(prefix):
        part, _, name = info.key[len(prefix) :].partition("/")
        if part.isdigit() and name and "/" not in name:
            found[name] = int(part)
    vprefix = keys.volumes_prefix()
    for info in store.list(vprefix):
        name = info.key[len(vprefix) :].split("/", 1)[0]
        found.setdefault(name, None)
    return found


def stored_bytes(store: ObjectStore, catalog: Catalog) -> int:
    """Bytes of the volume's objects plus its distinct checkpoint chunks (stored sizes)."""
    total = sum(info.size for info in store.list(keys.volume_prefix(catalog.volume)))
    chunks: dict[str, int] = {}
    for offset in catalog.checkpoints:
        cp = load_checkpoint(store, catalog.volume, offset)
        for digest, size in zip(cp.chunks, cp.chunk_sizes, strict=False):
            if digest is not None:
                chunks[digest] = size
    return total + sum(chunks.values())


def restorable_span(catalog: Catalog) -> tuple[int | None, int | None]:
    """(oldest, newest) restorable point, loading manifests only from the two ends."""
    n = len(catalog)
    oldest = next(
        (
            m.restorable_from
            for m in (catalog.manifest(i) for i in range(n))
            if m.restorable_from is not None
        ),
        None,
    )
    newest = next(
        (m.last_offset for m in (catalog.manifest(i) for i in reversed(range(n))) if m.consistent),
        None,
    )
    return oldest, newest


#: Below this share of keep_within the any-point journal is reported short (Zerto's alert).
HISTORY_ALERT_SHARE = 0.75


def history_figures(catalog: Catalog, keep_within: float | None) -> dict[str, Any]:
    """The retention fields of :class:`VolumeStatus` for ``catalog``'s volume."""
    state = catalog.retention
    out: dict[str, Any] = {
        "base_offset": None if catalog.base is None else catalog.base.offset,
        "last_prune_us": None if state is None else state.updated_us,
        "history_target_seconds": keep_within,
    }
    journal = state.journal_from if state else None
    manifests = catalog.manifests() if len(catalog) else []
    oldest = next(
        (i for i, m in enumerate(manifests) if tier_of(m, journal) == TIER_ANY_POINT), None
    )
    if oldest is not None:
        since = manifests[oldest].first_time_us  # from the kept edge before it, if any
        if oldest > 0:
            since = manifests[oldest - 1].last_time_us
        elif catalog.base is not None:
            since = catalog.base.time_us
        seconds = max(0.0, (manifests[-1].last_time_us - since) / 1e6)
        out["history_seconds"] = round(seconds, 3)
        out["history_short"] = (
            keep_within is not None and seconds < HISTORY_ALERT_SHARE * keep_within
        )
    return out
