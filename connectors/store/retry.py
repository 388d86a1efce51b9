"""Retries as a wrapper around any store (the backends never retry themselves)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from connectors.errors import ConfigError, StoreError
from connectors.store.base import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryingStore:
    """Wraps ``inner``; retries calls that fail with ``StoreError(retriable=True)``.

    ``attempts`` (default 5) is the most tries of one call; between tries it sleeps a random
    time in ``[0, min(max_delay, base_delay * 2**n)]`` ("full jitter"; defaults 0.1 s and
    5 s). Every retry is logged at WARNING with the key, the attempt and the error; when
    the tries are used up the last error is raised. Non-retriable errors pass through at
    once. ``list`` resumes after the last key it yielded, so no key comes twice; its tries
    count failures in a row without progress. ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        attempts: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ConfigError(f"store retry attempts must be at least 1, got {attempts}")
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._random = random.Random()

    def _backoff(self, op: str, key: str, attempt: int, exc: StoreError) -> None:
        """Log the failure of try ``attempt`` (1-based) and sleep before the next one."""
        delay = self._random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        log.warning(
            "store %s %r failed (attempt %d of %d), retrying in %.2fs: %s",
            op,
            key,
            attempt,
            self.attempts,
            delay,
            exc,
        )
        self._sleep(delay)

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        attempt = 1
        while True:
            try:
                return fn()
            except StoreError as exc:
                if not exc.retriable or attempt >= self.attempts:
                    raise
                self._backoff(op, key, attempt, exc)
                attempt += 1

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key, start, length))

    def stat(self, key: str) -> ObjectInfo:
        return self._call("stat", key, lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        after = start_after
        attempt = 1
        while True:
            try:
                for info in self.inner.list(prefix, after):
                    yield info
                    after = info.key
                    attempt = 1
                return
            except StoreError as exc:
                if not exc.retriable or attempt >= self.attempts:
                    raise
                self._backoff("list", prefix, attempt, exc)
                attempt += 1

    def close(self) -> None:
        self.inner.close()
