"""``kcdp demo``: the whole product on the embedded default, proven end to end.

The story: start Tansu and a worker with short windows; protect a volume through the NBD
intercept with ext4 on it (or through the Python API where FUSE or loop devices are
missing); write files and a sqlite3 database in phases, marking three points — one
restored by Kafka offset, one by timestamp, one by bookmark — and copy the volume at each
point while the filesystem is frozen; wait until the worker made everything durable;
restore each point from the store and prove it (byte-equal to the copy, e2fsck clean,
every file's checksum equal). Prints a table, writes ``timeline.html``; exits 0 only when
every point was proven. Nothing is left running or mounted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from connectors.demo.mount import ext4_on_export, fuse_problem
from connectors.demo.proof import Proof, prove_image
from connectors.demo.timeline import Marker, RpoSample, WindowBar, render_timeline
from connectors.demo.workload import ApiWorkload, FilesystemWorkload, Point
from connectors.errors import BrokerError, KcdpError
from connectors.intercept import InterceptedVolume
from connectors.intercept.nbd import NbdExport
from connectors.kafka import ensure_topics
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.store import open_store
from infra.broker import EmbeddedBroker, free_port

MiB = 1024 * 1024
VOLUME = "demo"


@dataclass
class DemoOptions:
    """Knobs of the demo; the defaults finish in a few minutes on two cores."""

    workdir: Path = Path("demo-output")
    size: int = 64 * MiB
    window_seconds: float = 1.0
    scale: float = 1.0
    mode: str = "auto"  # auto | filesystem | api
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class Outcome:
    point: Point
    proof: Proof | None
    direction: str = ""
    bytes_read: int = 0
    objects: int = 0
    seconds: float = 0.0
    window: tuple[int, int] = (0, 0)
    error: str = ""


def say(opts: DemoOptions, text: str) -> None:
    print(text, file=opts.out, flush=True)


def run_demo(opts: DemoOptions) -> int:
    """Run the story; 0 when every point was restored and proven, else 1."""
    work = opts.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "models").mkdir(parents=True)
    (work / "restored").mkdir()
    problem = fuse_problem()
    mode = opts.mode
    if mode == "auto":
        mode = "api" if problem else "filesystem"
    if problem:
        say(opts, f"note: no filesystem on the export here — {problem}.")
        if mode == "filesystem":
            raise KcdpError(f"--mode filesystem is impossible here: {problem}")
        say(opts, "      Running the same story through the Python API instead.")
    store_url = f"file://{work / 'store'}"
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        bootstrap = broker.bootstrap_servers
        say(opts, f"[1/5] Kafka (embedded Tansu) at {bootstrap}; store {store_url}")
        conf = {"bootstrap.servers": bootstrap}
        ensure_topics(conf, {"kcdp.writes": 1, "kcdp.increments": 1, "kcdp.writes.dlq": 1})
        stack.enter_context(_worker(opts, bootstrap, store_url, work))
        say(opts, f"[2/5] worker running with {opts.window_seconds:g} s windows")
        backing = work / "volume.img"
        store = open_store(store_url)

        def protected() -> None:  # the volume's first window is durable: the worker is live
            _wait_durable(store, 0, timeout=120)

        if mode == "filesystem":
            points, end = _filesystem_story(opts, bootstrap, backing, work, protected)
        else:
            points, end = _api_story(opts, bootstrap, backing, work, protected)
        say(opts, f"[4/5] waiting until the worker has made offset {end} durable")
        catalog = _wait_durable(store, end, timeout=180)
        say(opts, "[5/5] restoring and proving each point")
        outcomes = [_restore_and_prove(opts, store, catalog, p, work) for p in points]
    _report(opts, outcomes, mode)
    _timeline(catalog, outcomes, work / "timeline.html")
    say(opts, f"timeline: {work / 'timeline.html'}")
    proven = all(o.proof is not None and o.proof.proven for o in outcomes)
    say(opts, "RESULT: every point proven" if proven else "RESULT: NOT every point was proven")
    return 0 if proven else 1


@contextlib.contextmanager
def _worker(opts: DemoOptions, bootstrap: str, store_url: str, work: Path) -> Iterator[None]:
    log = (work / "worker.log").open("wb")
    cmd = [
        sys.executable, "-m", "connectors.cli", "worker",
        "--bootstrap-servers", bootstrap, "--store", store_url,
        "--window-seconds", str(opts.window_seconds),
        "--web-port", str(free_port()), "--workdir", str(work / "worker"),
        "--session-timeout", "6",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _filesystem_story(
    opts: DemoOptions, bootstrap: str, backing: Path, work: Path, protected: Callable[[], None]
) -> tuple[list[Point], int]:
    settings = {
        "path": backing,
        "volume": VOLUME,
        "size": opts.size,
        "bootstrap_servers": bootstrap,
    }
    with NbdExport(settings, unix=work / "nbd.sock") as export:
        protected()
        say(opts, f"[3/5] NBD export {export.uri} -> nbdfuse -> loop -> ext4; writing phases")
        with ext4_on_export(export.uri) as fs:
            wl = FilesystemWorkload(fs, backing, work / "models", scale=opts.scale)
            points, end = _phases(wl, opts.window_seconds)
        if export.stop() != 0:
            raise KcdpError(f"nbdkit did not stop cleanly: {export.log_tail()}")
    return points, end


def _api_story(
    opts: DemoOptions, bootstrap: str, backing: Path, work: Path, protected: Callable[[], None]
) -> tuple[list[Point], int]:
    with InterceptedVolume(backing, VOLUME, opts.size, bootstrap_servers=bootstrap) as vol:
        protected()
        say(opts, "[3/5] Python API intercept; writing phases")
        wl = ApiWorkload(vol, backing, work / "models", scale=opts.scale)
        points, end = _phases(wl, opts.window_seconds)
    return points, end


def _phases(wl: FilesystemWorkload | ApiWorkload, period: float) -> tuple[list[Point], int]:
    """Run the phases paced by the window period: the first point is marked just after a
    window opens and writes follow it at once, so it lands between window edges; the
    other phases are a window and a half apart. Returns the points and the end offset."""
    time.sleep(period - time.time() % period + 0.05 * period)  # just past a window start
    install = wl.phase_install()
    wl.phase_edit()
    time.sleep(1.5 * period)
    update = wl.phase_update()
    time.sleep(1.5 * period)
    cleanup = wl.phase_cleanup()
    time.sleep(1.5 * period)
    return [install, update, cleanup], wl.phase_churn()


def _wait_durable(store: object, offset: int, *, timeout: float) -> Catalog:
    deadline = time.monotonic() + timeout
    while True:
        try:
            catalog = Catalog(store, VOLUME)  # type: ignore[arg-type]
            if catalog.windows and catalog.windows[-1].last >= offset:
                return catalog
        except KcdpError:
            pass
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the worker did not make offset {offset} durable within {timeout:.0f} s "
                "(see worker.log in the demo directory)"
            )
        time.sleep(0.5)


def _restore_and_prove(
    opts: DemoOptions, store: object, catalog: Catalog, point: Point, work: Path
) -> Outcome:
    out = work / "restored" / f"{point.label}.img"
    try:
        if point.how == "timestamp":
            offset = catalog.offset_at_time(point.time_us)
            target = dt.datetime.fromtimestamp(point.time_us / 1e6, dt.UTC).isoformat()
        elif point.how == "bookmark":
            offset = catalog.find_bookmark(point.bookmark).offset
            target = f"bookmark {point.bookmark}"
        else:
            offset = point.offset
            target = f"offset {offset}"
        result = restore_point(store, catalog, offset, out, progress=False)  # type: ignore[arg-type]
        index = catalog.index_for(offset)
        w = catalog.windows[index] if index is not None else None
        proof = prove_image(point.label, out, point.model, expected_files=point.files)
        say(opts, f"  {point.label:8} {target} -> offset {offset}: "
                  f"{'proven' if proof.proven else 'NOT proven'}")  # fmt: skip
        return Outcome(
            point,
            proof,
            result.plan.path.direction,
            result.plan.path.bytes,
            result.plan.path.objects,
            result.seconds,
            (w.first, w.last) if w else (0, 0),
        )
    except KcdpError as exc:
        say(opts, f"  {point.label:8} FAILED: {exc}")
        return Outcome(point, None, error=str(exc))


def _report(opts: DemoOptions, outcomes: list[Outcome], mode: str) -> None:
    head = ("point", "target", "offset", "window", "path", "read", "secs", "bytes", "fsck", "files")
    # a window label marks a point strictly between the window's edges with "<" ">"
    rows = [head]
    for o in outcomes:
        p = o.proof
        files = (
            "-"
            if p is None or p.files_ok is None
            else (f"{p.files_checked} ok" if p.files_ok else f"{len(p.mismatched)} differ")
        )
        rows.append((
            o.point.label, o.point.how, str(o.point.offset), _window_label(o),
            o.direction or "-", f"{o.bytes_read / MiB:.1f} MiB", f"{o.seconds:.2f}",
            "-" if p is None else ("equal" if p.bytes_equal else f"differ@{p.first_diff}"),
            "-" if p is None or p.fsck_ok is None else ("clean" if p.fsck_ok else "ERRORS"),
            files,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    say(opts, f"\nRestore points ({mode} story):")
    for i, r in enumerate(rows):
        say(opts, "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            say(opts, "  " + "  ".join("-" * w for w in widths))
    for o in outcomes:
        if o.error:
            say(opts, f"  {o.point.label}: {o.error}")


def _window_label(o: Outcome) -> str:
    first, last = o.window
    inside = first < o.point.offset < last
    return f"{first}<{o.point.offset}<{last}" if inside else f"{first}-{last}"


def _timeline(catalog: Catalog, outcomes: list[Outcome], path: Path) -> None:
    manifests = catalog.manifests()
    if not manifests:
        return
    t0 = manifests[0].first_time_us
    bars = [
        WindowBar(m.first_offset, m.last_offset, (m.first_time_us - t0) / 1e6,
                  (m.last_time_us - t0) / 1e6, m.forward.logical_bytes or 0, m.close_reason)
        for m in manifests
    ]  # fmt: skip
    markers = [
        Marker(o.point.label, (o.point.time_us - t0) / 1e6, o.point.offset,
               o.proof is not None and o.proof.proven)
        for o in outcomes
    ]  # fmt: skip
    rpo = [RpoSample((m.created_us - t0) / 1e6, (m.created_us - m.first_time_us) / 1e6)
           for m in manifests]  # fmt: skip
    html = render_timeline(f"kcdp demo — volume {VOLUME}", bars, markers, rpo)
    path.write_text(html, encoding="utf-8")
    os.chmod(path, 0o644)
