"""``kcdp export`` end to end: nbdkit serving restore points straight from a real store
(a sealed local store and moto's S3 endpoint), read by nbdcopy, qemu-io and qemu-img and
compared with ``kcdp restore`` of the same point and with the reference model."""

from __future__ import annotations

import datetime as dt
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from connectors.cli import main
from connectors.restore.export import open_point
from connectors.restore.extent_map import CHUNK, EXTENT
from connectors.store import open_store
from connectors.store.keyring import generate_key_file
from tests.process_support import processes
from tests.restore_history import POLICIES, History, random_history, write_store

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("nbdkit", "nbdcopy", "qemu-io", "qemu-img")


@pytest.fixture(autouse=True)
def _real_clients() -> None:
    """The real NBD clients are part of CI (``make system-deps``): missing ones fail."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"missing {', '.join(missing)} (Debian: nbdkit libnbd-bin qemu-utils)"


@dataclass
class Stored:
    url: str
    key: str | None
    history: History


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(random.Random("export"), events=200)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, history: History) -> Stored:
    """A sealed (encrypted) local store: windows of 7 events, a checkpoint every 4."""
    root = tmp_path_factory.mktemp("sealed")
    key = root / "store.key"
    generate_key_file(key)
    url = f"file://{root / 'store'}"
    store = open_store(url, key_file=str(key))
    try:
        write_store(store, history, POLICIES["count7"], checkpoint_every=4)
    finally:
        store.close()
    return Stored(url, str(key), history)


def _plain(tmp_path: Path, history: History) -> Stored:
    url = f"file://{tmp_path / 'store'}"
    store = open_store(url)
    try:
        write_store(store, history, POLICIES["count7"], checkpoint_every=4)
    finally:
        store.close()
    return Stored(url, None, history)


def _common(s: Stored) -> list[str]:
    return ["--store", s.url] + (["--encryption-key-file", s.key] if s.key else [])


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    doc: dict[str, object]
    socket: Path

    @property
    def uri(self) -> str:
        return str(self.doc["uri"])

    def stop(self) -> str:
        """SIGTERM the command; its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err.decode()
        return err.decode("utf-8", "replace")


def _spawn(
    s: Stored, volume: str, sock: Path, *target: str, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "connectors.cli", "export", volume, *_common(s), *target]
    argv += ["--unix", str(sock), "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@contextmanager
def exported(
    s: Stored, volume: str, sock: Path, *target: str, extra: tuple[str, ...] = ()
) -> Iterator[Running]:
    proc = _spawn(s, volume, sock, *target, extra=extra)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"export did not start: {err.decode()}")
    run = Running(proc, orjson.loads(line), sock)
    try:
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def _restore(
    capsys: pytest.CaptureFixture[str], s: Stored, volume: str, point: int, out: Path
) -> None:
    argv = ["restore", volume, *_common(s), "--to-offset", str(point), "-o", str(out)]
    code = main([*argv, "--replay-from", "log"])
    _, err = capsys.readouterr()
    assert code == 0, err


