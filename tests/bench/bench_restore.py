"""Benchmark: kcdp restore (newest point, random points, in place) vs ``restic restore``.

A volume (default 1 GiB) gets a long history (:mod:`tests.bench.restore_build`: a random
baseline, then many windows of random unaligned writes, a checkpoint every
``--checkpoint-every`` windows and at the end); the final image is also backed up into a
local restic repository. Then, in the same run and on the same disk:

* restic restore of the image (the baseline) and kcdp restore --latest, run in turn:
  their ratio (goal ≤ 1);
* kcdp restore at ``--points`` random offsets inside windows (auto direction, write-log
  replay): the slowest ÷ restic (goal ≤ 1; the worst case: the three slowest points are
  timed again, the largest median counts), and the mean ÷ latest;
* in-place rollback: the --latest output (it records its point) moved back in place
  (``choose`` must pick the move, then ``move_in_place``) to the window end from which the
  newest windows write ``--rollback-pct`` % of the volume (moved forward again between
  runs), ÷ a full restore of that point (goal ≤ 0.05);
* kcdp export of the first random point: time from its start to the first 4 KiB read
  (qemu-io) and a sequential read of the whole export (nbdcopy), each ÷ the full restore
  of that point, and the peak RSS of the nbdkit process serving it,

all but the random points and the export the median of ``--repeat`` runs, each started
after ``sync()``; each output checked against the expected bytes (latest and restic: the
final image; the other points: a hash recorded while the history was written). Prints a
table; ``figures`` returns the ratios.

Run: ``.venv/bin/python -m tests.bench.bench_restore [--size-mib 1024] [--windows 300]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from connectors.restore.catalog import Catalog
from connectors.restore.inplace import image_state, move_in_place
from connectors.restore.inplace_plan import choose
from connectors.restore.materialize import restore_point
from connectors.store import open_store
from connectors.store.base import ObjectStore
from tests.bench.common import Figure
from tests.bench.restore_build import VOLUME, History, MiB, build, file_sha
from tests.process_support import processes

ROOT = Path(__file__).resolve().parents[2]


def _timed(fn: Callable[[], object]) -> float:
    """Seconds of ``fn()``, started after ``sync()``: no earlier run's writeback (or a
    removed output's freed blocks) is charged to it."""
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _drop(path: Path) -> None:
    if path.exists():
        path.unlink()


def _restic(root: Path, live: Path) -> Callable[[], float]:
    """Back ``live`` up into a new restic repository; a function timing one restore of it
    (its output checked, then removed)."""
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(root / "restic")}
    subprocess.run(["restic", "init", "-q"], env=env, check=True)
    subprocess.run(["restic", "backup", "-q", str(live)], env=env, check=True, cwd=root)
    want = file_sha(live)
    target = root / "restic-out"
    argv = ["restic", "restore", "-q", "latest", "--target", str(target)]

    def restore() -> float:
        secs = _timed(lambda: subprocess.run(argv, env=env, check=True))
        restored = next(p for p in target.rglob(live.name))
        assert file_sha(restored) == want, "restic restored different bytes"
        shutil.rmtree(target)
        return secs

    return restore


def _restore(store: ObjectStore, catalog: Catalog, point: int, out: Path, digest: str) -> float:
    """Seconds of a full restore of ``point`` into ``out``, checked against ``digest``."""
    _drop(out)
    secs = _timed(lambda: restore_point(store, catalog, point, out, progress=False))
    assert file_sha(out) == digest, f"kcdp restore at {point} restored different bytes"
    return secs


def _rollback(store: ObjectStore, catalog: Catalog, image: Path, h: History, repeat: int) -> float:
    """Median seconds to move ``image`` (at the newest point, recorded beside it) in place
    to ``h.rollback`` as ``kcdp restore --in-place`` does (``choose``, then the move), each
    result checked against the recorded hash; between runs the image is moved forward
    again (not timed)."""
    newest = catalog.windows[-1].last

    def move(to: int) -> None:
        choice = choose(catalog, image_state(image, catalog), to)
        assert choice.chosen == "in-place", f"in-place not chosen: {choice.to_text()}"
        move_in_place(store, catalog, image, to, plan=choice.move)

    times = []
    for _ in range(max(1, repeat)):
        times.append(_timed(lambda: move(h.rollback)))
        assert file_sha(image) == h.rollback_sha, "the in-place rollback left different bytes"
        move(newest)
    return statistics.median(times)


