"""The history of :mod:`tests.bench.bench_restore`: one volume written straight into a
local directory store with the shared format modules, keeping the live image beside it.

A baseline of random data in capped windows, then windows of random unaligned writes with
a checkpoint every ``checkpoint_every`` windows and at the end. While it is written the
image's SHA-256 is recorded at chosen points: ``points`` random points inside windows (a
restore there replays the window's log), and the end of the window from which the newest
windows' writes add up to ``rollback_pct`` % of the volume (the in-place rollback target).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

from connectors.store import open_store
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.checkpoint import Checkpoint, write_checkpoint
from schemas.events import EventKind, crc32c
from schemas.extents import Extent, split_ranges, union_ranges
from schemas.head import put_head
from schemas.image import Image
from schemas.increment import write_increment
from schemas.manifest import Manifest, ObjectRef
from schemas.writelog import LogRecord, write_log
from tests.assemble_reference import in_forward_flags

MiB = 1 << 20
VOLUME = "bench"
T0 = 1_795_571_270_000_000


@dataclass(frozen=True, slots=True)
class History:
    """What :func:`build` wrote: the live image (the newest point), ``samples``
    ({offset: SHA-256 of the image there}), and the rollback target ``rollback`` (a window
    end) with its SHA-256 and ``rollback_bytes``, the bytes written after it."""

    live: Path
    samples: dict[int, str]
    rollback: int
    rollback_sha: str
    rollback_bytes: int


class Writer:
    """Writes windows of one volume into ``store`` while keeping the live image."""

    def __init__(self, store: ObjectStore, image: Image) -> None:
        self.store = store
        self.image = image
        self.offset = 0
        self.seq = 0
        self.prev: Manifest | None = None
        self.base_end: int | None = None
        self.cp: Checkpoint | None = None
        self.dirty: list[tuple[int, int]] = []

    def record(
        self, kind: EventKind, offset: int = 0, data: bytes = b"", length: int = 0
    ) -> LogRecord:
        rec = LogRecord(
            kafka_offset=self.offset,
            sequence=self.seq,
            kind=kind,
            offset=offset,
            length=len(data),
            timestamp_us=T0 + self.offset * 1000,
            crc32c=crc32c(data) if data else 0,
            data=data,
        )
        self.offset += 1
        self.seq += 1
        if kind is EventKind.BASELINE_END:
            self.base_end = rec.kafka_offset
        return rec

    def window(
        self, recs: list[LogRecord], samples: frozenset[int] = frozenset()
    ) -> dict[int, str]:
        """Store one window; return the image's SHA-256 at each offset of ``samples``."""
        first, last = recs[0].kafka_offset, recs[-1].kafka_offset
        changes = [r for r in recs if r.length and r.kind in (EventKind.WRITE, EventKind.BASELINE)]
        pieces = split_ranges(union_ranges((r.offset, r.offset + r.length) for r in changes))
        bwd = [_extent(self.image, s, e) for s, e in pieces]
        digest_at: dict[int, str] = {}
        for r in changes:
            self.image.pwrite(r.offset, r.data)
            if r.kafka_offset in samples:
                digest_at[r.kafka_offset] = image_sha(self.image)
        fwd = [_extent(self.image, s, e) for s, e in pieces]
        self.dirty.extend(pieces)
        refs: dict[str, ObjectRef] = {}
        digest = ""
        for part, exts, direction in (("fwd", fwd, "forward"), ("bwd", bwd, "backward")):
            buf = io.BytesIO()
            info = write_increment(
                buf, exts, direction=direction, volume=VOLUME, first_offset=first, last_offset=last
            )
            digest = digest or info.ranges_sha256
            refs[part] = self._put(keys.data_key(VOLUME, first, last, part), buf.getvalue())
        flags = dict(zip((r.kafka_offset for r in changes), in_forward_flags(changes), strict=True))
        logged = [
            replace(r, data=b"", in_forward=True) if flags.get(r.kafka_offset) else r for r in recs
        ]
        buf = io.BytesIO()
        write_log(buf, logged, volume=VOLUME, first_offset=first, last_offset=last)
        refs["log"] = self._put(keys.data_key(VOLUME, first, last, "log"), buf.getvalue())
        consistent = self.base_end is not None
        m = Manifest(
            volume=VOLUME, group=VOLUME, topic="kcdp.writes", partition=0,
            volume_size=self.image.size, first_offset=first, last_offset=last,
            first_time_us=recs[0].timestamp_us, last_time_us=recs[-1].timestamp_us,
            session="s" * 32, first_sequence=recs[0].sequence, last_sequence=recs[-1].sequence,
            events=len(recs), bytes_written=sum(len(r.data) for r in recs),
            policy={"count": len(recs)}, period_us=None, close_reason="count",
            previous=None if self.prev is None else (self.prev.first_offset, self.prev.last_offset),
            previous_digest=None if self.prev is None else self.prev.digest,
            restorable_from=None if self.base_end is None else max(first, self.base_end),
            consistent=consistent, bookmarks=(), ranges_sha256=digest,
            forward=refs["fwd"], backward=refs["bwd"], writelog=refs["log"], created_us=T0,
        )  # fmt: skip
        self.store.put(m.key, m.to_json())
        put_head(self.store, m, T0)
        self.prev = m
        return digest_at

    def checkpoint(self) -> None:
        assert self.prev is not None
        self.cp = write_checkpoint(
            self.store, self.image, volume=VOLUME, offset=self.prev.last_offset,
            previous=self.cp, dirty=self.dirty if self.cp else None,
            window_digest=self.prev.digest,
        )  # fmt: skip
        self.dirty = []

    def _put(self, key: str, data: bytes) -> ObjectRef:
        self.store.put(key, data)
        return ObjectRef.of(key, data)