def _qemu_io(uri: str, *commands: str, readonly: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["qemu-io", "-f", "raw"] + (["-r"] if readonly else [])
    for c in commands:
        argv += ["-c", c]
    return subprocess.run([*argv, uri], capture_output=True, text=True, timeout=60)


def _stamp(time_us: int) -> str:
    when = dt.datetime.fromtimestamp(time_us / 1e6, tz=dt.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_export_equals_restore_at_random_points(
    sealed: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = sealed.history
    rng = random.Random(7)
    events = h.of("va")
    offsets = [o for o, _ in events]
    # window edges (7 events a window), points between them, before and after checkpoints
    edges = [offsets[k] for k in range(6, len(offsets), 7)]
    points = sorted(set(rng.sample(edges, 6) + rng.sample(offsets[3:], 12) + [offsets[-1]]))
    targets: list[tuple[int, tuple[str, ...]]] = [(p, ("--to-offset", str(p))) for p in points]
    mark_at, mark = next((o, e) for o, e in events if e.name.startswith("bm"))
    targets.append((mark_at, ("--to-bookmark", mark.name)))
    at, ev = events[len(events) // 3]
    targets.append((at, ("--to-timestamp", _stamp(ev.timestamp_us))))
    targets.append((offsets[-1], ("--latest",)))
    assert len(targets) >= 20
    restored, copied = tmp_path / "restored.img", tmp_path / "copied.img"
    for k, (point, target) in enumerate(targets):
        sock = tmp_path / f"e{k}.sock"
        with exported(sealed, "va", sock, *target) as run:
            assert run.doc["offset"] == point and run.doc["direction"] == "forward"
            copied.unlink(missing_ok=True)
            subprocess.run(["nbdcopy", run.uri, str(copied)], check=True, timeout=60)
            _restore(capsys, sealed, "va", point, restored)
            if k % 5 == 0:  # qemu-img reads the export itself
                cmp = subprocess.run(
                    ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(restored), run.uri],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert cmp.returncode == 0, cmp.stdout + cmp.stderr
            run.stop()
        assert copied.read_bytes() == restored.read_bytes() == h.image_at("va", point), target
        assert processes(("nbdkit",), sock) == []


def test_export_through_s3(
    s3_url: str, history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(s3_url)
    try:
        write_store(store, history, POLICIES["bytes40k"], checkpoint_every=3)
    finally:
        store.close()
    s = Stored(s3_url, None, history)
    events = history.of("vb")
    for point in (events[len(events) // 2][0], events[-1][0]):
        out = tmp_path / "vb.img"
        out.unlink(missing_ok=True)
        with exported(s, "vb", tmp_path / "s3.sock", "--to-offset", str(point)) as run:
            subprocess.run(["nbdcopy", run.uri, str(out)], check=True, timeout=60)
            run.stop()
        assert out.read_bytes() == history.image_at("vb", point)


def _pieces(s: Stored, volume: str, point: int) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, object key) of every piece of the point's extent map."""
    store = open_store(s.url, key_file=s.key)
    try:
        emap = open_point(store, volume, point).map
        return [
            (emap.starts[i], emap.end(i), emap.sources[i].kind, emap.sources[i].object_key)
            for i in range(len(emap))
        ]
    finally:
        store.close()


def _object_path(s: Stored, key: str) -> Path:
    return Path(s.url.removeprefix("file://")) / key


def test_corrupt_and_missing_objects_fail_the_read(history: History, tmp_path: Path) -> None:
    s = _plain(tmp_path, history)
    offsets = [o for o, _ in history.of("va")]
    point = offsets[7 * 10 + 2]  # mid-window, two windows after the second checkpoint
    pieces = _pieces(s, "va", point)
    chunks = [(a, b, k) for a, b, kind, k in pieces if kind == CHUNK]
    increments = [(a, b, k) for a, b, kind, k in pieces if kind == EXTENT]
    assert len({k for _, _, k in chunks}) >= 2 and increments
    (c0, _, bad), (d0, _, gone) = chunks[0], next(c for c in chunks if c[2] != chunks[0][2])
    i0, _, inc = increments[0]
    spoilt = {bad, gone, inc}
    good_at = next(
        o
        for o in range(0, history.sizes["va"] - 4096, 4096)
        if not any(a < o + 4096 and o < b and k in spoilt for a, b, _, k in pieces)
    )
    with exported(
        s, "va", tmp_path / "bad.sock", "--to-offset", str(point), extra=("--cache-mib", "0")
    ) as run:
        path = _object_path(s, bad)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        _object_path(s, gone).unlink()
        _object_path(s, inc).unlink()  # fetched at opening, not cached (--cache-mib 0)
        for at in (c0, d0, i0):
            res = _qemu_io(run.uri, f"read {at} 512")
            assert res.returncode != 0 or "failed" in res.stdout + res.stderr, res.stdout
        ok = _qemu_io(run.uri, f"read {good_at} 4096")
        assert ok.returncode == 0 and "failed" not in ok.stdout + ok.stderr, ok.stdout + ok.stderr
        time.sleep(0.3)  # the log relay copies nbdkit's lines every 0.1 s
        err = run.stop()
    for key in (bad, gone, inc):
        assert key in err, err


def test_writable_overlay_and_read_only(
    sealed: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = sealed.history
    point = h.of("va")[40][0]
    want = h.image_at("va", point)
    with exported(sealed, "va", tmp_path / "ro.sock", "--to-offset", str(point)) as run:
        res = _qemu_io(run.uri, "write -P 0xab 1000 5000", readonly=False)
        assert res.returncode != 0 or "failed" in res.stdout + res.stderr, res.stdout
        res = _qemu_io(run.uri, f"read -P {want[1000]} 1000 1")
        assert "failed" not in res.stdout + res.stderr, res.stdout + res.stderr
        run.stop()
    copied = tmp_path / "rw.img"
    with exported(
        sealed, "va", tmp_path / "rw.sock", "--to-offset", str(point), extra=("--writable",)
    ) as run:
        assert run.doc["writable"] is True
        res = _qemu_io(
            run.uri, "write -P 0xab 1000 5000", "write -z 70000 3", "flush", readonly=False
        )
        assert res.returncode == 0 and "failed" not in res.stdout + res.stderr, res.stdout
        subprocess.run(["nbdcopy", run.uri, str(copied)], check=True, timeout=60)
        run.stop()
    expect = bytearray(want)
    expect[1000:6000] = b"\xab" * 5000
    expect[70000:70003] = bytes(3)
    assert copied.read_bytes() == bytes(expect)
    code = main(["verify", "va", *_common(sealed), "--read-data"])
    _, err = capsys.readouterr()
    assert code == 0, err
    restored = tmp_path / "after.img"
    _restore(capsys, sealed, "va", point, restored)
    assert restored.read_bytes() == want


def test_refused_points_and_usage(
    sealed: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = sealed.history.of("va")[-1][0]
    far = len(sealed.history.events) + 50
    sock = tmp_path / "refused.sock"  # nbdkit starts while the point is planned
    code = main(["export", "va", *_common(sealed), "--to-offset", str(far), "--unix", str(sock)])
    _, err = capsys.readouterr()
    assert code == 8 and "kcdp: error:" in err, err
    assert processes(("nbdkit",), sock) == [] and not sock.exists()
    code = main(["export", "va", *_common(sealed), "--to-offset", str(last), "--overlay", "x"])
    _, err = capsys.readouterr()
    assert code == 2 and "--overlay needs --writable" in err
    with pytest.raises(SystemExit) as exc:
        main(["export", "va", *_common(sealed)])
    assert exc.value.code == 2
    capsys.readouterr()


def test_sigint_stops_nbdkit(sealed: Stored, tmp_path: Path) -> None:
    sock = tmp_path / "int.sock"
    point = sealed.history.of("va")[-1][0]
    with exported(sealed, "va", sock, "--to-offset", str(point)) as run:
        assert processes(("nbdkit",), sock)
        run.proc.send_signal(signal.SIGINT)
        run.proc.communicate(timeout=30)
        assert run.proc.returncode == 0
    assert processes(("nbdkit",), sock) == []
    assert not sock.exists()


def test_corrupt_increment_at_opening_takes_the_other_path(
    history: History, tmp_path: Path
) -> None:
    s = _plain(tmp_path, history)
    offsets = [o for o, _ in history.of("va")]
    point = offsets[7 * 10 - 1]  # the end of a window two after a checkpoint
    forward = {k for _, _, kind, k in _pieces(s, "va", point) if kind == EXTENT}
    bad = sorted(forward)[0]
    path = _object_path(s, bad)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    out = tmp_path / "va.img"
    with exported(s, "va", tmp_path / "b.sock", "--to-offset", str(point)) as run:
        assert run.doc["direction"] == "backward"
        subprocess.run(["nbdcopy", run.uri, str(out)], check=True, timeout=60)
        err = run.stop()
    assert bad in err, err
    assert out.read_bytes() == history.image_at("va", point)
