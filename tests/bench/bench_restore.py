"""Benchmark: restore at random offsets vs restore latest vs ``restic restore``.

A volume (default 1 GiB) gets a long history written straight into a local directory
store with the shared format modules: a baseline of random data (default 256 MiB) in
capped windows, then many windows of random unaligned writes, with a checkpoint every
``--checkpoint-every`` windows (and at the end). The final image is also backed up into a
local restic repository. Then, in the same run and on the same disk:

* restic restore of the image (baseline),
* kcdp restore --latest,
* kcdp restore at ``--points`` random offsets (auto direction, write-log replay),
* kcdp export of the first of those points: time from its start to the first 4 KiB read
  (qemu-io) and a sequential read of the whole export (nbdcopy), each ÷ the full restore
  of that point, and the peak RSS of the nbdkit process serving it,

each output checked against the expected bytes (latest and restic: the final image; random
points: a hash recorded while the history was written). Prints a table of ratios.

Run: ``.venv/bin/python -m tests.bench.bench_restore [--size-mib 1024] [--windows 300]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
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
from tests.bench.common import Figure

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
VOLUME = "bench"
T0 = 1_795_571_270_000_000


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

    def window(self, recs: list[LogRecord], sample: int | None = None) -> str | None:
        """Store one window; with ``sample``, return the image's SHA-256 at that offset."""
        first, last = recs[0].kafka_offset, recs[-1].kafka_offset
        changes = [r for r in recs if r.length and r.kind in (EventKind.WRITE, EventKind.BASELINE)]
        pieces = split_ranges(union_ranges((r.offset, r.offset + r.length) for r in changes))
        bwd = [_extent(self.image, s, e) for s, e in pieces]
        digest_at = None
        for r in changes:
            self.image.pwrite(r.offset, r.data)
            if r.kafka_offset == sample:
                digest_at = _image_sha(self.image)
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


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _image_sha(image: Image) -> str:
    h = hashlib.sha256()
    for pos in range(0, image.size, 8 * MiB):
        h.update(image.pread(pos, min(8 * MiB, image.size - pos)))
    return h.hexdigest()


