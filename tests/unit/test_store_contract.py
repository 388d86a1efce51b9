"""One contract suite for every ObjectStore backend: memory, file, S3 over HTTP (moto) and
a sealed (encrypted) file store.

Each test gets a fresh, empty store of each backend; the S3 one talks to a real HTTP
endpoint through the minio client. Backend-specific guarantees (file atomicity under a
crash, S3 multipart) follow the shared contract.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minio import Minio

from connectors.errors import ObjectNotFoundError, StoreError
from connectors.store import FileStore, MemoryStore, ObjectInfo, ObjectStore, open_store
from connectors.store.keyring import generate_key_file
from connectors.store.validate import TEMP_SUFFIX
from tests.fixtures.s3 import BUCKET

BACKENDS = ["memory", "file", "s3", "sealed"]
Factory = Callable[[], ObjectStore]


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Factory]:
    """A factory of fresh, empty stores of one backend (closed at the end of the test)."""
    opened: list[ObjectStore] = []

    def make() -> ObjectStore:
        if request.param == "memory":
            store: ObjectStore = MemoryStore()
        elif request.param == "file":
            store = open_store(f"file://{tmp_path_factory.mktemp('store')}", retry=False)
        elif request.param == "sealed":
            key_file = tmp_path_factory.mktemp("key") / "key"
            generate_key_file(key_file)
            url = f"file://{tmp_path_factory.mktemp('store')}"
            store = open_store(url, retry=False, key_file=str(key_file))
        else:
            endpoint = request.getfixturevalue("s3_endpoint")
            url = f"s3://{BUCKET}/c-{uuid.uuid4().hex[:12]}?endpoint={endpoint}&secure=false"
            store = open_store(url + "&region=us-east-1", retry=False)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Factory) -> ObjectStore:
    return make_store()


def keys_of(infos: Iterator[ObjectInfo]) -> list[str]:
    return [info.key for info in infos]


# -- round trips -----------------------------------------------------------------------


def test_put_get_round_trip_and_overwrite(store: ObjectStore) -> None:
    store.put("v1/volumes/vol/manifests/0001-0002.json", b'{"a": 1}')
    assert store.get("v1/volumes/vol/manifests/0001-0002.json") == b'{"a": 1}'
    store.put("v1/volumes/vol/manifests/0001-0002.json", b"shorter")
    assert store.get("v1/volumes/vol/manifests/0001-0002.json") == b"shorter"
    assert store.stat("v1/volumes/vol/manifests/0001-0002.json") == ObjectInfo(
        "v1/volumes/vol/manifests/0001-0002.json", 7
    )


def test_binary_data_with_every_byte_value(store: ObjectStore) -> None:
    data = bytes(range(256)) * 3 + os.urandom(100_000)
    store.put("bin/all-bytes", data)
    assert store.get("bin/all-bytes") == data


def test_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.get("empty", 0, 10) == b""
    assert store.stat("empty") == ObjectInfo("empty", 0)
    assert list(store.list()) == [ObjectInfo("empty", 0)]


def test_stat_sizes(store: ObjectStore) -> None:
    sizes = {"s/zero": 0, "s/one": 1, "s/kib": 1024, "s/odd": 70_001}
    for key, size in sizes.items():
        store.put(key, b"x" * size)
    for key, size in sizes.items():
        assert store.stat(key) == ObjectInfo(key, size)
    assert list(store.list("s/")) == [ObjectInfo(k, sizes[k]) for k in sorted(sizes)]


# -- ranges ----------------------------------------------------------------------------


def test_modified_time_is_renewed_by_a_put(store: ObjectStore) -> None:
    """A prune deletes a chunk only while its modification time is the one it marked: a
    put of the same bytes must renew it, in stat and in list alike."""
    key = "v1/chunks/ab/x"
    store.put(key, b"same")
    first = store.stat(key).modified_us
    assert first > 0
    assert [i.modified_us for i in store.list("v1/chunks/")] == [first]
    time.sleep(1.1)  # S3 reports Last-Modified in whole seconds
    store.put(key, b"same")
    again = store.stat(key).modified_us
    assert again > first
    assert [i.modified_us for i in store.list("v1/chunks/")] == [again]


def test_range_reads(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    store.put("r", data)
    assert store.get("r", 0, 10) == data[:10]
    assert store.get("r", 100) == data[100:]
    assert store.get("r", 100, 50) == data[100:150]
    assert store.get("r", 1000, 100) == data[1000:]  # cut at the end
    assert store.get("r", 1023, 1) == data[1023:]
    assert store.get("r", 1024) == b""  # starts exactly at the end
    assert store.get("r", 5000, 5) == b""  # past the end
    assert store.get("r", 5, 0) == b""  # zero length
    assert store.get("r", 0, None) == data


def test_range_on_missing_key_and_bad_range(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("missing", 0, 0)
    with pytest.raises(ObjectNotFoundError):
        store.get("missing", 10, 5)
    store.put("r", b"abc")
    for start, length in ((-1, None), (0, -1)):
        with pytest.raises(StoreError) as err:
            store.get("r", start, length)
        assert not err.value.retriable


# -- missing keys and delete -----------------------------------------------------------


def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("no/such/key")
    with pytest.raises(ObjectNotFoundError):
        store.stat("no/such/key")
    store.put("no/such", b"x")  # a prefix of the missing key exists
    with pytest.raises(ObjectNotFoundError):
        store.get("no/such/key")
    with pytest.raises(ObjectNotFoundError):
        store.stat("no")  # only a "directory" of keys


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.delete("never/existed")
    store.put("d/k", b"1")
    store.put("d/other", b"2")
    store.delete("d/k")
    store.delete("d/k")
    with pytest.raises(ObjectNotFoundError):
        store.get("d/k")
    assert keys_of(store.list()) == ["d/other"]
    store.put("d/k", b"again")
    assert store.get("d/k") == b"again"


# -- keys ------------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/abs",
    "a/../b",
    "..",
    "./a",
    "a//b",
    "a/",
    "a\x00b",
    "tab\tkey",
    "caf\u00e9",
    "x" * 1025,
    "a/" + "y" * 256,
    "a/b" + TEMP_SUFFIX,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: ObjectStore, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(StoreError) as err:
            call()
        assert not isinstance(err.value, ObjectNotFoundError)
        assert not err.value.retriable
        assert "invalid store key" in str(err.value)
    assert list(store.list()) == []


# -- listing ---------------------------------------------------------------------------

# "a/b" and "a/b/c" are in different sets: a file store cannot hold both (see file.py).
KEY_SETS = [
    ["a/b", "a-b", "a.b", "a0", "ab", "a/c/d", "a/b-c", "a/b.c", "b", "A", "a_b", "a~"],
    ["a/b/c", "a-b", "a.b", "a/b-c", "a/b.c", "a/bc", "a-b-c/d", "a/b/c-d", "a/b/d/e/f", "0"],
]
PREFIXES = ["", "a", "a/", "a/b", "a/b/", "a-", "a.", "a/b/c", "z", "A"]
STARTS = [None, "", "0", "a", "a-b", "a.b", "a/", "a/b", "a/b/", "a/b/c", "a/b/d", "a0", "~"]


@pytest.mark.parametrize("keys", KEY_SETS, ids=["shallow", "deep"])
def test_list_order_prefix_and_start_after(store: ObjectStore, keys: list[str]) -> None:
    for i, key in enumerate(keys):
        store.put(key, b"v" * i)
    sizes = {key: i for i, key in enumerate(keys)}
    assert list(store.list()) == [ObjectInfo(k, sizes[k]) for k in sorted(keys)]
    for prefix in PREFIXES:
        for start in STARTS:
            want = sorted(k for k in keys if k.startswith(prefix) and (start is None or k > start))
            got = keys_of(store.list(prefix, start_after=start))
            assert got == want, (prefix, start)


def test_list_of_empty_store(store: ObjectStore) -> None:
    assert list(store.list()) == []
    assert list(store.list("a/", start_after="a/b")) == []


# -- atomicity -------------------------------------------------------------------------


def test_concurrent_reader_only_sees_complete_versions(make_store: Factory) -> None:
    store = make_store()
    size = 256 * 1024
    versions = [bytes([i]) * (size + i) for i in range(1, 25)]
    store.put("hot", versions[0])
    seen: set[bytes] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.add(store.get("hot"))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for data in versions[1:]:
            store.put("hot", data)
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors
    assert seen, "the reader never completed a read"
    assert seen <= set(versions)
    assert store.get("hot") == versions[-1]


def test_file_crash_leaves_temp_file_invisible(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("v/k", b"old version")
    # A crash after the temp file was written but before the rename.
    (tmp_path / "v" / f".k.deadbeef{TEMP_SUFFIX}").write_bytes(b"new vers")
    (tmp_path / f".orphan.0123{TEMP_SUFFIX}").write_bytes(b"partial")
    assert list(store.list()) == [ObjectInfo("v/k", 11)]
    assert keys_of(store.list("v/.k")) == []
    assert store.get("v/k") == b"old version"


def test_file_failed_rename_keeps_old_version_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)
    store.put("v/k", b"old")

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError) as err:
        store.put("v/k", b"new")
    assert err.value.retriable
    monkeypatch.undo()
    assert store.get("v/k") == b"old"
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["k"]


def test_file_key_cannot_also_be_a_directory(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("a/b", b"1")
    with pytest.raises(StoreError, match="conflicts with an existing key") as err:
        store.put("a/b/c", b"2")
    assert not err.value.retriable
    store.put("x/y/z", b"3")
    with pytest.raises(StoreError, match="conflicts with an existing key"):
        store.put("x/y", b"4")
    assert keys_of(store.list()) == ["a/b", "x/y/z"]


def test_file_delete_prunes_empty_directories(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("a/b/c", b"1")
    store.delete("a/b/c")
    assert list(tmp_path.iterdir()) == []
    store.put("a/b", b"now a file")
    assert store.get("a/b") == b"now a file"


# -- S3 multipart ----------------------------------------------------------------------


def test_s3_multipart_above_threshold(s3_url: str, s3_endpoint: str) -> None:
    threshold = 5 * 1024 * 1024
    store = open_store(f"{s3_url}&multipart_threshold={threshold}")
    big = os.urandom(2 * threshold + 12345)
    edge = os.urandom(threshold)
    store.put("big", big)
    store.put("edge", edge)
    assert store.get("big") == big
    assert store.get("big", threshold - 3, 10) == big[threshold - 3 : threshold + 7]
    assert store.stat("big") == ObjectInfo("big", len(big))
    assert store.get("edge") == edge
    client = Minio(
        s3_endpoint,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        secure=False,
        region="us-east-1",
    )
    prefix = s3_url.split("?")[0].removeprefix(f"s3://{BUCKET}/")
    # A multipart object's ETag ends with -<number of parts>; a single PUT's has no dash.
    assert (client.stat_object(BUCKET, f"{prefix}/big").etag or "").endswith("-3")
    assert "-" not in (client.stat_object(BUCKET, f"{prefix}/edge").etag or "")
    store.close()


# -- model-based -----------------------------------------------------------------------

_SEGMENTS_1 = ["a", "a-b", "a.b", "ab", "b"]
_SEGMENTS_2 = ["1", "1-2", "1.2", "12", "2"]
model_keys = st.builds(
    lambda a, b: f"{a}/{b}", st.sampled_from(_SEGMENTS_1), st.sampled_from(_SEGMENTS_2)
)
model_prefixes = st.sampled_from(["", "a", "a-", "a/", "a/1", "a/1-", "ab/", "b/2", "c"])
model_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), model_keys, st.binary(max_size=40)),
        st.tuples(st.just("delete"), model_keys),
        st.tuples(
            st.just("get"),
            model_keys,
            st.integers(0, 50),
            st.one_of(st.none(), st.integers(0, 50)),
        ),
        st.tuples(st.just("stat"), model_keys),
        st.tuples(st.just("list"), model_prefixes, st.one_of(st.none(), model_keys)),
    ),
    max_size=25,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=model_ops)
def test_backend_matches_dict_model(make_store: Factory, ops: list[tuple[object, ...]]) -> None:
    store = make_store()
    model: dict[str, bytes] = {}
    for op in ops:
        if op[0] == "put":
            _, key, data = op
            assert isinstance(key, str) and isinstance(data, bytes)
            store.put(key, data)
            model[key] = data
        elif op[0] == "delete":
            key = str(op[1])
            store.delete(key)
            model.pop(key, None)
        elif op[0] == "get":
            _, key, start, length = op
            assert isinstance(key, str) and isinstance(start, int)
            assert length is None or isinstance(length, int)
            if key in model:
                end = None if length is None else start + length
                assert store.get(key, start, length) == model[key][start:end]
            else:
                with pytest.raises(ObjectNotFoundError):
                    store.get(key, start, length)
        elif op[0] == "stat":
            key = str(op[1])
            if key in model:
                assert store.stat(key) == ObjectInfo(key, len(model[key]))
            else:
                with pytest.raises(ObjectNotFoundError):
                    store.stat(key)
        else:
            _, prefix, after = op
            assert isinstance(prefix, str) and (after is None or isinstance(after, str))
            want = [
                ObjectInfo(k, len(v))
                for k, v in sorted(model.items())
                if k.startswith(prefix) and (after is None or k > after)
            ]
            assert list(store.list(prefix, after)) == want
    assert list(store.list()) == [ObjectInfo(k, len(v)) for k, v in sorted(model.items())]
