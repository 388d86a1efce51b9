"""In-process store for tests and ``memory://`` URLs: a dict behind a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from connectors.errors import ObjectNotFoundError
from connectors.store.base import ObjectInfo
from connectors.store.validate import check_key, check_prefix, check_range


class MemoryStore:
    """Thread-safe :class:`~connectors.store.base.ObjectStore` held in memory.

    ``list`` iterates over a snapshot taken when it starts, so concurrent writers never
    break an iteration. Nothing survives the process.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[str, bytes] = {}
        self._modified: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        blob = bytes(data)
        with self._lock:
            self._objects[key] = blob
            self._modified[key] = time.time_ns() // 1000

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        check_key(key)
        check_range(start, length)
        with self._lock:
            blob = self._objects.get(key)
        if blob is None:
            raise ObjectNotFoundError(f"{self.url}: no object {key!r}")
        end = len(blob) if length is None else start + length
        return blob[start:end]

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        check_prefix(prefix, start_after)
        with self._lock:
            snapshot = [
                ObjectInfo(k, len(v), self._modified[k])
                for k, v in self._objects.items()
                if k.startswith(prefix) and (start_after is None or k > start_after)
            ]
        return iter(sorted(snapshot, key=lambda info: info.key))

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._lock:
            blob = self._objects.get(key)
            modified = self._modified.get(key, 0)
        if blob is None:
            raise ObjectNotFoundError(f"{self.url}: no object {key!r}")
        return ObjectInfo(key, len(blob), modified)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)
            self._modified.pop(key, None)

    def close(self) -> None:
        """Nothing to release; the objects stay for other holders of this store."""
