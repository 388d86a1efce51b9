"""Baseline for the capture benchmark: an nbdkit Python plugin over a file, no capture.

Same thread model and callbacks as connectors/intercept/nbd_plugin.py, so the difference
between the two is the cost of capturing. Parameter: ``file=PATH`` (must exist).
"""

from __future__ import annotations

import os
from typing import Any

import nbdkit

API_VERSION = 2
_fd: list[int] = []
_path: list[str] = []


def config(key: str, value: str) -> None:
    if key != "file":
        raise RuntimeError(f"unknown parameter {key!r}")
    _path.append(value)


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def after_fork() -> None:
    _fd.append(os.open(_path[0], os.O_RDWR))


def open(readonly: bool) -> int:
    return 1


def get_size(h: int) -> int:
    return os.fstat(_fd[0]).st_size


def can_write(h: int) -> bool:
    return True


def can_flush(h: int) -> bool:
    return True


def can_trim(h: int) -> bool:
    return True


def can_zero(h: int) -> bool:
    return True


def can_fua(h: int) -> int:
    return int(nbdkit.FUA_NATIVE)


def can_multi_conn(h: int) -> bool:
    return True


def pread(h: int, buf: Any, offset: int, flags: int) -> None:
    buf[:] = os.pread(_fd[0], len(buf), offset)


def pwrite(h: int, buf: Any, offset: int, flags: int) -> None:
    os.pwrite(_fd[0], buf, offset)
    if flags & nbdkit.FLAG_FUA:
        os.fsync(_fd[0])


def zero(h: int, count: int, offset: int, flags: int) -> None:
    os.pwrite(_fd[0], bytes(count), offset)


def trim(h: int, count: int, offset: int, flags: int) -> None:
    os.pwrite(_fd[0], bytes(count), offset)


def flush(h: int, flags: int) -> None:
    os.fsync(_fd[0])
