"""The backing file or block device of a volume: open, lock, size, and byte-level helpers.

A missing file is created sparse at the asked size. The open takes an exclusive
``flock`` so two intercepts never own one volume. Clearing a range punches a hole in a
regular file (it reads back as zeros) and writes zeros elsewhere.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from connectors.errors import ConfigError, VolumeError
from connectors.fsutil import ZERO_BLOCK, libc, zero_range

_SYNC_FILE_RANGE_WRITE = 0x02
#: Default bytes written between two writeback starts (see :class:`Writeback`).
WRITEBACK_EVERY = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Backing:
    """An open, exclusively locked backing: its descriptor, size and kind."""

    fd: int
    size: int
    is_file: bool
    created: bool

    @classmethod
    def open(cls, path: Path, size: int | None) -> Backing:
        """Open ``path`` read-write (created sparse at ``size`` if missing) and lock it.

        ``size`` None takes the existing size; otherwise it must match the existing size.
        """
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ConfigError(f"volume size must be a positive number of bytes, not {size!r}")
        created = False
        try:
            if not path.exists():
                if size is None:
                    raise VolumeError(f"{path} does not exist and no size was given")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                os.ftruncate(fd, size)
                created = True
            else:
                fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise VolumeError(f"cannot open backing file {path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise VolumeError(f"{path} is already used by another intercept") from None
        actual = os.lseek(fd, 0, os.SEEK_END)
        is_file = stat.S_ISREG(os.fstat(fd).st_mode)
        if size is not None and actual != size:
            os.close(fd)
            raise VolumeError(f"{path} holds {actual} bytes, not the {size} asked for")
        if actual <= 0:
            os.close(fd)
            raise VolumeError(f"{path} is empty: a volume needs a positive size")
        return cls(fd=fd, size=actual, is_file=is_file, created=created)


def is_zero(chunk: bytes) -> bool:
    n = len(chunk)
    if n <= len(ZERO_BLOCK):
        return chunk == ZERO_BLOCK[:n]
    return chunk.count(0) == n


class Writeback:
    """Starts the kernel's writeback of ``fd`` every ``every`` bytes written.

    Only a hint (``sync_file_range(SYNC_FILE_RANGE_WRITE)`` never waits): durability still
    comes from fsync, which then finds little left to write. Failures are ignored.
    """

    __slots__ = ("every", "fd", "pending")

    def __init__(self, fd: int, every: int = WRITEBACK_EVERY) -> None:
        self.fd, self.every, self.pending = fd, every, 0

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes written; start writeback once ``every`` bytes are pending."""
        self.pending += n
        if self.pending >= self.every:
            self.pending = 0
            libc().sync_file_range(
                self.fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE
            )


def clear_range(fd: int, offset: int, length: int, *, punch: bool) -> None:
    """Make ``[offset, offset+length)`` read as zeros: punch a hole, else write zeros."""
    zero_range(fd, offset, length, punch=punch)
