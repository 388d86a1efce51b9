"""Test support for the restore side: random workloads, a reference model, and a store
written window by window with the shared format modules (increments, write logs,
manifests, checkpoints, gap records).

The writer here is deliberately independent of the agents' window builder: it computes
both increments straight from the reference model (bytes before / after each window), so
restore tests check the restore code against the model and the format, not against the
builder's own arithmetic. Write-log records are marked ``in_forward`` by a naive
quadratic check of the FORMAT.md rule (no later change event of the window overlaps).
"""

from __future__ import annotations

import hashlib
import io
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from connectors.restore.plan import Plan
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.checkpoint import Checkpoint, write_checkpoint
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent
from schemas.extents import Extent, split_ranges, union_ranges
from schemas.gaps import Gap
from schemas.head import put_head
from schemas.image import Image
from schemas.increment import write_increment
from schemas.manifest import Bookmark, Manifest, ObjectRef, list_window_keys
from schemas.writelog import LogRecord, needs_forward, read_log, write_log
from tests.event_factory import make_event

T0 = 1_795_571_270_000_000  # µs


@dataclass
class History:
    """Events of one partition (index = Kafka offset) and the volumes they belong to."""

    group: str
    sizes: dict[str, int]
    events: list[WriteEvent] = field(default_factory=list)

    def of(self, volume: str) -> list[tuple[int, WriteEvent]]:
        return [(o, e) for o, e in enumerate(self.events) if e.volume == volume]

    def image_at(self, volume: str, point: int) -> bytes:
        """Reference model: the volume after every one of its events with offset ≤ point."""
        img = bytearray(self.sizes[volume])
        for o, e in self.of(volume):
            if o > point:
                break
            if e.kind in DATA_KINDS:
                img[e.offset : e.offset + e.length] = e.data
            elif e.kind in CHANGE_KINDS:
                img[e.offset : e.offset + e.length] = bytes(e.length)
        return bytes(img)

    def baseline_end(self, volume: str) -> int:
        return next(o for o, e in self.of(volume) if e.kind is EventKind.BASELINE_END)


def random_history(
    rng: random.Random,
    *,
    group: str = "g",
    sizes: dict[str, int] | None = None,
    events: int = 300,
    max_write: int = 9000,
) -> History:
    """Two (or more) new volumes of one group: session + empty baseline, then random
    unaligned, overlapping WRITE/ZERO/TRIM events and a few bookmarks, interleaved."""
    sizes = sizes or {"va": 96 * 1024, "vb": 64 * 1024 + 123}
    h = History(group=group, sizes=dict(sizes))
    seq = {v: 0 for v in sizes}
    session = {v: hashlib.sha256(v.encode()).hexdigest()[:32] for v in sizes}
    t = T0

    def emit(
        volume: str,
        kind: EventKind,
        offset: int = 0,
        length: int = 0,
        data: bytes = b"",
        name: str = "",
    ) -> None:
        nonlocal t
        t += rng.randrange(1, 40_000)
        h.events.append(
            make_event(
                kind,
                offset,
                data,
                length=length,
                volume=volume,
                group=group,
                sequence=seq[volume],
                timestamp_us=t,
                volume_size=sizes[volume],
                session=session[volume],
                name=name,
                sealed=False,  # format 1, as older topics hold: their readers stay covered
            )
        )
        seq[volume] += 1

    for v in sizes:
        emit(v, EventKind.SESSION_START)
        emit(v, EventKind.BASELINE_START)
        emit(v, EventKind.BASELINE_END)
    names = list(sizes)
    for i in range(events):
        v = rng.choice(names)
        size = sizes[v]
        roll = rng.random()
        if roll < 0.05:
            emit(v, EventKind.BOOKMARK, name=f"bm{i}")
            continue
        length = rng.randrange(1, min(max_write, size))
        # hit the volume end now and then
        at_end = rng.random() < 0.15
        offset = size - length if at_end else rng.randrange(0, size - length + 1)
        if roll < 0.85:
            data = rng.randbytes(length)
            emit(v, EventKind.WRITE, offset=offset, length=length, data=data)
        else:
            emit(v, rng.choice([EventKind.ZERO, EventKind.TRIM]), offset=offset, length=length)
    return h


# -- window cutting ---------------------------------------------------------------------
Cut = Callable[[list[tuple[int, WriteEvent]]], list[list[tuple[int, WriteEvent]]]]


