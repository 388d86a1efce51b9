"""``kcdp mount`` / ``kcdp umount``: an ext4 filesystem of a stored point mounted
read-only through the export, nbdfuse and a loop device (``e2fsck -fn`` clean through
them); torn down by Ctrl-C, by ``kcdp umount``, and after a killed mount by the next mount,
with no nbdkit or nbdfuse left running."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.demo.mount import fuse_problem
from connectors.store import open_store
from schemas.events import EventKind
from tests.event_factory import make_event
from tests.process_support import processes
from tests.restore_history import POLICIES, T0, History, write_store

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8 << 20


@pytest.fixture(autouse=True)
def _can_mount() -> None:
    """nbdfuse, FUSE, loop devices and root are part of CI: their absence fails."""
    problem = fuse_problem()
    assert problem is None, f"kcdp mount cannot run here: {problem}"


def _fs_image(tmp: Path, name: str, text: str) -> bytes:
    src = tmp / f"src-{name}"
    src.mkdir()
    (src / "note.txt").write_text(text)
    img = tmp / f"{name}.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(src), "-b", "4096", str(img), str(SIZE // 4096)],
        check=True,
        capture_output=True,
    )
    return img.read_bytes()


def _history(tmp: Path) -> History:
    """Volume fs: the blocks of image v1 written, bookmark v1, then those of v2 that differ."""
    h = History(group="fs", sizes={"fs": SIZE})
    seq = 0

    def emit(kind: EventKind, offset: int = 0, data: bytes = b"", name: str = "") -> None:
        nonlocal seq
        h.events.append(make_event(kind, offset, data, volume="fs", sequence=seq,
                                   timestamp_us=T0 + seq * 1000, volume_size=SIZE,
                                   session="f" * 32, name=name or None, sealed=False))  # fmt: skip
        seq += 1

    emit(EventKind.SESSION_START)
    emit(EventKind.BASELINE_START)
    emit(EventKind.BASELINE_END)
    old = bytes(SIZE)
    for k, text in enumerate(("first version", "second version")):
        new = _fs_image(tmp, f"v{k + 1}", text)
        for at in range(0, SIZE, 64 * 1024):
            if new[at : at + 64 * 1024] != old[at : at + 64 * 1024]:
                emit(EventKind.WRITE, at, new[at : at + 64 * 1024])
        emit(EventKind.BOOKMARK, name=f"v{k + 1}")
        old = new
    return h


def _start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().decode() if ready else ""
    if "mounted" not in line:
        proc.kill()
        raise AssertionError(f"mount did not start: {proc.communicate()[1].decode()}")
    return proc, line


def _source(directory: Path) -> str:
    """The device mounted on ``directory``."""
    real = os.path.realpath(directory)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == real:
            return fields[fields.index("-") + 2]
    raise AssertionError(f"nothing is mounted on {directory}")


def _helpers(tmp: Path) -> list[int]:
    """nbdkit and nbdfuse processes working under the test's state directory."""
    return processes(("nbdkit", "nbdfuse"), tmp / "state")


def _mounted(directory: Path) -> bool:
    real = os.path.realpath(directory)
    return any(
        line.split()[4] == real for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def test_mount_a_point_read_only_and_tear_it_down(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    store = open_store(url)
    h = _history(tmp_path)
    write_store(store, h, POLICIES["count7"], checkpoint_every=3)
    store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KCDP_STATE_DIR": str(tmp_path / "state")}
    base = [sys.executable, "-m", "connectors.cli"]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    common = ["--store", url]
    try:
        # Ctrl-C
        proc, _ = _start([*base, "mount", "fs", "--to-bookmark", "v1", str(mnt), *common], env)
        assert (mnt / "note.txt").read_text() == "first version"
        with pytest.raises(OSError, match="Read-only"):
            (mnt / "new.txt").write_text("x")  # read-only
        device = _source(mnt)  # the loop device over nbdfuse's file of the export
        assert device.startswith("/dev/loop"), device
        fsck = subprocess.run(["e2fsck", "-fn", device], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr  # clean, read through it all
        assert _helpers(tmp_path)  # nbdkit and nbdfuse serve the mount
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not _mounted(mnt) and not list((tmp_path / "state" / "mounts").iterdir())
        assert _helpers(tmp_path) == []  # nothing left running
        # kcdp umount from another process
        proc, _ = _start([*base, "mount", "fs", "--latest", str(mnt), *common], env)
        assert (mnt / "note.txt").read_text() == "second version"
        um = subprocess.run([*base, "umount", str(mnt)], cwd=ROOT, env=env, capture_output=True)
        assert um.returncode == 0, um.stderr
        assert proc.wait(60) == 0
        assert not _mounted(mnt) and _helpers(tmp_path) == []
        # a killed mount: the next mount cleans up and mounts again
        proc, _ = _start([*base, "mount", "fs", "--to-bookmark", "v1", str(mnt), *common], env)
        proc.kill()
        proc.wait()
        assert _mounted(mnt)  # left behind
        proc, _ = _start([*base, "mount", "fs", "--latest", str(mnt), *common], env)
        assert (mnt / "note.txt").read_text() == "second version"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not _mounted(mnt) and _helpers(tmp_path) == []
        assert subprocess.run([*base, "umount", str(mnt)], cwd=ROOT, env=env).returncode == 8
    finally:  # a failed assertion must not leave the mount behind
        subprocess.run([*base, "umount", str(mnt)], cwd=ROOT, env=env, capture_output=True)
