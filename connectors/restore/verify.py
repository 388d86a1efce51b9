"""Scrub a volume's history in the store, and list its restore points.

:func:`verify_volume` checks that every manifest parses, matches its digest (version 2)
and names its own key; that the chain is unbroken (:func:`schemas.manifest.link_problem`
for each window: offsets and digests; a missing manifest is named by its key); that the
head anchors the newest window (docs/FORMAT.md "Head"); that each checkpoint pairs with the
manifest ending at its offset; that every object exists with the recorded size; and lists
recorded gaps and the windows whose manifests are version 1 (unauthenticated). With
``read_data`` it downloads every object and checkpoint chunk and checks its SHA-256, every
extent's and record's CRC-32C, the counts the manifest records (extents, logical bytes,
records), and that each forward increment hashes to the manifest's ``ranges_sha256``; the
bytes of ``in_forward`` write-log records are checked against their CRC-32C in the
window's forward increment (docs/FORMAT.md "Write log").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from connectors.errors import GapError, IntegrityError, KcdpError, ObjectNotFoundError
from connectors.restore.catalog import Catalog
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.chain import Broken, Predecessor, link_problem
from schemas.checkpoint import check_pairing, fetch_chunk
from schemas.events import crc32c
from schemas.extents import Extent
from schemas.head import anchor_problem
from schemas.increment import ranges_digest, read_increment
from schemas.manifest import Manifest, ObjectRef, get_verified
from schemas.retention import TIER_BASE, tier_of
from schemas.writelog import ForwardBytes, read_log


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: ``kind`` is ``integrity`` (bad bytes or structure) or ``gap``."""

    kind: str
    key: str
    detail: str


