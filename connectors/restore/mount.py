"""Mount a restore point's filesystem read-only, straight from the store: :class:`PointMount`.

The point is exported on a private unix socket (:class:`ExportServer`), ``nbdfuse -r``
shows the export as a file, ``losetup --read-only`` makes it a block device, and
``mount -o ro,noload`` mounts it (``noload``: an ext3/ext4 journal is not replayed, so
nothing is written). Each mount is recorded in ``<state>/mounts/<id>.json`` (``id`` from
the directory's real path) as it is built; :func:`unmount` tears a recorded mount down
(unmount, detach the loop device, unmap the FUSE file, stop the owning ``kcdp mount``)
and is what the next mount of the same directory runs first, so a killed mount leaves
nothing behind for long.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from connectors.errors import ExternalToolError, VolumeError
from connectors.fsutil import write_atomic
from connectors.restore.export_server import ExportServer

TOOLS = ("nbdfuse", "fusermount3", "losetup", "mount", "umount")


def _run(args: list[str], *, timeout: float = 60) -> str:
    if shutil.which(args[0]) is None:
        raise ExternalToolError(f"{args[0]} is not installed (needed for: {' '.join(args)})")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ExternalToolError(f"{' '.join(args)} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _quiet(*args: str) -> bool:
    """Run a clean-up step; whether it succeeded."""
    if shutil.which(args[0]) is None:
        return False
    return subprocess.run(list(args), capture_output=True, check=False).returncode == 0


def mounts_dir(state: Path) -> Path:
    return state / "mounts"


def record_path(state: Path, directory: str | os.PathLike[str]) -> Path:
    real = os.path.realpath(directory)
    return mounts_dir(state) / f"{hashlib.sha256(real.encode()).hexdigest()[:16]}.json"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_mounted(directory: str) -> bool:
    real = os.path.realpath(directory)
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4] == real:
                return True
    return False


def _alive(pid: int | None, needle: str) -> bool:
    """Whether ``pid`` runs and its command line holds ``needle`` (not a reused pid)."""
    if not pid:
        return False
    try:
        return needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def unmount(state: Path, directory: str | os.PathLike[str]) -> bool:
    """Tear down the recorded mount of ``directory``; False when none is recorded.

    Each step runs whatever state the previous ones left (a killed mount may have done
    only some); the owning ``kcdp mount`` process, if alive, is sent SIGTERM last.
    """
    path = record_path(state, directory)
    doc = _load(path)
    if doc is None:
        return False
    target = str(doc.get("directory", directory))
    if _is_mounted(target) and not _quiet("umount", target):
        _quiet("umount", "--lazy", target)
    loop = doc.get("loop")
    if loop:
        _quiet("losetup", "-d", str(loop))
    fuse = doc.get("fuse")
    if fuse and _is_mounted(str(fuse)) and not _quiet("fusermount3", "-u", str(fuse)):
        _quiet("fusermount3", "-uz", str(fuse))
    for key, needle in (("nbdfuse_pid", str(doc.get("work"))), ("owner_pid", "mount")):
        pid = doc.get(key)
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid, needle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    work = doc.get("work")
    if work:
        shutil.rmtree(str(work), ignore_errors=True)
    path.unlink(missing_ok=True)
    return True


class PointMount:
    """Point ``offset`` of ``volume`` mounted read-only on ``directory`` (see module doc).

    :meth:`start` builds it (cleaning a recorded leftover first); :meth:`stop` tears it
    down, stopping nbdkit. ``export`` keyword arguments go to :class:`ExportServer`.
    """

    def __init__(
        self, state: Path, directory: str | os.PathLike[str], *, fstype: str = "ext4", **export: Any
    ) -> None:
        self.state = state
        self.directory = os.path.realpath(directory)
        self.fstype = fstype
        self.record = record_path(state, directory)
        self.work = self.record.with_suffix("")
        self.export_args = export
        self.server: ExportServer | None = None
        self.nbdfuse: subprocess.Popen[bytes] | None = None
        self.doc: dict[str, Any] = {}

    def _save(self, **fields: Any) -> None:
        self.doc.update(fields)
        self.record.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.record, orjson.dumps(self.doc))

    def start(self) -> None:
        if not os.path.isdir(self.directory):
            raise VolumeError(f"mount point {self.directory} is not a directory")
        unmount(self.state, self.directory)  # what a killed mount left
        if _is_mounted(self.directory):
            raise VolumeError(f"{self.directory} is already a mount point")
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise ExternalToolError(f"kcdp mount needs {', '.join(missing)} (Debian: nbdfuse "
                                    "fuse3 util-linux)")  # fmt: skip
        self.work.mkdir(parents=True, exist_ok=True)
        fuse = self.work / "fuse"
        fuse.mkdir(exist_ok=True)
        self._save(directory=self.directory, work=str(self.work), owner_pid=os.getpid())
        try:
            self.server = ExportServer(unix=self.work / "export.sock", **self.export_args)
            uri = self.server.start(timeout=600)
            pidfile = self.work / "nbdfuse.pid"
            self.nbdfuse = subprocess.Popen(
                ["nbdfuse", "-r", "-P", str(pidfile), str(fuse), uri],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self._save(fuse=str(fuse), nbdfuse_pid=self.nbdfuse.pid)
            deadline = time.monotonic() + 30
            while not pidfile.exists():
                if self.nbdfuse.poll() is not None or time.monotonic() > deadline:
                    raise ExternalToolError("nbdfuse did not start")
                time.sleep(0.05)
            loop = _run(["losetup", "--find", "--show", "--read-only", str(fuse / "nbd")]).strip()
            self._save(loop=loop)
            options = "ro,noload" if self.fstype in ("ext3", "ext4") else "ro"
            _run(["mount", "-t", self.fstype, "-o", options, loop, self.directory])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Unmount, detach, unmap, stop nbdkit; idempotent."""
        unmount(self.state, self.directory)
        if self.nbdfuse is not None:
            try:
                self.nbdfuse.wait(30)
            except subprocess.TimeoutExpired:
                self.nbdfuse.kill()
                self.nbdfuse.wait()
            self.nbdfuse = None
        if self.server is not None:
            self.server.cleanup()
            self.server = None
