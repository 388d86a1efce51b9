"""RetryingStore against a flaky fake, and S3 against an endpoint that went away."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from moto.server import ThreadedMotoServer

from connectors.errors import ConfigError, ObjectNotFoundError, StoreError
from connectors.store import MemoryStore, ObjectInfo, RetryingStore, open_store
from tests.fixtures.s3 import BUCKET


class FlakyStore(MemoryStore):
    """A MemoryStore whose calls fail with ``error`` while ``failures`` is positive.

    ``list_fail_after`` makes each listing raise after yielding that many objects (while
    failures remain), as a connection dropped mid-listing would.
    """

    def __init__(self, failures: int, error: StoreError, list_fail_after: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.error = error
        self.list_fail_after = list_fail_after
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error

    def put(self, key: str, data: bytes) -> None:
        self._maybe_fail()
        super().put(key, data)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail()
        return super().get(key, start, length)

    def stat(self, key: str) -> ObjectInfo:
        self._maybe_fail()
        return super().stat(key)

    def delete(self, key: str) -> None:
        self._maybe_fail()
        super().delete(key)

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        self.calls += 1
        items = list(super().list(prefix, start_after))

        def gen() -> Iterator[ObjectInfo]:
            for i, item in enumerate(items):
                if i == self.list_fail_after and self.failures > 0:
                    self.failures -= 1
                    raise self.error
                yield item

        return gen()


RETRIABLE = StoreError("connection reset", retriable=True)
FATAL = StoreError("access denied", retriable=False)


def wrap(inner: FlakyStore, **kwargs: float) -> tuple[RetryingStore, list[float]]:
    sleeps: list[float] = []
    attempts = int(kwargs.pop("attempts", 5))
    return RetryingStore(inner, attempts=attempts, sleep=sleeps.append, **kwargs), sleeps


def test_retriable_failures_then_success(caplog: pytest.LogCaptureFixture) -> None:
    inner = FlakyStore(failures=3, error=RETRIABLE)
    store, sleeps = wrap(inner, base_delay=0.1, max_delay=0.25)
    with caplog.at_level(logging.WARNING, logger="connectors.store.retry"):
        store.put("k", b"v")
    assert inner.calls == 4
    assert store.get("k") == b"v"
    assert len(sleeps) == 3
    caps = [0.1, 0.2, 0.25]  # base * 2**n, capped at max_delay
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 3
    assert "'k'" in retries[0].getMessage() and "attempt 1 of 5" in retries[0].getMessage()
    assert "connection reset" in retries[-1].getMessage()


@pytest.mark.parametrize("op", ["put", "get", "stat", "delete"])
def test_every_call_is_retried(op: str) -> None:
    inner = FlakyStore(failures=0, error=RETRIABLE)
    inner.put("k", b"value")
    inner.failures, inner.calls = 2, 0
    store, _ = wrap(inner)
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: store.put("k", b"value"),
        "get": lambda: store.get("k", 1, 3),
        "stat": lambda: store.stat("k"),
        "delete": lambda: store.delete("k"),
    }
    result = calls[op]()
    assert inner.calls == 3
    if op == "get":
        assert result == b"alu"
    if op == "stat":
        assert result == ObjectInfo("k", 5)


def test_non_retriable_error_is_not_retried() -> None:
    inner = FlakyStore(failures=1, error=FATAL)
    store, sleeps = wrap(inner)
    with pytest.raises(StoreError) as err:
        store.put("k", b"v")
    assert err.value is FATAL
    assert inner.calls == 1 and sleeps == []


def test_object_not_found_is_not_retried() -> None:
    inner = FlakyStore(failures=0, error=RETRIABLE)
    store, sleeps = wrap(inner)
    with pytest.raises(ObjectNotFoundError):
        store.get("missing")
    assert inner.calls == 1 and sleeps == []


def test_exhausted_attempts_raise_the_last_error() -> None:
    errors = [StoreError(f"fault {i}", retriable=True) for i in range(4)]
    inner = FlakyStore(failures=10, error=errors[0])
    following = iter(errors[1:])
    store = RetryingStore(
        inner, attempts=4, sleep=lambda s: setattr(inner, "error", next(following))
    )
    with pytest.raises(StoreError, match="fault 3") as err:
        store.get("k")
    assert err.value.retriable
    assert inner.calls == 4


def test_list_resumes_after_the_last_key_without_duplicates() -> None:
    inner = FlakyStore(failures=0, error=RETRIABLE, list_fail_after=2)
    keys = [f"p/{i:03d}" for i in range(7)]
    for key in keys:
        inner.put(key, b"x")
    inner.put("q/outside", b"x")
    inner.failures, inner.calls = 3, 0
    store, sleeps = wrap(inner, attempts=2)
    # Each listing fails after 2 items; progress resets the count, so 2 attempts suffice.
    got = [info.key for info in store.list("p/")]
    assert got == keys
    assert inner.calls == 4 and len(sleeps) == 3


def test_list_gives_up_without_progress() -> None:
    inner = FlakyStore(failures=0, error=RETRIABLE, list_fail_after=0)
    inner.put("a", b"x")
    inner.failures, inner.calls = 5, 0
    store, _ = wrap(inner, attempts=3)
    with pytest.raises(StoreError, match="connection reset"):
        list(store.list())
    assert inner.calls == 3


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        RetryingStore(MemoryStore(), attempts=0)


def test_s3_against_stopped_endpoint_is_retriable(s3_endpoint: str) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"s3://{BUCKET}/p?endpoint={host}:{port}&secure=false&region=us-east-1&create_bucket=true"
    bare = open_store(url, retry=False)
    bare.put("k", b"v")
    assert bare.get("k") == b"v"
    server.stop()
    for call in (lambda: bare.get("k"), lambda: bare.put("k", b"w"), lambda: list(bare.list())):
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.retriable
        assert not isinstance(err.value, ObjectNotFoundError)
        assert f"{host}:{port}" in str(err.value)
    sleeps: list[float] = []
    retrying = RetryingStore(bare, attempts=3, sleep=sleeps.append)
    with pytest.raises(StoreError) as err:
        retrying.stat("k")
    assert err.value.retriable
    assert len(sleeps) == 2


def test_s3_missing_bucket_is_not_retriable(s3_endpoint: str) -> None:
    store = open_store(f"s3://no-such-bucket/p?endpoint={s3_endpoint}&secure=false")
    with pytest.raises(StoreError, match="does not exist") as err:
        store.put("k", b"v")
    assert not err.value.retriable
