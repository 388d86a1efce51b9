"""Bytes stored for 5% scattered 4 KiB changes of a volume: kafka-cdp ÷ restic, same run.

Both protect the same random volume (1 GiB by default) first: kafka-cdp through the
worker's window builder (``streams.partition.PartitionProcessor``: a baseline of 512 KiB
chunks, its windows and checkpoint in a directory store), restic with ``restic backup`` of
the image file into a local repository. Then 5% of the volume's 4 KiB blocks, chosen at
random, get new random bytes: kafka-cdp stores the window holding those writes (forward
and backward increments, write log, manifest), restic backs up the changed image again.
The figure is kafka-cdp's store growth ÷ restic's repository growth (goal ≤ 0.1). The
write log's records of these writes are ``in_forward`` (no later write overlaps them), so
each changed byte is stored twice (forward and backward): with restic storing about the
whole volume again, the figure cannot go below about twice the changed share.

Run: ``.venv/bin/python -m tests.bench.bench_storage [--size-mib 1024] [--percent 5]
[--quick]`` (``--quick``: a 64 MiB volume). Needs ``restic`` on PATH.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from connectors.store import FileStore
from schemas.events import EventKind, WriteEvent
from streams.options import BuildOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from tests.bench.common import Figure, print_figures, quick_parser
from tests.event_factory import make_event, make_tick
from tests.streams_support import feed_events

BLOCK = 4096
CHUNK = 512 * 1024
VOLUME = "bench"
T0 = 1_795_571_270_000_000


def dir_bytes(path: Path) -> int:
    """Sum of the sizes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Events:
    """Consecutive offsets and sequences for one volume's events."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.offset = 0
        self.seq = 0

    def make(
        self, kind: EventKind, t_us: int, at: int = 0, data: bytes = b""
    ) -> tuple[int, WriteEvent]:
        if kind is EventKind.TICK:
            ev = make_tick(t_us)
        else:
            ev = make_event(
                kind,
                at,
                data,
                volume=VOLUME,
                sequence=self.seq,
                timestamp_us=t_us,
                volume_size=self.size,
                session="b" * 32,
            )
            self.seq += 1
        self.offset += 1
        return self.offset - 1, ev


def baseline_events(ev: Events, image: Path) -> Iterator[tuple[int, WriteEvent]]:
    yield ev.make(EventKind.SESSION_START, T0)
    yield ev.make(EventKind.BASELINE_START, T0)
    with image.open("rb") as fh:
        at = 0
        while chunk := fh.read(CHUNK):
            yield ev.make(EventKind.BASELINE, T0, at, chunk)
            at += len(chunk)
    yield ev.make(EventKind.BASELINE_END, T0)
    yield ev.make(EventKind.TICK, T0 + 2_000_000)


def feed(proc: PartitionProcessor, events: Iterator[tuple[int, WriteEvent]]) -> None:
    batch: list[tuple[int, WriteEvent]] = []
    for item in events:
        batch.append(item)
        if len(batch) >= 64:
            feed_events(proc, batch)
            batch = []
    if batch:
        feed_events(proc, batch)


def restic(repo: Path, *args: str) -> None:
    env = dict(os.environ, RESTIC_PASSWORD="kcdp-bench", RESTIC_CACHE_DIR=str(repo) + ".cache")
    subprocess.run(
        ["restic", "-r", str(repo), "--quiet", *args],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def measure(size: int, percent: float, root: Path) -> dict[str, float]:
    """Store growth of kafka-cdp and repository growth of restic for the same change."""
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (Debian package restic)")
    image = root / "volume.img"
    with image.open("wb") as fh:
        for _ in range(size // CHUNK):
            fh.write(os.urandom(CHUNK))
    blocks = size // BLOCK
    rng = random.Random(42)
    changed = sorted(rng.sample(range(blocks), int(blocks * percent / 100)))
    store_dir = root / "store"
    store = FileStore(str(store_dir), url=f"file://{store_dir}")
    opts = BuildOptions(
        topic="kcdp.writes", partition=0, workdir=root / "work", policy=WindowPolicy(seconds=1.0)
    )
    proc = PartitionProcessor(store, opts)
    proc.open(None)
    ev = Events(size)
    out: dict[str, float] = {"changes": len(changed)}
    try:
        t = time.perf_counter()
        feed(proc, baseline_events(ev, image))
        out["kcdp_base_s"] = time.perf_counter() - t
        kcdp_before = dir_bytes(store_dir)
        repo = root / "restic"
        restic(repo, "init")
        t = time.perf_counter()
        restic(repo, "backup", str(image))
        out["restic_base_s"] = time.perf_counter() - t
        restic_before = dir_bytes(repo)
        writes = [(i * BLOCK, os.urandom(BLOCK)) for i in changed]
        with image.open("r+b") as fh:
            for at, data in writes:
                fh.seek(at)
                fh.write(data)
        t = time.perf_counter()
        feed(
            proc,
            iter(
                [
                    ev.make(EventKind.WRITE, T0 + 3_000_000 + i, at, data)
                    for i, (at, data) in enumerate(writes)
                ]
                + [ev.make(EventKind.TICK, T0 + 5_000_000)]
            ),
        )
        out["kcdp_change_s"] = time.perf_counter() - t
        t = time.perf_counter()
        restic(repo, "backup", str(image))
        out["restic_change_s"] = time.perf_counter() - t
    finally:
        proc.close()
    out["kcdp_growth"] = dir_bytes(store_dir) - kcdp_before
    out["restic_growth"] = dir_bytes(repo) - restic_before
    out["kcdp_base"] = kcdp_before
    out["restic_base"] = restic_before
    return out


def figures(
    quick: bool = False, *, size_mib: int | None = None, percent: float = 5.0
) -> list[Figure]:
    size = (size_mib or (64 if quick else 1024)) << 20
    with tempfile.TemporaryDirectory(prefix="kcdp-bench-storage-") as tmp:
        m = measure(size, percent, Path(tmp))
    mib = 1 << 20
    label = f"{size >> 20} MiB" if size < 1 << 30 else f"{size >> 30} GiB"
    return [
        Figure(
            "storage",
            f"bytes stored for {percent:g}% scattered 4 KiB changes of {label}: kcdp ÷ restic",
            m["kcdp_growth"] / m["restic_growth"],
            goal=("<=", 0.1),
            detail=f"{m['kcdp_growth'] / mib:.1f} vs {m['restic_growth'] / mib:.1f} MiB "
            f"({int(m['changes'])} writes; full copies {m['kcdp_base'] / mib:.0f} vs "
            f"{m['restic_base'] / mib:.0f} MiB)",
        ),
        Figure(
            "storage",
            "time to store the change: kcdp window ÷ restic backup",
            m["kcdp_change_s"] / m["restic_change_s"],
            detail=f"{m['kcdp_change_s']:.1f} vs {m['restic_change_s']:.1f} s",
        ),
    ]


def main() -> None:
    parser = quick_parser(__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, help="volume size in MiB (1024; quick 64)")
    parser.add_argument(
        "--percent", type=float, default=5.0, help="share of 4 KiB blocks changed (5)"
    )
    args = parser.parse_args()
    print_figures(figures(args.quick, size_mib=args.size_mib, percent=args.percent))


if __name__ == "__main__":
    main()
