"""A sealed store of layout 3 (tests/fixtures/stores/layout-v3-encrypted, written across a
key rotation by commit 8fe14a3) stays readable with its key file: every point restores
exactly in both directions, it verifies clean, no object holds the planted plaintext,
and today's worker continues it under the newest key. Without the key, or with only the
key before the rotation, it is refused with EncryptionKeyError (exit 11)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from connectors.errors import EncryptionKeyError
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.restore.verify import verify_volume
from connectors.store import open_store
from connectors.store.base import ObjectStore
from connectors.store.keyring import load_key_file
from connectors.store.sealed import MAGIC, MARKER_KEY, read_marker
from schemas.checkpoint import KEYED_VERSION, load_checkpoint
from schemas.events import WriteEvent
from tests.store_fixture_support import (
    STORES,
    continue_with_worker,
    continuing_writer,
    expected_digests,
    restore_every_point,
)

NAME = "layout-v3-encrypted"
EXPECTED = expected_digests(NAME)
BASELINE_END = {"ea": 2, "eb": 5}
NEXT_OFFSET = len(EXPECTED["ea"])


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(STORES / NAME / "store", tmp_path / "store")
    key = tmp_path / "key"
    shutil.copy(STORES / NAME / "key", key)
    key.chmod(0o600)
    return tmp_path


def sealed(copy: Path, key: str = "key") -> ObjectStore:
    return open_store(f"file://{copy / 'store'}", key_file=str(copy / key), keys_now=True)


def test_every_object_is_sealed_under_one_of_two_keys_and_hides_the_plaintext(
    copy: Path,
) -> None:
    raw = open_store(f"file://{copy / 'store'}", retry=False)
    ring = load_key_file(copy / "key")
    assert read_marker(raw) == list(reversed(ring.ids()))  # the older key sealed first
    seen = set()
    for info in raw.list(""):
        blob = raw.get(info.key)
        assert b"PLANTED" not in blob, info.key
        if info.key != MARKER_KEY:
            assert blob[:4] == MAGIC, info.key
            seen.add(blob[4:12].hex())
    assert seen == set(ring.ids())
    store = sealed(copy)
    for volume in EXPECTED:
        for offset in Catalog(store, volume).checkpoints:
            cp = load_checkpoint(store, volume, offset)
            assert cp.version == KEYED_VERSION and cp.chunk_names.startswith("hmac-sha256:")
        report = verify_volume(store, volume, read_data=True)
        assert report.ok, report.problems


@pytest.mark.parametrize("volume", ["ea", "eb"])
def test_every_point_restores_exactly_in_both_directions(copy: Path, volume: str) -> None:
    counts = restore_every_point(
        sealed(copy), volume, BASELINE_END[volume], EXPECTED[volume], copy / "out.img"
    )
    assert counts.mid >= 10 and counts.backward >= 10, counts


def test_without_the_key_or_with_only_the_older_one_it_is_refused(copy: Path) -> None:
    with pytest.raises(EncryptionKeyError, match="is encrypted"):
        open_store(f"file://{copy / 'store'}", keys_now=True)
    older = copy / "older"
    older.write_text(copy.joinpath("key").read_text().splitlines()[-1] + "\n")
    older.chmod(0o600)
    store = sealed(copy, "older")
    catalog = Catalog(store, "ea")  # the newest windows are sealed by the newer key
    with pytest.raises(EncryptionKeyError, match="does not hold"):
        restore_point(store, catalog, catalog.latest(), copy / "out.img", progress=False)


def test_the_worker_continues_the_sealed_store(copy: Path) -> None:
    store = sealed(copy)
    writers = {name: continuing_writer(store, name, copy) for name in EXPECTED}
    states: dict[str, dict[int, bytes]] = {"ea": {}, "eb": {}}
    events: list[tuple[int, WriteEvent]] = []
    for i in range(30):  # two windows or more of each volume: a checkpoint of each
        v = writers["eb" if i % 3 == 2 else "ea"]
        ev = v.write((i * 613) % (v.size - 300), bytes([i + 1]) * (90 + i))
        events.append((NEXT_OFFSET + i, ev))
        states[v.name][NEXT_OFFSET + i] = bytes(v.model)
    continue_with_worker(store, events, copy / "work", count=5, start=NEXT_OFFSET)
    current = load_key_file(copy / "key").current.id
    for name in EXPECTED:
        catalog = Catalog(store, name)
        newest = catalog.checkpoints[-1]
        assert newest >= NEXT_OFFSET
        assert load_checkpoint(store, name, newest).chunk_names == f"hmac-sha256:{current}"
        assert verify_volume(store, name, read_data=True).ok
        for point in (BASELINE_END[name], NEXT_OFFSET - 1, catalog.windows[-1].last):
            out = copy / "out.img"
            restore_point(store, catalog, point, out, progress=False)
            want = states[name].get(point)
            if want is not None:
                assert out.read_bytes() == want
            else:
                assert hashlib.sha256(out.read_bytes()).hexdigest() == EXPECTED[name][point]
