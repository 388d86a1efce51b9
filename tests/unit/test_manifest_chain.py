"""Manifest/checkpoint format 2 and the head (docs/FORMAT.md "Manifest", "Head",
"Checkpoints"): canonical digests, the one chain check, the head's anchor, pairing."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from connectors.errors import GapError, IntegrityError
from connectors.store.memory import MemoryStore
from schemas import keys
from schemas.chain import check_link, link_problem
from schemas.checkpoint import Checkpoint, check_pairing, load_checkpoint, write_checkpoint
from schemas.document import canonical_digest
from schemas.head import Head, anchor_problem, load_head, put_head
from schemas.image import Image
from schemas.manifest import Manifest, ObjectRef, load_manifest
from streams.storing import WindowJob
from streams.window import WindowPolicy


def _window(first: int, last: int, prev: Manifest | None = None, **kw: object) -> Manifest:
    ref = ObjectRef(keys.data_key("db", first, last, "fwd"), 10, "0" * 64, extents=1)
    fields: dict[str, object] = dict(
        volume="db",
        group="db",
        topic="kcdp.writes",
        partition=0,
        volume_size=100,
        first_offset=first,
        last_offset=last,
        first_time_us=first,
        last_time_us=last,
        session="s",
        first_sequence=first,
        last_sequence=last,
        events=last - first + 1,
        bytes_written=4,
        policy={"seconds": 1.0},
        period_us=None,
        close_reason="count",
        previous=None if prev is None else (prev.first_offset, prev.last_offset),
        previous_digest=None if prev is None else prev.digest,
        restorable_from=first,
        consistent=True,
        bookmarks=(),
        ranges_sha256="a" * 64,
        forward=ref,
        backward=ref,
        writelog=ObjectRef("k.log", 5, "1" * 64, records=3),
        created_us=9,
    )
    fields.update(kw)
    return Manifest(**fields)  # type: ignore[arg-type]


def _chain(n: int) -> list[Manifest]:
    out: list[Manifest] = []
    for k in range(n):
        out.append(_window(10 * k, 10 * k + 5, out[-1] if out else None))
    return out


def test_v2_digest_is_the_canonical_form_and_checked_on_load() -> None:
    m = _window(0, 5, fenced=("old-session",))
    doc = orjson.loads(m.to_json())
    assert doc["version"] == 2 and doc["fenced"] == ["old-session"]
    body = {k: v for k, v in doc.items() if k != "digest"}
    want = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert doc["digest"] == m.digest == want
    assert Manifest.from_json(m.to_json()) == m
    altered = m.to_json().replace(b'"created_us":9', b'"created_us":8')
    with pytest.raises(IntegrityError, match="the-key: the manifest does not match its digest"):
        Manifest.from_json(altered, name="the-key")
    assert replace(m, bytes_written=5).digest != m.digest  # a changed manifest, a new digest


def test_a_v2_manifest_names_its_previous_window_with_its_digest() -> None:
    m = _chain(2)[1]
    doc = orjson.loads(m.to_json())
    assert doc["previous"] == {"first_offset": 0, "last_offset": 5, "digest": m.previous_digest}
    del doc["previous"]["digest"]
    doc["digest"] = canonical_digest(doc)
    with pytest.raises(IntegrityError, match="malformed"):
        Manifest.from_json(orjson.dumps(doc))


def test_v1_manifests_stay_readable_and_their_digest_is_that_of_the_stored_document() -> None:
    v1 = _window(0, 5, version=1)
    doc = orjson.loads(v1.to_json())
    assert doc["version"] == 1 and "digest" not in doc and "fenced" not in doc
    doc["extra"] = "written by a later v1 writer"  # a member this reader does not model
    loaded = Manifest.from_json(orjson.dumps(doc))
    assert loaded.version == 1 and loaded.fenced == () and loaded.previous_digest is None
    assert loaded.digest == canonical_digest(doc) != canonical_digest(loaded.to_dict())
    nxt = _window(10, 15, loaded)  # a v2 manifest chains onto the v1 one
    check_link(loaded, nxt)
    doc["events"] += 1  # a v1 manifest altered: only the v2 successor's digest notices
    with pytest.raises(IntegrityError, match="does not match the digest"):
        check_link(Manifest.from_json(orjson.dumps(doc)), nxt)


def test_check_link_names_missing_altered_and_moved_windows() -> None:
    a, b, c = _chain(3)
    check_link(None, a)
    check_link(a, b)
    broken = link_problem(a, c)  # b missing
    assert broken is not None and isinstance(broken.error, GapError) and broken.key == b.key
    assert "window 10-15 of db is missing" in broken.error.message
    broken = link_problem(None, b)  # a missing: the history before b is not stored
    assert broken is not None and isinstance(broken.error, GapError) and broken.key == a.key
    broken = link_problem(replace(a, events=99), b)  # a replaced
    assert broken is not None and isinstance(broken.error, IntegrityError)
    assert broken.key == a.key
    broken = link_problem(b, _window(20, 25, a))  # follows a, stored after b: moved
    assert broken is not None and isinstance(broken.error, IntegrityError)
    check_link((0, 5), b)  # a unreadable: offsets only
    with pytest.raises(IntegrityError, match="names no previous window"):
        check_link(a, _window(10, 15))


def test_load_manifest_refuses_a_manifest_stored_under_another_key() -> None:
    a, b = _chain(2)
    store = MemoryStore()
    store.put(a.key, b.to_json())
    with pytest.raises(IntegrityError, match="holds the manifest of"):
        load_manifest(store, a.key)


def test_the_head_round_trips_and_is_authenticated() -> None:
    store = MemoryStore()
    b = _chain(2)[1]
    assert load_head(store, "db") is None
    head = put_head(store, b, 77)
    assert load_head(store, "db") == head and head.window_digest == b.digest
    data = store.get(head.key)
    store.put(head.key, data.replace(b'"updated_us":77', b'"updated_us":78'))
    with pytest.raises(IntegrityError, match=head.key):
        load_head(store, "db")
    store.put(head.key, data[:-3])
    with pytest.raises(IntegrityError, match=head.key):
        load_head(store, "db")


def test_anchor_problem_cases() -> None:
    a, b, c = _chain(3)
    assert anchor_problem(Head.of(c, 1), c, volume="db") is None
    assert anchor_problem(Head.of(b, 1), c, volume="db") is None  # crash before the head
    missing = anchor_problem(Head.of(c, 1), b, volume="db")  # c's manifest deleted
    assert missing is not None and isinstance(missing.error, GapError) and missing.key == c.key
    stale = anchor_problem(Head.of(a, 1), c, volume="db")
    assert stale is not None and stale.key == keys.head_key("db")
    other = anchor_problem(Head.of(replace(c, events=1), 1), c, volume="db")
    assert other is not None and isinstance(other.error, IntegrityError)
    none = anchor_problem(None, c, volume="db")
    assert none is not None and none.key == keys.head_key("db")
    assert anchor_problem(None, _window(0, 5, version=1), volume="db") is None  # pre-head store


def test_checkpoint_v2_pairs_with_its_window_and_v1_reads(tmp_path: Path) -> None:
    a = _chain(1)[0]
    store = MemoryStore()
    with Image(tmp_path / "img", 100) as img:
        img.pwrite(3, b"abc")
        cp = write_checkpoint(
            store, img, volume="db", offset=5, chunk_size=64, window_digest=a.digest
        )
    loaded = load_checkpoint(store, "db", 5)
    assert loaded == cp and loaded.version == 2
    check_pairing(loaded, a)
    with pytest.raises(IntegrityError, match="differs from"):
        check_pairing(loaded, replace(a, events=1))
    with pytest.raises(GapError, match="not at the end of a stored window"):
        check_pairing(loaded, None)
    data = store.get(cp.key)
    store.put(cp.key, data.replace(b'"created_us"', b'"created_uz"'))
    with pytest.raises(IntegrityError, match=cp.key):
        load_checkpoint(store, "db", 5)
    v1 = replace(cp, version=1, window_digest=None)
    assert b"window_digest" not in v1.to_json() and b"digest" not in v1.to_json()
    store.put(cp.key, v1.to_json())
    old = load_checkpoint(store, "db", 5)
    assert old.version == 1 and old.window_digest is None
    check_pairing(old, replace(a, events=1))  # weaker: a v1 checkpoint pairs with any
    assert isinstance(Checkpoint.from_json(v1.to_json()), Checkpoint)


def test_the_previous_digest_travels_to_a_child_in_the_job() -> None:
    job = WindowJob(
        volume="db",
        group="db",
        topic="t",
        partition=0,
        volume_size=100,
        policy=WindowPolicy(count=3).to_dict(),
        image_path=Path("/x"),
        sync=False,
        checkpoint=None,
        previous_digest="d" * 64,
    )
    assert pickle.loads(pickle.dumps(job)).previous_digest == "d" * 64