def build(args: argparse.Namespace, root: Path) -> tuple[Path, dict[int, str]]:
    """Write the history; return the live image path and {offset: sha256} of sample points."""
    rng = random.Random(args.seed)
    store = open_store(f"file://{root / 'store'}", retry=False)
    size = args.size_mib * MiB
    live = root / "live.img"
    samples: dict[int, str] = {}
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
        sample_at = set(rng.sample(range(args.windows), args.points))
        for k in range(args.windows):
            recs = []
            for _ in range(args.writes):
                length = rng.randrange(512, 64 * 1024)
                offset = rng.randrange(0, size - length)
                recs.append(w.record(EventKind.WRITE, offset, os.urandom(length)))
            if k in sample_at:  # a point inside the window: restores replay its log
                point = recs[len(recs) // 2].kafka_offset
                digest = w.window(recs, sample=point)
                assert digest is not None
                samples[point] = digest
            else:
                w.window(recs)
            if (k + 1) % args.checkpoint_every == 0 or k == args.windows - 1:
                w.checkpoint()
        image.sync()
    store.close()
    return live, samples


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def _drop(path: Path) -> None:
    if path.exists():
        path.unlink()


def run(args: argparse.Namespace) -> list[Figure]:
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed (apt-get install restic)")
    root = Path(tempfile.mkdtemp(prefix="kcdp-bench-restore-", dir=args.dir))
    try:
        t = time.perf_counter()
        live, samples = build(args, root)
        print(f"# history written in {time.perf_counter() - t:.1f} s", flush=True)
        want_latest = _sha(live)
        env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(root / "restic")}
        subprocess.run(["restic", "init", "-q"], env=env, check=True)
        subprocess.run(["restic", "backup", "-q", str(live)], env=env, check=True, cwd=root)
        store = open_store(f"file://{root / 'store'}", retry=False)
        catalog = Catalog(store, VOLUME)
        newest = catalog.windows[-1].last
        out = root / "out.img"
        rows: list[tuple[str, float]] = []
        restic_target = root / "restic-out"
        restic_s = _timed(
            lambda: subprocess.run(
                ["restic", "restore", "-q", "latest", "--target", str(restic_target)],
                env=env, check=True,
            )
        )  # fmt: skip
        restored = next(p for p in restic_target.rglob("live.img"))
        assert _sha(restored) == want_latest, "restic restored different bytes"
        shutil.rmtree(restic_target)
        rows.append(("restic restore (latest image)", restic_s))
        latest_s = _timed(lambda: restore_point(store, catalog, newest, out, progress=False))
        assert _sha(out) == want_latest, "kcdp latest restored different bytes"
        _drop(out)
        rows.append(("kcdp restore --latest", latest_s))
        times = []
        for point, digest in sorted(samples.items()):
            times.append(
                _timed(lambda p=point: restore_point(store, catalog, p, out, progress=False))
            )
            assert _sha(out) == digest, f"kcdp restore at {point} restored different bytes"
            _drop(out)
        mean = sum(times) / len(times)
        point, digest = min(samples.items())
        export = _export(root, point, digest)
        first_s, copy_s, rss_mib = export
        restore_s = times[0]
        rows.append((f"kcdp restore at {len(times)} random offsets (mean)", mean))
        store.close()
        stored = sum(f.stat().st_size for f in (root / "store").rglob("*") if f.is_file())
        print(f"# volume {args.size_mib} MiB, baseline {args.baseline_mib} MiB, "
              f"{args.windows} windows x {args.writes} writes, checkpoint every "
              f"{args.checkpoint_every}; store {stored / MiB:.0f} MiB")  # fmt: skip
        print(f"{'what':<48} {'seconds':>8}")
        for name, secs in rows:
            print(f"{name:<48} {secs:8.2f}")
        print(f"{'random / latest (goal <= 1.5)':<48} {mean / latest_s:8.2f}")
        print(f"{'random / restic (goal <= 1.0)':<48} {mean / restic_s:8.2f}")
        print(f"{'latest / restic':<48} {latest_s / restic_s:8.2f}")
        print(f"{'export: first 4 KiB read / restore of the point':<48} {first_s / restore_s:8.3f}")
        print(f"{'export: nbdcopy of it all / restore of the point':<48} {copy_s / restore_s:8.2f}")
        print(f"{'export: nbdkit peak RSS (MiB)':<48} {rss_mib:8.0f}")
        detail = f"{mean:.2f} s random, {latest_s:.2f} s latest, {restic_s:.2f} s restic"
        edetail = f"{first_s:.2f} s first read, {copy_s:.2f} s nbdcopy, {restore_s:.2f} s restore"
        return [
            Figure("restore", "restore at random offsets ÷ restore latest", mean / latest_s,
                   goal=("<=", 1.5), detail=detail),
            Figure("restore", "restore at random offsets ÷ restic restore", mean / restic_s,
                   goal=("<=", 1.0), detail=detail),
            Figure("restore", "restore latest ÷ restic restore", latest_s / restic_s,
                   detail=detail),
            Figure("restore", "export: start to first 4 KiB read ÷ restore of the point",
                   first_s / restore_s, detail=edetail),
            Figure("restore", "export: sequential read (nbdcopy) ÷ restore of the point",
                   copy_s / restore_s, detail=edetail),
            Figure("restore", "export: nbdkit peak RSS", rss_mib, unit="MiB",
                   detail=f"volume {args.size_mib} MiB, default cache bound"),
        ]  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _export(root: Path, point: int, digest: str) -> tuple[float, float, float]:
    """(start to first 4 KiB read s, nbdcopy s, nbdkit peak RSS MiB) of ``kcdp export``
    of ``point``; the copy is checked against ``digest``."""
    sock, out = root / "export.sock", root / "export.img"
    argv = [sys.executable, "-m", "connectors.cli", "export", VOLUME, "--store",
            f"file://{root / 'store'}", "--to-offset", str(point), "--unix", str(sock)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    uri = f"nbd+unix:///?socket={sock}"
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "exporting ... at URI": it serves
        read = ["qemu-io", "-f", "raw", "-r", "-c", "read 0 4096", uri]
        subprocess.run(read, check=True, capture_output=True)
        first_s = time.perf_counter() - start
        copy_s = _timed(lambda: subprocess.run(["nbdcopy", uri, str(out)], check=True))
        assert _sha(out) == digest, f"kcdp export of {point} served different bytes"
        _drop(out)
        rss = max((_peak_rss(pid) for pid in _nbdkit_pids(sock)), default=0.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return first_s, copy_s, rss


def _nbdkit_pids(sock: Path) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[0].endswith(b"nbdkit") and str(sock).encode() in cmd:
            pids.append(int(pid))
    return pids


def _peak_rss(pid: int) -> float:
    """VmHWM of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024, help="volume size (default 1024)")
    p.add_argument("--baseline-mib", type=int, default=256, help="random baseline data")
    p.add_argument("--windows", type=int, default=300, help="windows after the baseline")
    p.add_argument("--writes", type=int, default=30, help="writes per window")
    p.add_argument("--checkpoint-every", type=int, default=60, help="windows per checkpoint")
    p.add_argument("--points", type=int, default=8, help="random restore points")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p


def figures(quick: bool = False) -> list[Figure]:
    """The ratios of :func:`run` with default sizes (``quick``: a 64 MiB volume)."""
    quick_args = ["--size-mib", "64", "--baseline-mib", "16", "--windows", "40"]
    return run(parser().parse_args(quick_args if quick else []))


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
