"""The NBD export driven by real NBD clients (qemu-io, qemu-img, nbdcopy, ext4 through
nbdfuse and a loop device). After the export stops, replaying the volume's events from the
topic onto a blank image must give a file identical (``cmp``) to the backing file."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.intercept.nbd import NbdExport
from connectors.intercept.replay import Record, apply_events, read_events
from infra.broker import EmbeddedBroker
from schemas.events import EventKind

MiB = 1024 * 1024
Factory = Callable[..., NbdExport]


def run(
    *cmd: str, timeout: float = 120, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a real tool; a missing tool or a failure fails the test with its output."""
    if shutil.which(cmd[0]) is None:
        pytest.fail(f"{cmd[0]} is not installed (see .ci/run for the Debian packages)")
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture
def export(bootstrap: str, tmp_path: Path) -> Iterator[Factory]:
    """Start NbdExports of fresh volumes; each is stopped and cleaned up afterwards."""
    started: list[NbdExport] = []

    def start(size: int, *, broker: str = bootstrap, **settings: Any) -> NbdExport:
        name = f"nbd-{uuid.uuid4().hex[:10]}"
        exp = NbdExport(
            {
                "path": str(tmp_path / f"{name}.img"),
                "volume": name,
                "size": size,
                "bootstrap_servers": broker,
                "topic": f"test.capture.nbd.{name}",
                **settings,
            },
            unix=tmp_path / f"{name}.sock",
        )
        started.append(exp)
        exp.start()
        return exp

    yield start
    for exp in started:
        exp.cleanup()


def stop_and_replay(exp: NbdExport, bootstrap: str, tmp_path: Path) -> list[Record]:
    """Stop the export cleanly, replay its topic onto a blank image, ``cmp`` the two."""
    assert exp.stop() == 0, exp.log_tail()
    s = exp.settings
    records = read_events(bootstrap, s["topic"], volume=s["volume"])
    assert [r.event.sequence for r in records] == list(range(len(records)))
    assert records[-1].event.kind is EventKind.SESSION_END
    replayed = tmp_path / f"{s['volume']}.replayed"
    size = s["size"]
    assert isinstance(size, int)
    apply_events(records, replayed, size)
    run("cmp", s["path"], str(replayed))
    return records


def random_image(path: Path, size: int, seed: int) -> None:
    """A raw image with random data runs, zero runs and holes."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(12):
            at = rnd.randrange(0, size - 300_000)
            f.seek(at)
            f.write(rnd.randbytes(rnd.randrange(1, 300_000)))


def test_qemu_io_patterns_zero_discard_flush(
    export: Factory, bootstrap: str, tmp_path: Path
) -> None:
    exp = export(4 * MiB)
    run(
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "write -P 0xab 1000 70000",
        "-c",
        "write -P 0x11 4097 513",
        "-c",
        "write -P 0x5c 1048570 200000",
        "-c",
        "write -z 5000 3000",
        "-c",
        "discard 65536 65536",
        "-c",
        "write -P 0x77 -f 3000000 4096",  # FUA
        "-c",
        "flush",
        "-c",
        "read -P 0x11 4097 513",
        "-c",
        "read -P 0 5000 3000",
        exp.uri,
    )
    records = stop_and_replay(exp, bootstrap, tmp_path)
    seen = {r.event.kind for r in records}
    assert {EventKind.WRITE, EventKind.ZERO, EventKind.TRIM} <= seen


def test_qemu_img_convert_into_export(export: Factory, bootstrap: str, tmp_path: Path) -> None:
    size = 16 * MiB
    src = tmp_path / "source.raw"
    random_image(src, size, seed=1)
    exp = export(size)
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), exp.uri)
    stop_and_replay(exp, bootstrap, tmp_path)
    run("cmp", str(src), exp.settings["path"])


def test_nbdcopy_async_multi_connection(export: Factory, bootstrap: str, tmp_path: Path) -> None:
    size = 16 * MiB
    src = tmp_path / "source.raw"
    random_image(src, size, seed=2)
    exp = export(size, mode="async")
    run("nbdcopy", "--connections=4", "--flush", str(src), exp.uri)
    stop_and_replay(exp, bootstrap, tmp_path)
    run("cmp", str(src), exp.settings["path"])


def test_ext4_through_nbdfuse_and_loop(export: Factory, bootstrap: str, tmp_path: Path) -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: FUSE is needed to mount the export with nbdfuse")
    exp = export(48 * MiB)
    fuse_dir, mnt = tmp_path / "fuse", tmp_path / "mnt"
    fuse_dir.mkdir()
    mnt.mkdir()
    pidfile = tmp_path / "nbdfuse.pid"
    fuse = subprocess.Popen(
        ["nbdfuse", "-P", str(pidfile), str(fuse_dir), exp.uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    loop = ""
    mounted = False
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists():
            if fuse.poll() is not None or time.monotonic() > deadline:
                out = fuse.stdout.read().decode() if fuse.stdout else ""
                pytest.fail(f"nbdfuse did not start: {out}")
            time.sleep(0.05)
        proc = run("losetup", "-f", "--show", str(fuse_dir / "nbd"), check=False)
        if proc.returncode != 0:
            pytest.fail(f"no loop device available (losetup: {proc.stderr.strip()})")
        loop = proc.stdout.strip()
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", loop)
        run("mount", "-t", "ext4", loop, str(mnt))
        mounted = True
        payload = tmp_path / "payload.bin"
        payload.write_bytes(random.Random(3).randbytes(3 * MiB + 123))
        shutil.copy(payload, mnt / "payload.bin")
        shutil.copytree(Path(__file__).parent, mnt / "tests")
        db = str(mnt / "app.sqlite")
        run("sqlite3", db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
        for i in range(5):
            rows = ",".join(f"({i * 100 + j}, '{'x' * (j * 37)}')" for j in range(100))
            run("sqlite3", db, stdin=f"BEGIN; INSERT INTO t VALUES {rows}; COMMIT;")
        run("sqlite3", db, "BEGIN; DELETE FROM t WHERE id % 3 = 0; COMMIT;")
        assert run("sqlite3", db, "SELECT count(*) FROM t;").stdout.strip() == "333"
    finally:
        if mounted:
            run("umount", str(mnt), check=False)
        if loop:
            run("losetup", "-d", loop, check=False)
        run("fusermount3", "-u", str(fuse_dir), check=False)
        try:
            fuse.wait(30)
        except subprocess.TimeoutExpired:
            fuse.kill()
            fuse.wait()
    records = stop_and_replay(exp, bootstrap, tmp_path)
    assert sum(r.event.kind is EventKind.WRITE for r in records) > 10
    replayed = tmp_path / f"{exp.settings['volume']}.replayed"
    run("e2fsck", "-fn", str(replayed))


def test_flush_fails_with_eio_when_kafka_is_gone(
    export: Factory, fresh_broker: EmbeddedBroker
) -> None:
    exp = export(MiB, broker=fresh_broker.bootstrap_servers, mode="async", delivery_timeout=2.0)
    run("qemu-io", "-f", "raw", "-c", "write -P 1 0 4096", "-c", "flush", exp.uri)
    fresh_broker.stop()
    proc = run(
        "qemu-io", "-f", "raw", "-c", "write -P 2 0 4096", "-c", "flush", exp.uri, check=False
    )
    assert "Input/output error" in proc.stdout + proc.stderr
