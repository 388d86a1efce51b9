"""Round trips and corruption detection of the window/checkpoint/gap formats."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from connectors.errors import GapError, IntegrityError, VolumeError
from connectors.store.memory import MemoryStore
from schemas import keys
from schemas.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    materialize_checkpoint,
    write_checkpoint,
)
from schemas.events import EventKind, crc32c
from schemas.extents import Extent, split_ranges, union_ranges
from schemas.gaps import Gap, list_gaps
from schemas.image import Image
from schemas.increment import ranges_digest, read_increment, write_increment
from schemas.manifest import (
    Bookmark,
    Manifest,
    ObjectRef,
    get_verified,
    list_window_keys,
    load_manifest,
)
from schemas.writelog import LogRecord, apply_records, read_log, write_log
from tests.streams_support import small_event


def _inc(extents: list[Extent], direction: str = "forward") -> bytes:
    buf = io.BytesIO()
    write_increment(buf, extents, direction=direction, volume="v", first_offset=3, last_offset=9)
    return buf.getvalue()


def test_union_and_split() -> None:
    assert union_ranges([(5, 8), (0, 2), (2, 3), (7, 10), (4, 4)]) == [(0, 3), (5, 10)]
    assert split_ranges([(0, 5), (10, 12)], 2) == [(0, 2), (2, 4), (4, 5), (10, 12)]


def test_increment_round_trip_with_zero_extents() -> None:
    exts = [Extent(0, 3, b"abc"), Extent(10, 5, None), Extent(20, 1, b"\x00")]
    blob = _inc(exts)
    assert list(read_increment(blob, expect_direction="forward")) == exts
    info_digest = ranges_digest(exts)
    assert info_digest == ranges_digest([Extent(0, 3, b"abc"), Extent(10, 5, bytes(5)), exts[2]])


def test_increment_empty() -> None:
    assert list(read_increment(_inc([]))) == []


def test_increment_wrong_direction() -> None:
    with pytest.raises(IntegrityError, match="backward"):
        read_increment(_inc([], "backward"), expect_direction="forward", name="k.bwd")


def test_increment_rejects_overlap_on_write() -> None:
    with pytest.raises(ValueError, match="unsorted, overlapping"):
        _inc([Extent(0, 4, b"abcd"), Extent(2, 2, b"xy")])


def test_increment_bitflip_names_object() -> None:
    data = os.urandom(200_000)
    blob = bytearray(_inc([Extent(0, len(data), data)]))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(IntegrityError, match=r"obj\.fwd"):
        list(read_increment(bytes(blob), name="obj.fwd"))


def test_increment_truncation_detected() -> None:
    exts = [Extent(i << 20, 1 << 20, os.urandom(1 << 20)) for i in range(3)]
    blob = _inc(exts)
    for cut in (len(blob) - 1, len(blob) // 2, 40, 3):
        with pytest.raises(IntegrityError):
            list(read_increment(blob[:cut], name="t"))


def test_increment_block_boundary_truncation_detected() -> None:
    exts = [Extent(i << 20, 1 << 20, os.urandom(1 << 20)) for i in range(3)]
    blob = _inc(exts)
    # find the end of the first block: it is followed by the 16-byte sync marker
    import fastavro

    sync = fastavro.reader(io.BytesIO(blob))._header["sync"]
    first_block_end = blob.index(sync, blob.index(sync) + 16) + 16
    with pytest.raises(IntegrityError, match="truncated"):
        list(read_increment(blob[:first_block_end]))


def test_writelog_round_trip_and_replay(tmp_path: Path) -> None:
    events = [
        small_event(1, EventKind.WRITE, 0, b"hello world"),
        small_event(2, EventKind.BOOKMARK),
        small_event(3, EventKind.ZERO, 2, length=3),
        small_event(4, EventKind.WRITE, 60, b"tail"),
    ]
    recs = [LogRecord.from_event(e, 100 + i) for i, e in enumerate(events)]
    buf = io.BytesIO()
    assert write_log(buf, recs, volume="v", first_offset=100, last_offset=103) == 4
    back = list(read_log(buf.getvalue()))
    assert back == recs
    with Image(tmp_path / "img", 64) as img:
        apply_records(img, back, upto_offset=102)
        assert img.pread(0, 12) == b"he\0\0\0 world\0"
        assert img.pread(60, 4) == bytes(4)
        apply_records(img, back)
        assert img.pread(60, 4) == b"tail"


def test_writelog_corrupt_crc(tmp_path: Path) -> None:
    rec = LogRecord(5, 1, EventKind.WRITE, 0, 3, 1, crc32c(b"abc") ^ 1, b"abc")
    buf = io.BytesIO()
    write_log(buf, [rec], volume="v", first_offset=5, last_offset=5)
    with pytest.raises(IntegrityError, match=r"x\.log"):
        list(read_log(buf.getvalue(), name="x.log"))


def test_image_sparse_zero_and_bounds(tmp_path: Path) -> None:
    path = tmp_path / "img"
    with Image(path, 8 << 20) as img:
        img.pwrite(1 << 20, b"\x01" * (2 << 20))
        img.zero(1 << 20, 2 << 20)
        assert img.pread(1 << 20, 16) == bytes(16)
        img.apply([Extent(5, 3, b"xyz"), Extent(6, 1, None)])
        assert img.pread(4, 5) == b"\0x\0z\0"
        with pytest.raises(VolumeError):
            img.pread(8 << 20, 1)
    assert path.stat().st_blocks * 512 < 1 << 20
    with pytest.raises(VolumeError):
        Image(tmp_path / "missing", 10, create=False)
    with pytest.raises(VolumeError):
        Image(path, 16 << 20, create=False)


def _manifest() -> Manifest:
    ref = ObjectRef(keys.data_key("db", 3, 9, "fwd"), 10, "0" * 64, extents=1, logical_bytes=4)
    return Manifest(
        volume="db",
        group="db",
        topic="kcdp.writes",
        partition=0,
        volume_size=100,
        first_offset=3,
        last_offset=9,
        first_time_us=1,
        last_time_us=2,
        session="s",
        first_sequence=0,
        last_sequence=6,
        events=7,
        bytes_written=4,
        policy={"seconds": 1.0, "count": None},
        period_us=1_000_000,
        close_reason="time",
        previous=(0, 2),
        previous_digest="e" * 64,
        restorable_from=3,
        consistent=True,
        bookmarks=(Bookmark("b", 5, 7),),
        ranges_sha256="a" * 64,
        forward=ref,
        backward=ref,
        writelog=ObjectRef("k.log", 5, "1" * 64, records=7),
        created_us=9,
    )


def test_manifest_round_trip_and_listing() -> None:
    m = _manifest()
    assert Manifest.from_json(m.to_json()) == m
    store = MemoryStore()
    store.put(m.key, m.to_json())
    store.put(keys.manifest_key("db", 10, 12), b"{}")
    assert list_window_keys(store, "db") == [
        (3, 9, m.key),
        (10, 12, keys.manifest_key("db", 10, 12)),
    ]
    assert load_manifest(store, m.key) == m
    with pytest.raises(IntegrityError):
        load_manifest(store, keys.manifest_key("db", 10, 12))
    with pytest.raises(GapError):
        load_manifest(store, keys.manifest_key("db", 13, 14))
    with pytest.raises(IntegrityError):
        Manifest.from_json(m.to_json().replace(b'"version":2', b'"version":9'))


def test_get_verified() -> None:
    store = MemoryStore()
    ref = ObjectRef.of("v1/x", b"payload")
    with pytest.raises(GapError, match="v1/x"):
        get_verified(store, ref)
    store.put("v1/x", b"payload")
    assert get_verified(store, ref) == b"payload"
    store.put("v1/x", b"paylaod")
    with pytest.raises(IntegrityError, match="v1/x"):
        get_verified(store, ref)


def test_checkpoint_dedup_and_materialize(tmp_path: Path) -> None:
    store = MemoryStore()
    size = 10 * 4096 + 100
    with Image(tmp_path / "a", size) as img:
        img.pwrite(0, os.urandom(4096))
        img.pwrite(size - 50, b"end" * 10)
        cp1 = write_checkpoint(
            store, img, volume="v", offset=5, chunk_size=4096, window_digest="5" * 64
        )
        assert cp1.chunks[1] is None and cp1.chunks[0] is not None
        chunks_before = {i.key for i in store.list("v1/chunks/")}
        img.pwrite(4096 * 3, b"new")
        cp2 = write_checkpoint(
            store,
            img,
            volume="v",
            offset=9,
            chunk_size=4096,
            previous=cp1,
            dirty=[(4096 * 3, 4096 * 3 + 3)],
            window_digest="9" * 64,
        )
        chunks_after = {i.key for i in store.list("v1/chunks/")}
        assert len(chunks_after - chunks_before) == 1
        assert cp2.chunks[0] == cp1.chunks[0]
        full = img.pread(0, size)
    assert list_checkpoints(store, "v") == [5, 9]
    loaded = load_checkpoint(store, "v", 9)
    assert loaded == cp2
    with Image(tmp_path / "b", size) as out:
        materialize_checkpoint(store, loaded, out)
        assert out.pread(0, size) == full
    # a corrupt chunk is named
    key = keys.chunk_key(cp2.chunks[0] or "")
    store.put(key, store.get(key)[:-1] + b"\0")
    with Image(tmp_path / "c", size) as out, pytest.raises(IntegrityError, match=key):
        materialize_checkpoint(store, loaded, out)


def test_gap_round_trip() -> None:
    g = Gap("v", "sequence", 300, 245, "s", 143, 150, "skipped", 7)
    assert Gap.from_json(g.to_json()) == g
    store = MemoryStore()
    store.put(g.key, g.to_json())
    assert list_gaps(store, "v") == [g]
    with pytest.raises(IntegrityError):
        Gap.from_json(b'{"format":"kcdp-gap","version":1}')


def test_container_bytes_do_not_depend_on_the_process_hash_seed() -> None:
    import hashlib
    import subprocess
    import sys

    code = (
        "import io,hashlib;from schemas.increment import write_increment;"
        "from schemas.extents import Extent;b=io.BytesIO();"
        "write_increment(b,[Extent(0,3,b'abc')],direction='forward',volume='v',"
        "first_offset=0,last_offset=1);print(hashlib.sha256(b.getvalue()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2, 3, 4)
    }
    buf = io.BytesIO()
    write_increment(
        buf, [Extent(0, 3, b"abc")], direction="forward", volume="v", first_offset=0, last_offset=1
    )
    assert digests == {hashlib.sha256(buf.getvalue()).hexdigest()}
