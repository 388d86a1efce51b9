"""The demo's application: what it writes to the protected volume, phase by phase, and the
model of each restore point (a copy of the volume taken while nothing could write).

Two forms of the same story: :class:`FilesystemWorkload` puts ext4 on the NBD export and
works with files and a sqlite3 database; :class:`ApiWorkload` writes file-like extents
through the Python API when this machine cannot mount FUSE or loop devices.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.demo.mount import MountedVolume
from connectors.demo.proof import tree_checksums
from connectors.intercept import InterceptedVolume
from connectors.intercept.control import request
from schemas.events import now_us

KiB, MiB = 1024, 1024 * 1024


@dataclass
class Point:
    """A moment of the story that will be restored and proven."""

    label: str
    how: str  # offset | timestamp | bookmark
    offset: int  # the volume's last event at that moment
    time_us: int
    bookmark: str
    model: Path  # the volume's bytes at that moment
    files: dict[str, str] | None  # file checksums at that moment (filesystem form)


@contextlib.contextmanager
def _db(path: Path) -> Iterator[sqlite3.Connection]:
    """A sqlite3 transaction whose connection is closed afterwards (an open connection
    keeps the filesystem busy and makes the unmount fail)."""
    con = sqlite3.connect(path)
    try:
        with con:
            yield con
    finally:
        con.close()


def _blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class FilesystemWorkload:
    """Files and a sqlite3 database on ext4 over the intercepted NBD export."""

    def __init__(self, fs: MountedVolume, backing: Path, models: Path, *, scale: float) -> None:
        self.fs, self.backing, self.models, self.scale = fs, backing, models, scale
        self.root = fs.mountpoint
        self.db = self.root / "app.sqlite"

    def _size(self, n: int) -> int:
        return max(4 * KiB, int(n * self.scale))

    def _capture(self, label: str, how: str, mark: Callable[[], tuple[int, int, str]]) -> Point:
        """Freeze the filesystem, mark the point, copy the volume and checksum the files."""
        self.fs.freeze()
        try:
            offset, time_us, bookmark = mark()
            model = self.models / f"{label}.img"
            shutil.copyfile(self.backing, model)
            files = tree_checksums(self.root)
        finally:
            self.fs.thaw()
        return Point(label, how, offset, time_us, bookmark, model, files)

    def _bookmark(self, name: str) -> tuple[int, int, str]:
        offset = int(request(f"{self.backing}.kcdp.sock", f"bookmark {name}"))
        return offset, now_us(), name

    def phase_install(self) -> Point:
        docs = self.root / "docs"
        docs.mkdir()
        for i in range(12):
            (docs / f"report-{i:02d}.bin").write_bytes(_blob(i, self._size((i + 1) * 97 * KiB)))
        with _db(self.db) as con:
            con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
            con.executemany(
                "INSERT INTO orders VALUES (?, ?, ?)",
                ((i, f"item-{i}-" + "x" * (i % 50), i % 7) for i in range(2000)),
            )
        return self._capture("install", "offset", lambda: self._bookmark("install"))

    def phase_edit(self) -> None:
        """Overwrite unaligned ranges in the middle of files (no point of its own)."""
        rng = random.Random(7)
        for i in range(0, 12, 2):
            path = self.root / "docs" / f"report-{i:02d}.bin"
            with path.open("r+b") as fh:
                fh.seek(rng.randrange(1, max(2, path.stat().st_size // 2)))
                fh.write(_blob(100 + i, 3333))
                fh.flush()
                os.fsync(fh.fileno())

    def phase_update(self) -> Point:
        with _db(self.db) as con:
            con.execute("UPDATE orders SET qty = qty + 100 WHERE id % 3 = 0")
        (self.root / "notes.txt").write_text("second phase\n" * 500)

        def at_time() -> tuple[int, int, str]:
            offset, _, _ = self._bookmark("update-marker")
            return offset, now_us(), ""

        return self._capture("update", "timestamp", at_time)

    def phase_cleanup(self) -> Point:
        for i in range(1, 12, 3):
            (self.root / "docs" / f"report-{i:02d}.bin").unlink()
        with _db(self.db) as con:
            con.execute("DELETE FROM orders WHERE qty > 100")
        with _db(self.db) as con:
            con.execute("VACUUM")
        return self._capture("cleanup", "bookmark", lambda: self._bookmark("cleanup"))

    def phase_churn(self) -> int:
        """More writes after the last point, so every point lies in the past."""
        (self.root / "churn.bin").write_bytes(_blob(999, self._size(2 * MiB)))
        with _db(self.db) as con:
            con.execute("INSERT INTO orders VALUES (100000, 'late', 1)")
        self.fs.freeze()
        try:
            return self._bookmark("end")[0]
        finally:
            self.fs.thaw()


class ApiWorkload:
    """The same phases as file-like extents written through :class:`InterceptedVolume`."""

    def __init__(self, vol: InterceptedVolume, backing: Path, models: Path, *, scale: float):
        self.vol, self.backing, self.models, self.scale = vol, backing, models, scale
        self.rng = random.Random(11)
        self.cursor = 1 * MiB

    def _file(self, seed: int, size: int) -> None:
        size = max(4 * KiB, int(size * self.scale))
        data = _blob(seed, size)
        if self.cursor + size >= self.vol.size:
            self.cursor = 1 * MiB
        for off in range(0, size, 256 * KiB):
            self.vol.write(self.cursor + off, data[off : off + 256 * KiB])
        self.cursor += size + self.rng.randrange(1, 4096)  # unaligned placement

    def _capture(self, label: str, how: str, bookmark: str) -> Point:
        offset = self.vol.bookmark(bookmark or f"{label}-marker")
        time_us = now_us()
        model = self.models / f"{label}.img"
        shutil.copyfile(self.backing, model)
        return Point(label, how, offset, time_us, bookmark, model, None)

    def phase_install(self) -> Point:
        for i in range(12):
            self._file(i, (i + 1) * 97 * KiB)
        return self._capture("install", "offset", "install")

    def phase_edit(self) -> None:
        for i in range(40):
            off = self.rng.randrange(0, self.vol.size - 5000)
            self.vol.write(off, _blob(200 + i, self.rng.randrange(1, 5000)))

    def phase_update(self) -> Point:
        for i in range(20):
            self._file(300 + i, 50 * KiB + i)
        return self._capture("update", "timestamp", "")

    def phase_cleanup(self) -> Point:
        for _ in range(6):
            off = self.rng.randrange(0, self.vol.size - 70 * KiB)
            self.vol.trim(off, self.rng.randrange(1, 64 * KiB))
        return self._capture("cleanup", "bookmark", "cleanup")

    def phase_churn(self) -> int:
        self._file(999, 2 * MiB)
        return self.vol.bookmark("end")
