"""Benchmark: the history lifecycle (retention) over simulated days, against restic.

A volume (default 64 MiB, a quarter of the issue's 256 MiB: ``--size-mib 256`` for the
full scale) is written by the worker's own partition processor on a local file store, no
Kafka: events carry synthetic times, one simulated day after another (default 45). Each
day rewrites 5% of the volume in scattered 4 KiB writes and a 1 MiB hot region 20 times
(in 64 KiB writes), spread over the day, after a baseline of random data filling the
volume; windows are one hour of event time (closed by a
TICK after each hour), checkpoints on the worker's default cadence. After each simulated
day the volume is pruned (``prune_volume``, clock = the simulated time, so the 6 h grace
passes in simulated time) under keep_within 24 h + keep_hourly 48 + keep_daily 30 and
the default ``base_slack`` (``--base-slack 0``: the base moves at every daily prune).

In the same timeline a restic repository gets a snapshot of the image at the moments the
policy keeps (each day's end, and each hour's end of the last 48 h, ``backup --time``),
then ``forget --keep-hourly 48 --keep-daily 30 --prune``. Measured, as ratios:

* kcdp stored bytes (sum of the store's file sizes) ÷ restic repository bytes (sum of
  its file sizes), at the end — kcdp also restores any offset of the last 24 h;
* stored bytes after the prune of day 45 ÷ after day 32 (steady state);
* prune time per simulated day ÷ the worker's time to store that day (days 32..45);
* restore of the consolidated point 20 days old ÷ restore of the newest point (median of
  three each).

Every restore is checked against the SHA-256 of the image recorded while the history was
written (the newest point, the 20-day-old point, one offset inside the last 24 h); wrong
bytes fail the bench. ``--quick``: an 8 MiB volume with a 128 KiB hot region (smoke-sized).

Run: ``python -m tests.bench.bench_retention [--size-mib 256] [--days 45]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.retention.policy import RetentionPolicy
from connectors.retention.prune import prune_volume
from connectors.store import open_store
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from schemas.manifest import Manifest
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.bench.common import Figure
from tests.event_factory import make_tick
from tests.streams_support import Volume

KiB, MiB = 1 << 10, 1 << 20
SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US
T0 = (1_790_000_000 // 86400 + 1) * DAY_US  # a day edge
VOLUME = "bench"
POLICY = RetentionPolicy(keep_within=24 * 3600.0, keep_hourly=48, keep_daily=30)
SCATTERED = 4 * KiB
HOT_WRITE = 64 * KiB
BASELINE_WRITE = 1 * MiB


def _sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


@dataclass
class Restic:
    """A restic repository fed snapshots of the image at simulated times."""

    root: Path
    env: dict[str, str] = field(init=False)
    snapshots: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        repo = self.root / "restic"
        self.env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo)}
        subprocess.run(["restic", "init", "-q"], env=self.env, check=True)

    def backup(self, image: bytearray, t_us: int) -> None:
        (self.root / "image.img").write_bytes(image)
        when = dt.datetime.fromtimestamp(t_us / 1e6, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        start = time.perf_counter()
        cmd = ["restic", "backup", "-q", "--force", "--host", "bench", "--time", when]
        subprocess.run([*cmd, "image.img"], env=self.env, check=True, cwd=self.root)
        self.seconds += time.perf_counter() - start
        self.snapshots += 1

    def forget(self) -> None:
        cmd = ["restic", "forget", "-q", "--keep-hourly", "48", "--keep-daily", "30", "--prune"]
        subprocess.run(cmd, env=self.env, check=True, capture_output=True)

    def bytes(self) -> int:
        return _file_bytes(self.root / "restic")


@dataclass
class Timeline:
    """The simulated days: events fed to the worker's processor, prunes, restic."""

    root: Path
    size: int
    hot: int
    days: int
    rng: random.Random
    policy: RetentionPolicy = POLICY
    vol: Volume = field(init=False)
    proc: PartitionProcessor = field(init=False)
    codec: AvroCodec = field(default_factory=AvroCodec)
    offset: int = 0
    windows: list[Manifest] = field(default_factory=list)
    store_s: list[float] = field(default_factory=list)  # worker seconds per day
    prune_s: list[float] = field(default_factory=list)  # prune seconds per day
    stored: list[int] = field(default_factory=list)  # store bytes after each day's prune
    day_end: list[tuple[int, str]] = field(default_factory=list)  # (offset, sha) per day
    young: tuple[int, str] | None = None  # an offset inside the last 24 h

    def __post_init__(self) -> None:
        self.store = open_store(f"file://{self.root / 'store'}", retry=False)
        self.vol = Volume(VOLUME, self.size, session="b" * 32, group=VOLUME, t_us=T0)
        opt = BuildOptions(
            topic="kcdp.writes",
            partition=0,
            workdir=self.root / "work",
            policy=WindowPolicy(seconds=3600.0),
        )
        self.proc = PartitionProcessor(self.store, opt, on_window=self.windows.append)
        self.proc.open(0)
        (self.root / "prune").mkdir()
        self.hot_at = self.rng.randrange(0, (self.size - self.hot) // HOT_WRITE) * HOT_WRITE

    def _feed(self, events: list[WriteEvent]) -> float:
        records = []
        for ev in events:
            records.append((self.offset, None, self.codec.encode(ev.to_record())))
            self.offset += 1
        start = time.perf_counter()
        self.proc.feed(records)
        return time.perf_counter() - start

    def _day_events(self, day: int) -> list[list[tuple[int, str, int]]]:
        """Per hour of ``day``: (time, kind, position) of its writes, in time order."""
        t0 = T0 + (day + 1) * DAY_US
        plan: list[tuple[int, str, int]] = []
        for _ in range(self.size // 20 // SCATTERED):
            t = t0 + self.rng.randrange(0, DAY_US)
            plan.append((t, "s", self.rng.randrange(0, self.size // SCATTERED) * SCATTERED))
        for k in range(20):
            t = t0 + k * DAY_US // 20 + self.rng.randrange(0, DAY_US // 40)
            for j in range(self.hot // HOT_WRITE):
                plan.append((t + j * 1000, "h", self.hot_at + j * HOT_WRITE))
        plan.sort()
        hours: list[list[tuple[int, str, int]]] = [[] for _ in range(24)]
        for t, kind, pos in plan:
            h = min(23, (t - t0) // HOUR_US)
            lo, hi = t0 + h * HOUR_US + 2 * SECOND_US, t0 + (h + 1) * HOUR_US - SECOND_US
            hours[h].append((min(max(t, lo), hi), kind, pos))
        return hours

    def _event(self, t: int, kind: str, pos: int) -> WriteEvent:
        n = SCATTERED if kind == "s" else HOT_WRITE
        self.vol.t_us = max(self.vol.t_us + 1, t) - 1
        return self.vol.event(EventKind.WRITE, pos, self.rng.randbytes(n), dt_us=1)

    def run(self, restic: Restic) -> None:
        baseline = [
            self.vol.event(EventKind.SESSION_START),
            self.vol.event(EventKind.BASELINE_START),
        ]
        for pos in range(0, self.size, BASELINE_WRITE):  # a full volume of random data
            data = self.rng.randbytes(min(BASELINE_WRITE, self.size - pos))
            baseline.append(self.vol.event(EventKind.BASELINE, pos, data))
        baseline.append(self.vol.event(EventKind.BASELINE_END))
        self._feed([*baseline, make_tick(T0 + HOUR_US)])
        for day in range(self.days):
            t0 = T0 + (day + 1) * DAY_US
            worker = 0.0
            for h, hour in enumerate(self._day_events(day)):
                mid = len(hour) // 2
                events = [self._event(*w) for w in hour[:mid]]
                if day == self.days - 1 and h == 12 and mid:  # a point of the last 24 h
                    self.young = (self.offset + mid - 1, _sha(self.vol.model))
                events += [self._event(*w) for w in hour[mid:]]
                hour_end = t0 + (h + 1) * HOUR_US
                worker += self._feed([*events, make_tick(hour_end + SECOND_US)])
                if day >= self.days - 2 and h < 23:
                    restic.backup(self.vol.model, hour_end - SECOND_US)
            self.store_s.append(worker)
            self.day_end.append((self.windows[-1].last_offset, _sha(self.vol.model)))
            restic.backup(self.vol.model, t0 + DAY_US - SECOND_US)
            start = time.perf_counter()
            prune_volume(
                self.store,
                VOLUME,
                self.policy,
                workdir=self.root / "prune",
                now_us=t0 + DAY_US + 2 * SECOND_US,
            )
            self.prune_s.append(time.perf_counter() - start)
            self.stored.append(_file_bytes(self.root / "store"))
            print(
                f"# day {day + 1}: worker {worker:.2f} s, prune {self.prune_s[-1]:.2f} s, "
                f"store {self.stored[-1] / MiB:.0f} MiB",
                flush=True,
            )
        self.proc.close()


def _restore(tl: Timeline, point: int, want: str, out: Path) -> float:
    catalog = Catalog(tl.store, VOLUME)
    start = time.perf_counter()
    restore_point(tl.store, catalog, point, out, progress=False)
    seconds = time.perf_counter() - start
    got = hashlib.sha256(out.read_bytes()).hexdigest()
    if got != want:
        raise AssertionError(f"restore of {VOLUME}@{point} restored different bytes")
    out.unlink()
    return seconds


def run(args: argparse.Namespace) -> list[Figure]:
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed (apt-get install restic)")
    if args.days < 33:
        raise SystemExit("--days must be at least 33 (steady state is day 45 ÷ day 32)")
    root = Path(tempfile.mkdtemp(prefix="kcdp-bench-retention-", dir=args.dir))
    try:
        size, hot = args.size_mib * MiB, args.hot_kib * KiB
        policy = replace(POLICY, base_slack=args.base_slack)
        tl = Timeline(root, size, hot, args.days, random.Random(args.seed), policy)
        restic = Restic(root)
        start = time.perf_counter()
        tl.run(restic)
        print(f"# timeline in {time.perf_counter() - start:.0f} s", flush=True)
        restic.forget()
        kcdp_bytes, restic_bytes = tl.stored[-1], restic.bytes()
        out = root / "out.img"
        newest, newest_sha = tl.day_end[-1]
        old, old_sha = tl.day_end[-21]
        assert tl.young is not None
        _restore(tl, tl.young[0], tl.young[1], out)  # any offset of the last 24 h
        new_s, old_s = [], []
        for _ in range(3):
            new_s.append(_restore(tl, newest, newest_sha, out))
            old_s.append(_restore(tl, old, old_sha, out))
        new_m, old_m = statistics.median(new_s), statistics.median(old_s)
        d32, last = 31, args.days - 1
        prune = sum(tl.prune_s[d32:]) / len(tl.prune_s[d32:])
        worker = sum(tl.store_s[d32:]) / len(tl.store_s[d32:])
        scale = (
            f"{args.size_mib} MiB volume, {args.hot_kib} KiB hot, {args.days} days, "
            f"base_slack {args.base_slack:g}"
        )
        return [
            Figure(
                "retention",
                "kcdp stored bytes ÷ restic repository (same kept points)",
                kcdp_bytes / restic_bytes,
                goal=("<=", 0.25),
                detail=f"{kcdp_bytes / MiB:.0f} MiB kcdp, {restic_bytes / MiB:.0f} MiB restic "
                f"({restic.snapshots} snapshots before forget); {scale}",
            ),
            Figure(
                "retention",
                f"stored bytes day {last + 1} ÷ day {d32 + 1}",
                tl.stored[last] / tl.stored[d32],
                goal=("<=", 1.1),
                detail=f"{tl.stored[last] / MiB:.0f} MiB ÷ {tl.stored[d32] / MiB:.0f} MiB; "
                + scale,
            ),
            Figure(
                "retention",
                "prune time per day ÷ worker time to store the day",
                prune / worker,
                goal=("<=", 0.1),
                detail=f"{prune:.2f} s prune, {worker:.2f} s worker per day "
                f"(days {d32 + 1}..{last + 1}); {scale}",
            ),
            Figure(
                "retention",
                "restore 20-day-old point ÷ restore newest",
                old_m / new_m,
                goal=("<=", 1.5),
                detail=f"{old_m:.2f} s ÷ {new_m:.2f} s (median of 3); {scale}",
            ),
        ]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=64, help="volume size (default 64)")
    p.add_argument("--hot-kib", type=int, default=1024, help="hot region (default 1024)")
    p.add_argument("--days", type=int, default=45, help="simulated days (default 45)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--base-slack",
        type=float,
        default=POLICY.base_slack,
        help=f"the policy's base_slack (default {POLICY.base_slack:g}; 0: the base moves daily)",
    )
    p.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p


def figures(quick: bool = False) -> list[Figure]:
    """The ratios of :func:`run` at the default scale (``quick``: an 8 MiB volume)."""
    quick_args = ["--size-mib", "8", "--hot-kib", "128"]
    return run(parser().parse_args(quick_args if quick else []))


def main() -> None:
    from tests.bench.common import print_figures

    print_figures(run(parser().parse_args()))


if __name__ == "__main__":
    main()