def run(args: argparse.Namespace) -> list[Figure]:
    if not shutil.which("restic"):
        raise SystemExit("restic is not installed (apt-get install restic)")
    root = Path(tempfile.mkdtemp(prefix="kcdp-bench-restore-", dir=args.dir))
    try:
        t = time.perf_counter()
        h = build(args, root)
        print(f"# history written in {time.perf_counter() - t:.1f} s", flush=True)
        want_latest = file_sha(h.live)
        restic = _restic(root, h.live)
        store = open_store(f"file://{root / 'store'}", retry=False)
        catalog = Catalog(store, VOLUME)
        newest = catalog.windows[-1].last
        out, other = root / "out.img", root / "other.img"
        restics, latests = [], []
        for _ in range(args.repeat):  # interleaved: both see the machine's same load phases
            restics.append(restic())
            latests.append(_restore(store, catalog, newest, out, want_latest))
        restic_s, latest_s = statistics.median(restics), statistics.median(latests)
        randoms = {p: _restore(store, catalog, p, other, d) for p, d in sorted(h.samples.items())}
        mean = statistics.mean(randoms.values())
        slowest = {}  # the slowest few, each timed again: the median of --repeat runs
        for p in sorted(randoms, key=lambda p: randoms[p])[-3:]:
            again = [
                _restore(store, catalog, p, other, h.samples[p]) for _ in range(1, args.repeat)
            ]
            slowest[p] = statistics.median([randoms[p], *again])
        worst_point = max(slowest, key=lambda p: slowest[p])
        worst = slowest[worst_point]
        full_s = statistics.median(
            _restore(store, catalog, h.rollback, other, h.rollback_sha) for _ in range(args.repeat)
        )
        _drop(other)
        move_s = _rollback(store, catalog, out, h, args.repeat)  # out: at the newest point
        _drop(out)
        point = min(h.samples)
        first_s, copy_s, rss_mib = _export(root, point, h.samples[point])
        restore_s = randoms[point]
        store.close()
        stored = sum(f.stat().st_size for f in (root / "store").rglob("*") if f.is_file())
        pct = 100 * h.rollback_bytes / (args.size_mib * MiB)
        print(f"# volume {args.size_mib} MiB, baseline {args.baseline_mib} MiB, "
              f"{args.windows} windows x {args.writes} writes, checkpoint every "
              f"{args.checkpoint_every}; store {stored / MiB:.0f} MiB; medians of "
              f"{args.repeat}")  # fmt: skip
        rows = [
            ("restic restore (latest image)", restic_s, "s"),
            ("kcdp restore --latest", latest_s, "s"),
            (f"kcdp restore at {len(randoms)} random offsets: slowest", worst, "s"),
            ("  (its slowest single run of the first pass)", max(randoms.values()), "s"),
            (f"kcdp restore at {len(randoms)} random offsets: mean", mean, "s"),
            (f"full restore of the rollback point {h.rollback}", full_s, "s"),
            (f"in-place rollback ({h.rollback_bytes / MiB:.1f} MiB written, {pct:.2f}%)",
             move_s, "s"),
            ("latest / restic (goal <= 1.0)", latest_s / restic_s, "x"),
            ("slowest random / restic (goal <= 1.0)", worst / restic_s, "x"),
            ("mean random / restic", mean / restic_s, "x"),
            ("mean random / latest (goal <= 1.5)", mean / latest_s, "x"),
            ("in-place rollback / full restore (goal <= 0.05)", move_s / full_s, "x"),
            ("export: first 4 KiB read / restore of the point", first_s / restore_s, "x"),
            ("export: nbdcopy of it all / restore of the point", copy_s / restore_s, "x"),
            ("export: nbdkit peak RSS", rss_mib, "MiB"),
        ]  # fmt: skip
        print(f"# runs: restic {' '.join(f'{x:.2f}' for x in restics)}, latest "
              f"{' '.join(f'{x:.2f}' for x in latests)}")  # fmt: skip
        print(f"{'what':<56} {'value':>8}")
        for name, value, unit in rows:
            print(f"{name:<56} {value:8.3f} {unit}")
        detail = f"{latest_s:.2f} s latest, {restic_s:.2f} s restic"
        rdetail = (f"slowest {worst:.2f} s (point {worst_point}, median of {args.repeat}; "
                   f"slowest single run {max(randoms.values()):.2f} s), mean {mean:.2f} s of "
                   f"{len(randoms)}; {detail}")  # fmt: skip
        written = f"{h.rollback_bytes / MiB:.1f} MiB ({pct:.2f}%) written after the point"
        idetail = f"{move_s:.3f} s in place, {full_s:.2f} s full restore; {written}"
        edetail = f"{first_s:.2f} s first read, {copy_s:.2f} s nbdcopy, {restore_s:.2f} s restore"
        return [
            Figure("restore", "restore latest ÷ restic restore", latest_s / restic_s,
                   goal=("<=", 1.0), detail=detail),
            Figure("restore", f"slowest of {len(randoms)} random points ÷ restic restore",
                   worst / restic_s, goal=("<=", 1.0), detail=rdetail),
            Figure("restore", "restore at random offsets (mean) ÷ restore latest",
                   mean / latest_s, goal=("<=", 1.5), detail=rdetail),
            Figure("restore", f"in-place rollback of {pct:.1f}% of the volume ÷ full restore",
                   move_s / full_s, goal=("<=", 0.05), detail=idetail),
            Figure("restore", "export: start to first 4 KiB read ÷ restore of the point",
                   first_s / restore_s, goal=("<=", 0.02), detail=edetail),
            Figure("restore", "export: sequential read (nbdcopy) ÷ restore of the point",
                   copy_s / restore_s, goal=("<=", 2.0), detail=edetail),
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
        assert file_sha(out) == digest, f"kcdp export of {point} served different bytes"
        _drop(out)
        rss = max((_peak_rss(pid) for pid in processes(("nbdkit",), sock)), default=0.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return first_s, copy_s, rss


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
    p.add_argument("--points", type=int, default=20, help="random restore points")
    p.add_argument(
        "--rollback-pct",
        type=float,
        default=1.0,
        help="in-place rollback: %% of the volume written after the point",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of restic and --latest")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p


def figures(quick: bool = False) -> list[Figure]:
    """The ratios of :func:`run` with default sizes (``quick``: a 64 MiB volume, 6 points,
    single runs)."""
    quick_args = ["--size-mib", "64", "--baseline-mib", "16", "--windows", "40",
                  "--points", "6", "--repeat", "1"]  # fmt: skip
    return run(parser().parse_args(quick_args if quick else []))


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()