def by_count(n: int) -> Cut:
    def cut(evs: list[tuple[int, WriteEvent]]) -> list[list[tuple[int, WriteEvent]]]:
        return [evs[i : i + n] for i in range(0, len(evs), n)]

    return cut


def by_bytes(limit: int) -> Cut:
    def cut(evs: list[tuple[int, WriteEvent]]) -> list[list[tuple[int, WriteEvent]]]:
        out: list[list[tuple[int, WriteEvent]]] = [[]]
        acc = 0
        for item in evs:
            out[-1].append(item)
            acc += len(item[1].data)
            if acc >= limit:
                out.append([])
                acc = 0
        return [w for w in out if w]

    return cut


def by_time(period_us: int) -> Cut:
    def cut(evs: list[tuple[int, WriteEvent]]) -> list[list[tuple[int, WriteEvent]]]:
        out: list[list[tuple[int, WriteEvent]]] = []
        deadline = -1
        for item in evs:
            t = item[1].timestamp_us
            if t >= deadline:
                out.append([])
                deadline = (t // period_us + 1) * period_us
            out[-1].append(item)
        return out

    return cut


POLICIES: dict[str, Cut] = {
    "count7": by_count(7),
    "count1": by_count(1),
    "bytes40k": by_bytes(40_000),
    "time150ms": by_time(150_000),
}


# -- store writer -----------------------------------------------------------------------
def _put(store: ObjectStore, key: str, data: bytes, **counts: int) -> ObjectRef:
    store.put(key, data)
    return ObjectRef.of(key, data, **counts)


def write_store(
    store: ObjectStore,
    history: History,
    cut: Cut,
    *,
    checkpoint_every: int = 0,
    checkpoint_last: bool = True,
    topic: str = "kcdp.writes",
    partition: int = 0,
    gap_at: dict[str, int] | None = None,
    gap_breaks: bool = True,
) -> dict[str, list[Manifest]]:
    """Write every volume's windows; checkpoints every ``checkpoint_every`` windows (0:
    none) and at the newest window when ``checkpoint_last``. ``gap_at`` maps a volume to
    the index of a window that a sequence gap precedes: a gap record is written, and that
    window and later ones are inconsistent (no baseline follows) unless ``gap_breaks`` is
    False (as if a new baseline had ended right away)."""
    out: dict[str, list[Manifest]] = {}
    for volume, size in history.sizes.items():
        windows = cut(history.of(volume))
        base_end = history.baseline_end(volume)
        gap_index = (gap_at or {}).get(volume)
        manifests: list[Manifest] = []
        prev: Manifest | None = None
        for k, win in enumerate(windows):
            first, last = win[0][0], win[-1][0]
            if gap_index is not None and k == gap_index:
                gap = Gap(
                    volume=volume,
                    kind="sequence",
                    at_offset=first,
                    after_offset=prev.last_offset if prev else None,
                    session=win[0][1].session,
                    expected_sequence=win[0][1].sequence - 3,
                    got_sequence=win[0][1].sequence,
                    detail="3 events missing (test)",
                    detected_us=T0,
                )
                store.put(gap.key, gap.to_json())
            broken = gap_breaks and gap_index is not None and k >= gap_index
            before = history.image_at(volume, first - 1)
            after = history.image_at(volume, last)
            changes = [e for _, e in win if e.kind in CHANGE_KINDS]
            pieces = split_ranges(union_ranges((e.offset, e.offset + e.length) for e in changes))
            fwd = [_extent(after, s, e) for s, e in pieces]
            bwd = [_extent(before, s, e) for s, e in pieces]
            objs = {}
            ranges_sha = ""
            for part, exts, direction in (("fwd", fwd, "forward"), ("bwd", bwd, "backward")):
                buf = io.BytesIO()
                info = write_increment(
                    buf,
                    exts,
                    direction=direction,
                    volume=volume,
                    first_offset=first,
                    last_offset=last,
                )
                objs[part] = _put(
                    store,
                    keys.data_key(volume, first, last, part),
                    buf.getvalue(),
                    extents=info.extents,
                    logical_bytes=info.logical_bytes,
                )
                if part == "fwd":
                    ranges_sha = info.ranges_sha256
            buf = io.BytesIO()
            omit = in_forward_offsets(win)
            n = write_log(
                buf,
                [LogRecord.from_event(e, o, in_forward=o in omit) for o, e in win],
                volume=volume,
                first_offset=first,
                last_offset=last,
            )
            objs["log"] = _put(
                store, keys.data_key(volume, first, last, "log"), buf.getvalue(), records=n
            )
            if broken:
                restorable: int | None = None
            elif last < base_end:
                restorable = None
            else:
                restorable = max(first, base_end)
            m = Manifest(
                volume=volume,
                group=history.group,
                topic=topic,
                partition=partition,
                volume_size=size,
                first_offset=first,
                last_offset=last,
                first_time_us=win[0][1].timestamp_us,
                last_time_us=win[-1][1].timestamp_us,
                session=win[0][1].session,
                first_sequence=win[0][1].sequence,
                last_sequence=win[-1][1].sequence,
                events=len(win),
                bytes_written=sum(len(e.data) for _, e in win),
                policy={"count": None},
                period_us=None,
                close_reason="count",
                previous=None if prev is None else (prev.first_offset, prev.last_offset),
                previous_digest=None if prev is None else prev.digest,
                restorable_from=restorable,
                consistent=not broken and last >= base_end,
                bookmarks=tuple(
                    Bookmark(e.name, o, e.timestamp_us)
                    for o, e in win
                    if e.kind is EventKind.BOOKMARK
                ),
                ranges_sha256=ranges_sha,
                forward=objs["fwd"],
                backward=objs["bwd"],
                writelog=objs["log"],
                created_us=T0,
            )
            store.put(m.key, m.to_json())
            put_head(store, m, T0)
            store.put(keys.partition_marker_key(topic, partition, volume), b"")
            manifests.append(m)
            prev = m
            want_cp = (checkpoint_every and (k + 1) % checkpoint_every == 0) or (
                checkpoint_last and k == len(windows) - 1
            )
            if want_cp:
                put_checkpoint(store, volume, last, after, m.digest)
        out[volume] = manifests
    return out


def in_forward_offsets(win: list[tuple[int, WriteEvent]]) -> set[int]:
    """Offsets of the WRITE/BASELINE events of ``win`` that no later change event overlaps."""
    out = set()
    for k, (o, e) in enumerate(win):
        if e.kind in DATA_KINDS and not any(
            f.kind in CHANGE_KINDS
            and f.offset < e.offset + e.length
            and e.offset < f.offset + f.length
            for _, f in win[k + 1 :]
        ):
            out.add(o)
    return out


def replays_from_forward(store: ObjectStore, plan: Plan) -> bool:
    """Whether ``plan`` replays a stored write log up to an ``in_forward`` record (so the
    restore takes bytes from the target window's forward increment)."""
    replay = plan.path.replay
    if replay is None or replay.ref is None:
        return False
    return needs_forward(read_log(store.get(replay.ref.key)), upto_offset=replay.upto)


def put_checkpoint(
    store: ObjectStore, volume: str, offset: int, image: bytes, window_digest: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cp.img"
        with Image(path, len(image)) as img:
            img.pwrite(0, image)
            write_checkpoint(
                store,
                img,
                volume=volume,
                offset=offset,
                chunk_size=16 * 1024,
                window_digest=window_digest,
            )


def _extent(image: bytes, start: int, end: int) -> Extent:
    chunk = image[start:end]
    return Extent(start, end - start, None if not any(chunk) else chunk)


def reseal(store: ObjectStore, volume: str) -> None:
    """Rewrite ``volume``'s chain over its manifests as stored: each ``previous.digest``,
    each checkpoint's ``window_digest`` and the head. Only a writer of arbitrary objects
    can do this (outside the threat model of docs/FORMAT.md "Restore"); tests use it to
    reach the checks behind the chain."""
    prev: Manifest | None = None
    for _first, last, key in list_window_keys(store, volume):
        m = Manifest.from_json(store.get(key), name=key)
        if prev is not None and m.version >= 2:
            m = replace(m, previous_digest=prev.digest)
            store.put(key, m.to_json())
        for info in list(store.list(keys.checkpoint_key(volume, last))):
            cp = Checkpoint.from_json(store.get(info.key), name=info.key)
            if cp.version >= 2:
                store.put(info.key, replace(cp, window_digest=m.digest).to_json())
        prev = m
    if prev is not None:
        put_head(store, prev, T0)
