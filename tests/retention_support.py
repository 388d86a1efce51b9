"""Test support for retention: a partition of two volumes of one group written by the
worker's own partition processor (in process), with events whose synthetic times span
days, a reference model, and the points a policy promises (computed from the events and
the windows as the worker stored them, not by the pruner's selection)."""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from connectors.errors import NotRestorableError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.retention.policy import RetentionPolicy
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.codec import AvroCodec
from schemas.events import EventKind
from schemas.manifest import Manifest, list_window_keys, load_manifest
from schemas.retention import effective_windows, load_retention
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.restore_history import History
from tests.streams_support import Volume

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


@dataclass
class Partition:
    """Two volumes of group ``g`` in one partition, fed to a worker's processor."""

    store: ObjectStore
    workdir: Path
    rng: random.Random
    count: int = 3
    checkpoint_windows: int = 4
    sizes: dict[str, int] = field(default_factory=lambda: {"va": 24_000, "vb": 9_001})
    history: History = field(init=False)
    volumes: dict[str, Volume] = field(init=False)
    windows: dict[str, list[Manifest]] = field(init=False)
    proc: PartitionProcessor | None = None
    codec: AvroCodec = field(default_factory=AvroCodec)
    commit: int = 0  # the offset a restarted worker resumes from

    def __post_init__(self) -> None:
        self.history = History(group="g", sizes=dict(self.sizes))
        self.volumes = {
            v: Volume(v, size, session=v[-1] * 32, group="g", t_us=1_790_000_000_000_000)
            for v, size in self.sizes.items()
        }
        self.windows = {v: [] for v in self.sizes}
        for vol in self.volumes.values():
            for ev in vol.start():
                self.history.events.append(ev)
        self._open()
        self._feed_from(0)

    def _open(self) -> None:
        opt = BuildOptions(
            topic="kcdp.writes",
            partition=0,
            workdir=self.workdir,
            policy=WindowPolicy(count=self.count),
            checkpoint_windows=self.checkpoint_windows,
            chunk_size=4096,
        )
        self.proc = PartitionProcessor(self.store, opt, on_window=self._stored)
        self.proc.open(self.commit)

    def _stored(self, m: Manifest) -> None:
        self.windows[m.volume].append(m)

    def _feed_from(self, start: int) -> None:
        assert self.proc is not None
        records = [
            (o, None, self.codec.encode(e.to_record()))
            for o, e in enumerate(self.history.events)
            if o >= start
        ]
        self.commit = self.proc.feed(records).commit_offset

    def write(self, events: int, *, mean_gap_us: int) -> None:
        """Append ``events`` random unaligned, overlapping changes (and bookmarks)."""
        start = len(self.history.events)
        for i in range(events):
            v = self.rng.choice(sorted(self.volumes))
            vol = self.volumes[v]
            dt = self.rng.randrange(1, 2 * mean_gap_us)
            roll = self.rng.random()
            if roll < 0.06:
                ev = vol.event(EventKind.BOOKMARK, name=f"bm{start + i}", dt_us=dt)
            else:
                length = self.rng.randrange(1, min(3000, vol.size))
                offset = self.rng.randrange(0, vol.size - length + 1)
                if roll < 0.85:
                    ev = vol.event(EventKind.WRITE, offset, self.rng.randbytes(length), dt_us=dt)
                else:
                    ev = vol.event(EventKind.ZERO, offset, length=length, dt_us=dt)
            self.history.events.append(ev)
        self._feed_from(start)

    def restart(self) -> None:
        """Stop the worker and start it again (it resumes from the store)."""
        assert self.proc is not None
        self.proc.close()
        self._open()
        self._feed_from(self.commit)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.close()
            self.proc = None


def promised_points(part: Partition, volume: str, policy: RetentionPolicy) -> set[int]:
    """Points the policy promises, from the windows as stored and the events: every event
    of a window inside ``keep_within``, the newest consistent edge of each tier bucket,
    each young bookmark; measured back from the newest stored window's last event."""
    windows = part.windows[volume]
    if not windows or policy.empty:
        return set()
    ref = windows[-1].last_time_us
    out: set[int] = set()
    if policy.keep_within is not None:
        cutoff = ref - int(policy.keep_within * 1e6)
        for w in windows:
            if w.last_time_us >= cutoff and w.restorable_from is not None:
                out.update(
                    o
                    for o, e in part.history.of(volume)
                    if w.restorable_from <= o <= w.last_offset and e.timestamp_us >= cutoff
                )
    buckets: dict[str, Callable[[int], int]] = {
        "keep_hourly": lambda t: t // HOUR_US,
        "keep_daily": lambda t: t // DAY_US,
        "keep_weekly": lambda t: (t // DAY_US + 3) // 7,
        "keep_monthly": _month,
    }
    for name, bucket in buckets.items():
        n = getattr(policy, name)
        if not n:
            continue
        newest: dict[int, int] = {}
        for w in windows:
            if w.consistent and bucket(w.last_time_us) > bucket(ref) - n:
                newest[bucket(w.last_time_us)] = w.last_offset
        out.update(newest.values())
    if policy.keep_bookmarks is not None:
        young = ref - int(policy.keep_bookmarks * 1e6)
        out.update(
            o
            for o, e in part.history.of(volume)
            if e.kind is EventKind.BOOKMARK
            and e.timestamp_us >= young
            and o <= windows[-1].last_offset
        )
    out.add(windows[-1].last_offset)
    return out


def _month(t: int) -> int:
    d = datetime.datetime.fromtimestamp(t / 1e6, tz=datetime.UTC)
    return d.year * 12 + d.month - 1


def check_points(
    part: Partition, volume: str, points: set[int], out: Path, *, promised: set[int]
) -> tuple[int, int]:
    """Restore each point both ways: equal to the model, or refused (a promised point
    must restore). Returns (restored, refused)."""
    catalog = Catalog(part.store, volume)
    restored = refused = 0
    for point in sorted(points):
        want = part.history.image_at(volume, point)
        for direction in ("forward", "backward"):
            try:
                restore_point(part.store, catalog, point, out, direction=direction, progress=False)
            except NotRestorableError as exc:
                if direction == "backward" and "to roll back from" in str(exc):
                    continue  # no checkpoint after the point: forward only
                if point in promised:
                    raise AssertionError(f"{volume}@{point} promised, refused: {exc}") from exc
                refused += 1
                continue
            assert out.read_bytes() == want, f"{direction} {volume}@{point}"
            restored += 1
    return restored, refused


def unreferenced(store: ObjectStore, volume: str) -> list[str]:
    """Keys of ``volume`` that no effective manifest, kept checkpoint or gap references."""
    state = load_retention(store, volume)
    base = state.base if state else None
    spans = effective_windows(list_window_keys(store, volume), base.offset if base else None)
    refs: set[str] = {keys.head_key(volume), keys.retention_key(volume)}
    for _f, _l, key in spans:
        m = load_manifest(store, key)
        refs.add(key)
        refs.update(r.key for r in m.objects())
    stray = []
    for info in store.list(keys.volume_prefix(volume)):
        k = info.key
        if "/checkpoints/" in k or "/gaps/" in k:
            continue
        if k not in refs:
            stray.append(k)
    return stray
