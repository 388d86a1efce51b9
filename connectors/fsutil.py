"""Local files, once: durable writes (temp file, fsync, rename, fsync dir), whole-buffer
``pwrite``, zeroing a range (a punched hole where the file system allows it) and the one
libc handle (``fallocate``, ``sync_file_range``, ``prctl``)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from pathlib import Path

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
#: 1 MiB of zeros, shared (zero writes, zero tests)
ZERO_BLOCK = bytes(1 << 20)
#: errnos of a file system (or file kind) that cannot punch holes: write zeros instead
_NO_PUNCH = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV})


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path`` so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Readers see the old content or the new, never a part; once this returns the new
    content survives a crash. The temporary file (``.<name>.<pid>.tmp`` beside it) is
    removed if anything fails.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


@functools.cache
def libc() -> ctypes.CDLL:
    """The process's C library (``use_errno``): the one loader of every libc call."""
    return ctypes.CDLL(None, use_errno=True)


def pwrite_all(fd: int, buf: bytes | memoryview, offset: int) -> None:
    """Write all of ``buf`` at ``offset`` (``os.pwrite`` may write less)."""
    view = memoryview(buf)
    done = os.pwrite(fd, view, offset)  # almost always the whole buffer: no slice
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate ``[offset, offset+length)`` keeping the size (it reads as zeros); False
    where the file system or file kind cannot, OSError for any other failure."""
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if libc().fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_PUNCH:
        return False
    raise OSError(err, os.strerror(err))


def zero_range(fd: int, offset: int, length: int, *, punch: bool) -> None:
    """Make ``[offset, offset+length)`` read as zeros: with ``punch``, a hole where
    possible; else (or where not possible) written zeros."""
    if punch and punch_hole(fd, offset, length):
        return
    end = offset + length
    while offset < end:
        n = min(len(ZERO_BLOCK), end - offset)
        pwrite_all(fd, memoryview(ZERO_BLOCK)[:n], offset)
        offset += n
