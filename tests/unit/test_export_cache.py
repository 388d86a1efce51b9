"""The export's object cache: one load per object however many reads wait for it, a
failed load reaches every waiting read and is not kept, and the size bound holds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from connectors.errors import ExportReadError
from connectors.restore.export import ObjectCache


def test_concurrent_misses_load_an_object_once() -> None:
    cache = ObjectCache(1 << 20)
    calls: list[str] = []
    gate = threading.Event()

    def load() -> tuple[bytes, int]:
        calls.append("load")
        gate.wait(5)
        return b"chunk", 5

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.fetch, "k", load) for _ in range(8)]
        time.sleep(0.05)  # every reader is waiting on the one load
        gate.set()
        assert [f.result(5) for f in futures] == [b"chunk"] * 8
    assert calls == ["load"]
    assert cache.get("k") == b"chunk" and cache.used == 5


def test_a_failed_load_fails_every_waiting_read_and_is_not_kept() -> None:
    cache = ObjectCache(1 << 20)
    gate = threading.Event()
    loads = 0

    def bad() -> tuple[bytes, int]:
        nonlocal loads
        loads += 1
        gate.wait(5)
        raise ExportReadError("chunks/ab: content does not match its digest")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.fetch, "k", bad) for _ in range(4)]
        time.sleep(0.05)
        gate.set()
        for f in futures:
            with pytest.raises(ExportReadError, match="does not match"):
                f.result(5)
    assert loads >= 1 and cache.get("k") is None  # (a read arriving late loads again)
    assert cache.fetch("k", lambda: (b"good", 4)) == b"good"  # the next read tries again


def test_the_bound_evicts_least_recently_used_and_skips_oversized() -> None:
    cache = ObjectCache(10)
    for key in "abc":
        cache.fetch(key, lambda: (b"xxxx", 4))
    assert cache.get("a") is None and cache.get("b") == b"xxxx" and cache.used == 8
    assert cache.fetch("big", lambda: (b"y" * 11, 11)) == b"y" * 11
    assert cache.get("big") is None and cache.used == 8
