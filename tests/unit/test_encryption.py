"""Encryption at rest (docs/FORMAT.md "Encryption"): key files, sealed objects, the marker
rules, keyed chunk names and key rotation, on the file store (no mocks of the cipher)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from connectors.errors import ConfigError, EncryptionKeyError, IntegrityError
from connectors.store import RetryingStore, open_store
from connectors.store.keyring import KEY_TAG, generate_key_file, load_key_file, parse_key_file
from connectors.store.sealed import MAGIC, MARKER_KEY, OVERHEAD, SealedStore, read_marker
from schemas import keys
from schemas.checkpoint import (
    KEYED_VERSION,
    Checkpoint,
    fetch_chunk,
    materialize_checkpoint,
    write_checkpoint,
)
from schemas.image import Image

SECRET = b"PLANTED-PLAINTEXT-PATTERN-" * 40


def key_line(master: bytes) -> str:
    return f"{KEY_TAG} {base64.b64encode(master).decode()}\n"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    generate_key_file(path)
    return path


def test_generated_key_file_is_private_unique_and_never_overwritten(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ka, kb = generate_key_file(a), generate_key_file(b)
    assert ka.id != kb.id and len(ka.id) == 16
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    assert load_key_file(a).current.id == ka.id
    before = a.read_bytes()
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_key_file(a)
    assert a.read_bytes() == before


def test_key_file_errors_name_the_line_not_the_key() -> None:
    master = os.urandom(32)
    good = key_line(master)
    ring = parse_key_file("# comment\n\n" + good + key_line(os.urandom(32)), "f")
    assert len(ring.ids()) == 2 and ring.current.id == ring.ids()[0]
    bad = {
        "other-tag " + base64.b64encode(master).decode(): "expected",
        f"{KEY_TAG} not*base64": "base64",
        f"{KEY_TAG} {base64.b64encode(master[:16]).decode()}": "32 bytes",
        good + good: "twice",
        "# only a comment\n": "no key",
    }
    for text, why in bad.items():
        with pytest.raises(ConfigError, match=why) as err:
            parse_key_file(text, "f")
        assert base64.b64encode(master).decode() not in err.value.message


def test_objects_are_sealed_bound_to_their_key_and_named_when_tampered(
    tmp_path: Path, key_file: Path
) -> None:
    raw = open_store(f"file://{tmp_path / 's'}", retry=False)
    store = open_store(f"file://{tmp_path / 's'}", retry=False, key_file=str(key_file))
    assert isinstance(store, SealedStore)
    store.put("v1/a", SECRET)
    store.put("v1/b", SECRET)
    blob_a, blob_b = raw.get("v1/a"), raw.get("v1/b")
    assert b"PLANTED" not in blob_a and blob_a[:4] == MAGIC
    assert blob_a != blob_b  # a new nonce for every put
    assert len(blob_a) == len(SECRET) + OVERHEAD == raw.stat("v1/a").size
    assert store.stat("v1/a").size == len(SECRET) == next(iter(store.list("v1/a"))).size
    assert store.get("v1/a") == SECRET and store.get("v1/a", 5, 7) == SECRET[5:12]
    assert [i.key for i in store.list("v1/")] == ["v1/a", "v1/b"]  # the marker is hidden
    flipped = bytearray(blob_a)
    flipped[len(flipped) // 2] ^= 1
    raw.put("v1/a", bytes(flipped))
    with pytest.raises(IntegrityError, match="v1/a: sealed object does not authenticate"):
        store.get("v1/a")
    raw.put("v1/c", blob_b)  # a sealed object copied under another name does not open
    with pytest.raises(IntegrityError, match="v1/c"):
        store.get("v1/c")
    raw.put("v1/d", b"plain")
    with pytest.raises(IntegrityError, match="v1/d: not a sealed object"):
        store.get("v1/d")


def test_marker_rules_for_sealed_unsealed_and_new_stores(tmp_path: Path, key_file: Path) -> None:
    sealed_url, plain_url = f"file://{tmp_path / 'sealed'}", f"file://{tmp_path / 'plain'}"
    s = open_store(sealed_url, key_file=str(key_file))
    assert read_marker(open_store(sealed_url, retry=False, key_file=None)) is None  # still new
    s.put("v1/volumes/v/head.json", b"{}")
    ids = read_marker(s.inner)  # type: ignore[attr-defined]
    assert ids == [load_key_file(key_file).current.id]
    with pytest.raises(EncryptionKeyError, match="is encrypted: pass --encryption-key-file"):
        open_store(sealed_url, keys_now=True)
    open_store(sealed_url).close()  # opening alone asks the store nothing
    p = open_store(plain_url)
    p.put("v1/volumes/v/head.json", b"{}")
    with pytest.raises(EncryptionKeyError, match="created without encryption"):
        open_store(plain_url, key_file=str(key_file), keys_now=True)
    lazy = open_store(plain_url, key_file=str(key_file))
    with pytest.raises(EncryptionKeyError, match="created without encryption"):
        lazy.get("v1/volumes/v/head.json")  # a sealed store checks before its first use
    with pytest.raises(EncryptionKeyError, match="created without encryption"):
        lazy.put("v1/volumes/v/other.json", b"{}")
    other = tmp_path / "other"
    generate_key_file(other)
    with pytest.raises(EncryptionKeyError, match="does not hold"):
        open_store(sealed_url, key_file=str(other)).get("v1/volumes/v/head.json")
    with pytest.raises(ValueError, match="the encryption marker"):
        s.put(MARKER_KEY, b"{}")


def test_rotation_keeps_old_objects_readable_and_records_the_new_key(
    tmp_path: Path, key_file: Path
) -> None:
    url = f"file://{tmp_path / 's'}"
    old = open_store(url, key_file=str(key_file))
    old.put("v1/old", b"written under the old key")
    rotated = tmp_path / "rotated"
    new_id = generate_key_file(tmp_path / "new").id
    rotated.write_text((tmp_path / "new").read_text() + key_file.read_text())
    rotated.chmod(0o600)
    store = open_store(url, key_file=str(rotated))
    store.put("v1/new", b"written under the new key")
    assert store.get("v1/old") == b"written under the old key"
    raw = open_store(url, retry=False, key_file=str(key_file)).inner  # type: ignore[attr-defined]
    assert raw.get("v1/new")[4:12].hex() == new_id
    assert read_marker(raw) == [load_key_file(key_file).current.id, new_id]
    with pytest.raises(EncryptionKeyError, match=new_id):  # the old key alone: not enough
        open_store(url, key_file=str(key_file)).get("v1/new")


def test_checkpoint_chunks_get_keyed_names_and_are_named_anew_after_rotation(
    tmp_path: Path, key_file: Path
) -> None:
    url = f"file://{tmp_path / 's'}"
    store = open_store(url, key_file=str(key_file))
    size, cs = 3 * 4096 + 100, 4096
    with Image(tmp_path / "img", size) as img:
        img.pwrite(0, SECRET[:4096])
        img.pwrite(2 * cs, os.urandom(cs + 100))
        cp = write_checkpoint(store, img, volume="v", offset=7, chunk_size=cs, window_digest="w")
        data0 = img.pread(0, cs)
    assert cp.version == KEYED_VERSION and cp.chunk_names.startswith("hmac-sha256:")
    assert cp.chunks[1] is None and cp.chunks[0] != hashlib.sha256(data0).hexdigest()
    assert Checkpoint.from_json(store.get(cp.key)) == cp
    with Image(tmp_path / "out", size) as out:
        materialize_checkpoint(store, cp, out)
        with Image(tmp_path / "img", size, create=False) as img:
            assert out.pread(0, size) == img.pread(0, size)
    hidden = RetryingStore(store)  # opens the objects but does not know the naming key
    with pytest.raises(EncryptionKeyError, match="named by a key"):
        fetch_chunk(hidden, cp.chunks[0] or "", cs, cp.chunk_names)
    # rotation: the next checkpoint takes nothing from the old chunk list
    rotated = tmp_path / "rotated"
    generate_key_file(tmp_path / "new")
    rotated.write_text((tmp_path / "new").read_text() + key_file.read_text())
    rotated.chmod(0o600)
    store2 = open_store(url, key_file=str(rotated))
    with Image(tmp_path / "img", size, create=False) as img:
        cp2 = write_checkpoint(
            store2,
            img,
            volume="v",
            offset=9,
            chunk_size=cs,
            previous=cp,
            dirty=[],
            window_digest="w2",
        )
    assert cp2.chunk_names != cp.chunk_names
    assert set(cp2.chunks) & set(cp.chunks) == {None}
    assert store2.get(keys.chunk_key(cp.chunks[0] or "")) == store.get(
        keys.chunk_key(cp.chunks[0] or "")
    )
    with Image(tmp_path / "out2", size) as out:
        materialize_checkpoint(store2, cp, out)  # the old checkpoint still restores
        assert out.pread(0, cs) == data0