def _extent(image: Image, start: int, end: int) -> Extent:
    data = image.pread(start, end - start)
    return Extent(start, end - start, None if not any(data) else data)


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def image_sha(image: Image) -> str:
    h = hashlib.sha256()
    for pos in range(0, image.size, 8 * MiB):
        h.update(image.pread(pos, min(8 * MiB, image.size - pos)))
    return h.hexdigest()


def build(args: argparse.Namespace, root: Path) -> History:
    """Write the history described by ``args`` under ``root`` (``store/``, ``live.img``)."""
    rng = random.Random(args.seed)
    store = open_store(f"file://{root / 'store'}", retry=False)
    size = args.size_mib * MiB
    plan = []  # (offset, length) of every write of every window, drawn up front
    for _ in range(args.windows):
        lengths = [rng.randrange(512, 64 * 1024) for _ in range(args.writes)]
        plan.append([(rng.randrange(0, size - n), n) for n in lengths])
    suffix, back = 0, args.windows - 1
    while back > 0 and suffix < size * args.rollback_pct / 100:
        suffix += sum(n for _, n in plan[back])
        back -= 1  # the rollback target is the end of window ``back``
    sample_at = set(rng.sample(range(args.windows), args.points))
    live = root / "live.img"
    samples: dict[int, str] = {}
    rollback = (-1, "")
    with Image(live, size) as image:
        w = Writer(store, image)
        recs = [w.record(EventKind.SESSION_START), w.record(EventKind.BASELINE_START)]
        pos = 0
        while pos < args.baseline_mib * MiB:
            recs.append(w.record(EventKind.BASELINE, pos, os.urandom(MiB // 2)))
            pos += MiB // 2
            if len(recs) >= 64:
                w.window(recs)
                recs = []
        recs.append(w.record(EventKind.BASELINE_END))
        w.window(recs)
        w.checkpoint()
        for k, writes in enumerate(plan):
            recs = [w.record(EventKind.WRITE, off, os.urandom(n)) for off, n in writes]
            mid = recs[len(recs) // 2].kafka_offset  # a point inside: restores replay its log
            want = {mid} if k in sample_at else set()
            if k == back:
                want.add(recs[-1].kafka_offset)
            got = w.window(recs, frozenset(want))
            samples.update((o, d) for o, d in got.items() if o != recs[-1].kafka_offset)
            if k == back:
                rollback = (recs[-1].kafka_offset, got[recs[-1].kafka_offset])
            if (k + 1) % args.checkpoint_every == 0 or k == args.windows - 1:
                w.checkpoint()
        image.sync()
    store.close()
    return History(live, samples, rollback[0], rollback[1], suffix)
