"""Writeback: starts kernel writeback every N bytes, never fails a write, never changes data."""

from __future__ import annotations

import os
from pathlib import Path

from connectors.fsutil import pwrite_all
from connectors.intercept.backing import Writeback


def test_pending_bytes_reset_at_each_start_and_data_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "vol.img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        wb = Writeback(fd, every=3 * 4096)
        block = os.urandom(4096)
        pending = []
        for i in range(7):
            pwrite_all(fd, memoryview(block), i * 4096)
            wb.wrote(4096)
            pending.append(wb.pending)
        assert pending == [4096, 8192, 0, 4096, 8192, 0, 4096]
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == block * 7


def test_a_descriptor_without_writeback_is_ignored() -> None:
    read, write = os.pipe()  # sync_file_range fails with ESPIPE: only a hint, no error
    try:
        wb = Writeback(write, every=1)
        wb.wrote(10)
        assert wb.pending == 0
    finally:
        os.close(read)
        os.close(write)
