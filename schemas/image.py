"""A volume image: a sparse local file (or a block device) of a fixed size.

Zero runs of at least :data:`PUNCH_MIN` bytes are punched as holes (``fallocate(PUNCH_HOLE)``)
where the file system allows it, so an image of a mostly empty volume takes little disk
space; shorter runs (and every run where punching is not possible) are written as zeros.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from connectors.errors import VolumeError
from connectors.fsutil import pwrite_all, zero_range
from schemas.extents import Extent, nonzero_runs

#: Shorter zero runs are written, not punched: a punch is a file system transaction (on
#: ext4 it also writes the range's dirty pages back first) that costs more than writing
#: this many zeros, and it saves little space.
PUNCH_MIN = 256 << 10


class Image:
    """A fixed-size image at ``path``.

    ``create=True`` creates a missing regular file as a sparse file of ``size`` bytes and
    extends a shorter one; an existing block device must be at least ``size`` bytes.
    ``create=False`` requires the file to exist with at least ``size`` bytes.
    Raises :class:`VolumeError` when the path cannot be used.
    """

    def __init__(self, path: str | Path, size: int, *, create: bool = True) -> None:
        if size <= 0:
            raise VolumeError(f"image size must be positive, got {size}")
        self.path = Path(path)
        self.size = size
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise VolumeError(f"cannot open image {self.path}: {exc.strerror}") from None
        st = os.fstat(self._fd)
        self._is_block = stat.S_ISBLK(st.st_mode)
        have = os.lseek(self._fd, 0, os.SEEK_END) if self._is_block else st.st_size
        if have < size:
            if self._is_block or not create:
                os.close(self._fd)
                raise VolumeError(f"image {self.path} holds {have} bytes, need {size}")
            os.ftruncate(self._fd, size)
        self._closed = False

    def _outside(self, offset: int, length: int) -> VolumeError:
        return VolumeError(
            f"range [{offset}, {offset + length}) outside image {self.path} of {self.size} bytes"
        )

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self._outside(offset, length)

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (holes read as zeros)."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self._outside(offset, length)
        data = os.pread(self._fd, length, offset)
        if len(data) < length:  # a file shorter than size reads zeros past its end
            data += bytes(length - len(data))
        return data

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``."""
        self._check(offset, len(data))
        pwrite_all(self._fd, data, offset)

    def write_nonzero(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` except its all-zero 4 KiB blocks (aligned to
        ``data``'s start, :func:`~schemas.extents.nonzero_runs`), which are left as they
        are: only for a range that already reads as zeros (a new sparse file keeps its
        holes there). Returns the bytes written."""
        self._check(offset, len(data))
        view = memoryview(data)
        written = 0
        for start, end in nonzero_runs(data):
            pwrite_all(self._fd, view[start:end], offset + start)
            written += end - start
        return written

    def zero(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeros, punching a hole where possible
        (regular files, runs of at least :data:`PUNCH_MIN` bytes)."""
        self._check(offset, length)
        if length == 0:
            return
        try:
            punch = not self._is_block and length >= PUNCH_MIN
            zero_range(self._fd, offset, length, punch=punch)
        except OSError as exc:
            raise VolumeError(f"cannot zero {self.path} at {offset}: {exc.strerror}") from None

    def apply(self, extents: Iterable[Extent]) -> None:
        """Write each extent in order; zero extents (``data is None``) punch holes.

        An extent outside the image raises :class:`VolumeError` before it is written (the
        extents before it are written).
        """
        fd, size, pwrite = self._fd, self.size, os.pwrite
        for offset, length, data in extents:
            if offset < 0 or length < 0 or offset + length > size:
                raise self._outside(offset, length)
            if data is None:
                self.zero(offset, length)
                continue
            n = pwrite(fd, data, offset)
            if n < length:  # a short write: finish it
                self.pwrite(offset + n, memoryview(data)[n:])

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> Image:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