@dataclass(slots=True)
class VerifyReport:
    volume: str
    windows: int = 0
    checkpoints: int = 0
    objects_checked: int = 0
    bytes_checked: int = 0
    read_data: bool = False
    problems: list[Problem] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    #: manifests of version 1: readable, but nothing authenticates their fields
    unauthenticated: list[str] = field(default_factory=list)
    #: consolidated windows (retention), and keys waiting out the grace period
    consolidated: int = 0
    candidates: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "ok": self.ok,
            "windows": self.windows,
            "checkpoints": self.checkpoints,
            "objects_checked": self.objects_checked,
            "bytes_checked": self.bytes_checked,
            "read_data": self.read_data,
            "problems": [asdict(p) for p in self.problems],
            "gaps": self.gaps,
            "unauthenticated": self.unauthenticated,
            "consolidated": self.consolidated,
            "candidates": self.candidates,
        }

    def to_text(self) -> str:
        lines = [
            f"volume {self.volume}: {self.windows} windows, {self.checkpoints} checkpoints, "
            f"{self.objects_checked} objects checked"
            + (f" ({self.bytes_checked} bytes read)" if self.read_data else " (sizes only)"),
        ]
        for g in self.gaps:
            lines.append(f"  gap        {g['kind']} at offset {g['at_offset']}: {g['detail']}")
        v1 = self.unauthenticated
        if v1:
            lines.append(
                f"  v1         {len(v1)} window(s) unauthenticated (manifest version 1, no "
                f"digest): {v1[0]}" + (f" .. {v1[-1]}" if len(v1) > 1 else "")
            )
        for p in self.problems:
            lines.append(f"  {p.kind:<10} {p.key}: {p.detail}")
        lines.append("OK" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def verify_volume(
    store: ObjectStore, volume: str, *, read_data: bool = False, workers: int = 4
) -> VerifyReport:
    """Scrub ``volume``; the report lists every problem found (it does not raise for them)."""
    catalog = Catalog(store, volume, workers=workers)
    report = VerifyReport(volume=volume, windows=len(catalog), read_data=read_data)
    report.checkpoints = len(catalog.checkpoints)
    report.gaps = [
        {
            "kind": g.kind,
            "at_offset": g.at_offset,
            "after_offset": g.after_offset,
            "detail": g.detail,
        }
        for g in catalog.gaps
    ]
    manifests: list[Manifest | None] = []
    for i, w in enumerate(catalog.windows):
        try:
            manifests.append(catalog.manifest(i))
        except KcdpError as exc:
            manifests.append(None)
            report.problems.append(Problem(_kind(exc), w.key, exc.message))
    _check_chain(catalog, manifests, report)
    _check_head(catalog, manifests, report)
    present = [m for m in manifests if m is not None]
    report.unauthenticated = [m.key for m in present if m.version < 2]
    report.consolidated = sum(1 for m in present if m.merged is not None)
    report.candidates = len(catalog.retention.candidates) if catalog.retention else 0
    check = _read_window if read_data else _stat_window
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for m, found in zip(present, pool.map(lambda m: check(store, m), present), strict=True):
            report.objects_checked += len(m.objects())
            report.bytes_checked += _refs_size(m) if read_data else 0
            report.problems.extend(found)
        chunks = _check_checkpoints(catalog, manifests, report)
        if read_data:
            items = list(chunks.items())
            for bad in pool.map(lambda it: _read_chunk(store, it[0], *it[1]), items):
                report.objects_checked += 1
                if bad is not None:
                    report.problems.append(bad)
    return report


def _check_checkpoints(
    catalog: Catalog, manifests: list[Manifest | None], report: VerifyReport
) -> dict[str, tuple[int, str]]:
    """Each checkpoint pairs with the window ending at its offset (the base with
    retention.json); returns the chunks they reference (name -> raw length, naming)."""
    chunks: dict[str, tuple[int, str]] = {}
    ending = {w.last: k for k, w in enumerate(catalog.windows)}
    base = catalog.base
    for offset in catalog.checkpoints:
        try:
            cp = catalog.checkpoint(offset)
            k = ending.get(offset)
            if base is not None and offset == base.offset:
                if cp.digest != base.checkpoint_digest:
                    raise IntegrityError(f"{cp.key}: is not the base checkpoint of retention")
            elif k is None and _consolidated_over(catalog, offset):
                report.candidates += 1  # a prune dropped its edge and will mark it
                continue
            elif k is None or manifests[k] is not None:  # else: its problem is listed
                check_pairing(cp, None if k is None else manifests[k])
        except (GapError, IntegrityError) as exc:
            key = keys.checkpoint_key(catalog.volume, offset)
            report.problems.append(Problem(_kind(exc), key, exc.message))
            continue
        for i, digest in enumerate(cp.chunks):
            if digest is not None:
                start, end = cp.chunk_range(i)
                chunks[digest] = (end - start, cp.chunk_names)
    return chunks


def _consolidated_over(catalog: Catalog, offset: int) -> bool:
    """Whether ``offset`` lies inside a consolidated window (its point was dropped)."""
    i = catalog.index_for(offset)
    if i is None or offset > catalog.windows[i].last:
        return False
    try:
        return catalog.manifest(i).merged is not None
    except KcdpError:
        return False


def _kind(exc: KcdpError) -> str:
    return "gap" if isinstance(exc, GapError | ObjectNotFoundError) else "integrity"


def _problem(broken: Broken) -> Problem:
    return Problem(_kind(broken.error), broken.key, broken.error.message)


def _check_chain(catalog: Catalog, manifests: list[Manifest | None], report: VerifyReport) -> None:
    """Each window must follow the stored one before it (its offsets when that manifest is
    unreadable: its own problem is listed already)."""
    windows = catalog.windows
    for k, m in enumerate(manifests):
        if k and windows[k].first <= windows[k - 1].last:
            report.problems.append(
                Problem(
                    "integrity",
                    windows[k].key,
                    f"overlaps window {windows[k - 1].first}-{windows[k - 1].last}",
                )
            )
        if m is None:
            continue
        before = manifests[k - 1] if k else None
        prev: Predecessor = before or ((windows[k - 1].first, windows[k - 1].last) if k else None)
        if not k and catalog.base is not None:
            prev = catalog.base.link
        broken = link_problem(prev, m)
        if broken is not None:
            report.problems.append(_problem(broken))


def _check_head(catalog: Catalog, manifests: list[Manifest | None], report: VerifyReport) -> None:
    """The head must anchor the newest window (unless that manifest's problem is listed)."""
    newest = manifests[-1] if manifests else None
    if manifests and newest is None:
        return
    try:
        head = catalog.head()
    except IntegrityError as exc:
        report.problems.append(Problem("integrity", keys.head_key(catalog.volume), exc.message))
        return
    if newest is None:
        if head is not None:
            missing = keys.manifest_key(catalog.volume, head.first_offset, head.last_offset)
            detail = f"the head names {head.window}, whose manifest is missing (none is stored)"
            report.problems.append(Problem("gap", missing, detail))
        return
    broken = anchor_problem(head, newest, volume=catalog.volume)
    if broken is not None:
        report.problems.append(_problem(broken))


def _refs_size(m: Manifest) -> int:
    return sum(ref.size for ref in m.objects())


def _stat_window(store: ObjectStore, m: Manifest) -> list[Problem]:
    found = (_stat_object(store, r) for r in m.objects())
    return [p for p in found if p is not None]


def _stat_object(store: ObjectStore, ref: ObjectRef) -> Problem | None:
    try:
        size = store.stat(ref.key).size
    except ObjectNotFoundError:
        return Problem("gap", ref.key, "object is missing")
    if size != ref.size:
        return Problem("integrity", ref.key, f"{size} bytes, manifest says {ref.size}")
    return None


def _read_window(store: ObjectStore, m: Manifest) -> list[Problem]:
    """Read a window's three objects; check the log's in_forward records in the forward."""
    problems: list[Problem] = []
    forward: list[Extent] | None = None
    for ref, direction in ((m.forward, "forward"), (m.backward, "backward")):
        try:
            extents = list(
                read_increment(get_verified(store, ref), expect_direction=direction, name=ref.key)
            )
        except (IntegrityError, GapError) as exc:
            problems.append(Problem(_kind(exc), ref.key, exc.message))
            continue
        try:
            logical = sum(e.length for e in extents)
            ref.check_counts(manifest=m.key, extents=len(extents), logical_bytes=logical)
        except IntegrityError as exc:
            problems.append(Problem("integrity", m.key, exc.message))
        if direction == "forward":
            if ranges_digest(extents) != m.ranges_sha256:
                problems.append(
                    Problem("integrity", ref.key, "content does not match ranges_sha256")
                )
            else:
                forward = extents
    log = m.writelog
    if log is None:  # a consolidated window
        return problems
    try:
        records = list(read_log(get_verified(store, log), name=log.key))
        try:
            log.check_counts(manifest=m.key, records=len(records))
        except IntegrityError as exc:
            problems.append(Problem("integrity", m.key, exc.message))
        fwd = ForwardBytes(forward, name=m.forward.key) if forward is not None else None
        for rec in records:
            if not rec.in_forward:
                continue
            if fwd is None:
                problems.append(
                    Problem(
                        "integrity",
                        log.key,
                        f"in_forward records cannot be checked: {m.forward.key} is unusable",
                    )
                )
                break
            if crc32c(fwd.read(rec.offset, rec.length)) != rec.crc32c:
                raise IntegrityError(
                    f"{log.key}: the bytes of the record at Kafka offset {rec.kafka_offset} "
                    f"in {m.forward.key} do not match the record's CRC-32C"
                )
    except (IntegrityError, GapError) as exc:
        problems.append(Problem(_kind(exc), log.key, exc.message))
    return problems


def _read_chunk(store: ObjectStore, digest: str, length: int, names: str) -> Problem | None:
    try:
        fetch_chunk(store, digest, length, names)
    except (IntegrityError, GapError) as exc:
        return Problem(_kind(exc), keys.chunk_key(digest), exc.message)
    return None


def list_points(catalog: Catalog) -> dict[str, Any]:
    """Restore points of a volume: windows, bookmarks, checkpoints, gaps, oldest/newest."""
    manifests = catalog.manifests() if len(catalog) else []
    span = catalog.restorable_span() if manifests else None
    journal = catalog.retention.journal_from if catalog.retention else None
    tiers = [tier_of(m, journal) for m in manifests]
    oldest: dict[str, int] = {}
    for m, tier in zip(manifests, tiers, strict=True):
        if m.restorable_from is not None:
            oldest.setdefault(tier, m.restorable_from)
    base = catalog.base
    if base is not None and base.consistent:
        oldest[TIER_BASE] = base.offset
    return {
        "volume": catalog.volume,
        "oldest": None if span is None else span[0],
        "newest": None if span is None else span[1],
        "oldest_by_tier": oldest,
        "base": None if base is None else base.offset,
        # the newest window is not vouched for by the head: "newest" may not be the newest
        "history_problem": catalog.history_problem(),
        "windows": [
            {
                "first_offset": m.first_offset,
                "last_offset": m.last_offset,
                "first_time_us": m.first_time_us,
                "last_time_us": m.last_time_us,
                "events": m.events,
                "restorable_from": m.restorable_from,
                "consistent": m.consistent,
                "tier": tier,
                "windows": m.merged.windows if m.merged else 1,
            }
            for m, tier in zip(manifests, tiers, strict=True)
        ],
        "bookmarks": [asdict(b) for m in manifests for b in m.bookmarks],
        "checkpoints": list(catalog.checkpoints),
        "gaps": [
            {"kind": g.kind, "at_offset": g.at_offset, "detail": g.detail} for g in catalog.gaps
        ],
    }
