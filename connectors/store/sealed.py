"""Encryption at rest: :class:`SealedStore` seals every object of another store with
AES-256-GCM before it is put and opens it after it is got (docs/FORMAT.md "Encryption").

The marker rules (:func:`check_keys`): a store with the plaintext marker
``v1/encryption.json`` needs a key, a store with objects but no marker was created without
encryption and refuses one, an empty store becomes sealed on its first put. A
:class:`SealedStore` applies them before its first operation.
The wrapper sits outside the retrying wrapper, so a retried put re-sends the same sealed
bytes; its ``url`` is the inner store's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import orjson

from connectors.errors import EncryptionKeyError, IntegrityError, ObjectNotFoundError
from connectors.store.base import ObjectInfo, ObjectStore
from connectors.store.keyring import KEY_ID_BYTES, Key, Keyring
from connectors.store.validate import check_range

MARKER_KEY = "v1/encryption.json"
MARKER_FORMAT = "kcdp-encryption"
MAGIC = b"kcS\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES
#: bytes a sealed object has more than its plaintext
OVERHEAD = HEADER_BYTES + TAG_BYTES
_MAC_PREFIX = "hmac-sha256:"
#: a thread keeps its sealing buffer for objects up to this size (a fresh buffer costs a
#: zero-fill and page faults on every put of a large window object)
REUSE_BYTES = 80 << 20
_local = threading.local()


def key_id_of(blob: bytes | memoryview, *, what: str) -> str:
    """The key id in a sealed object's header; IntegrityError if it is not one."""
    if len(blob) < OVERHEAD or bytes(blob[: len(MAGIC)]) != MAGIC:
        raise IntegrityError(f"{what}: not a sealed object (bad header)")
    return bytes(blob[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]).hex()


class SealedStore:
    """An :class:`ObjectStore` whose objects are sealed under ``keyring`` (see module doc).

    ``put`` seals with the current key; ``get`` opens with the key the object names and
    raises :class:`IntegrityError` naming the object when it does not authenticate,
    :class:`EncryptionKeyError` when its key is not in the keyring. Ranged gets open the
    whole object and slice it. ``list`` and ``stat`` report plaintext sizes (the
    sealed size less :data:`OVERHEAD`, so sizes recorded in manifests match) and never show
    the marker.
    """

    def __init__(self, inner: ObjectStore, keyring: Keyring) -> None:
        self.inner = inner
        self.url = inner.url
        self.keyring = keyring
        self._marker_ids: list[str] | None = None  # None: the marker rules not applied yet
        self._lock = threading.Lock()

    def check(self) -> list[str]:
        """Apply the marker rules once (EncryptionKeyError for a store created without
        encryption); the key ids of the marker, [] for a new store."""
        ids = self._marker_ids
        if ids is not None:
            return ids
        with self._lock:
            if self._marker_ids is None:
                found = read_marker(self.inner)
                if found is None and next(iter(self.inner.list("v1/")), None) is not None:
                    raise EncryptionKeyError(
                        f"store {self.url} was created without encryption: a key file "
                        "cannot be used with it (drop --encryption-key-file, or protect "
                        "into a new store)"
                    )
                self._marker_ids = found or []
            return self._marker_ids

    # -- chunk names (docs/FORMAT.md "Encryption": keyed chunk names) --

    @property
    def chunk_names(self) -> str:
        """How new checkpoints name their chunks: ``hmac-sha256:<current key id>``."""
        return _MAC_PREFIX + self.keyring.current.id

    def chunk_name_under(self, names: str, data: bytes | memoryview) -> str:
        """The name of ``data`` under ``names`` (a checkpoint's ``chunk_names``)."""
        if not names.startswith(_MAC_PREFIX):
            raise IntegrityError(f"unknown chunk naming {names!r}")
        key = self.keyring.get(names[len(_MAC_PREFIX) :], what="a checkpoint's chunk naming")
        return key.chunk_name(data)

    # -- the marker --

    def _ensure_marker(self) -> None:
        """Write the marker before the first object sealed by the current key."""
        current = self.keyring.current.id
        if current in self.check():
            return
        with self._lock:
            ids = self._marker_ids or []
            if current in ids:
                return
            ids = [*ids, current]
            self.inner.put(MARKER_KEY, marker_document(ids))
            self._marker_ids = ids

    # -- the store protocol --

    def seal(self, key: str, data: bytes | memoryview) -> memoryview:
        """The sealed object of ``data`` stored under ``key`` with the current key, in this
        thread's reusable buffer: valid until the thread's next ``seal``."""
        k = self.keyring.current
        size = HEADER_BYTES + len(data) + TAG_BYTES
        buf: bytearray | None = getattr(_local, "buf", None)
        if buf is None or len(buf) < size:
            buf = bytearray(size)
            if size <= REUSE_BYTES:
                _local.buf = buf
        out = memoryview(buf)[:size]
        out[: len(MAGIC)] = MAGIC
        out[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES] = bytes.fromhex(k.id)
        nonce = os.urandom(NONCE_BYTES)
        out[len(MAGIC) + KEY_ID_BYTES : HEADER_BYTES] = nonce
        aad = bytes(out[: len(MAGIC) + KEY_ID_BYTES]) + key.encode()
        k.aead.encrypt_into(nonce, data, aad, out[HEADER_BYTES:])
        return out

    def open(self, key: str, blob: bytes | memoryview) -> bytes:
        """The plaintext of the sealed object ``blob`` stored under ``key``."""
        from cryptography.exceptions import InvalidTag

        k: Key = self.keyring.get(key_id_of(blob, what=key), what=key)
        view = memoryview(blob)
        aad = bytes(view[: len(MAGIC) + KEY_ID_BYTES]) + key.encode()
        try:
            return k.aead.decrypt(
                bytes(view[len(MAGIC) + KEY_ID_BYTES : HEADER_BYTES]), view[HEADER_BYTES:], aad
            )
        except InvalidTag:
            raise IntegrityError(
                f"{key}: sealed object does not authenticate (tampered or corrupt)"
            ) from None

    def put(self, key: str, data: bytes) -> None:
        if key == MARKER_KEY:
            raise ValueError(f"{MARKER_KEY} is the encryption marker, not an object")
        self._ensure_marker()
        self.inner.put(key, self.seal(key, data))  # type: ignore[arg-type]  # put keeps no reference

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        check_range(start, length)
        self.check()
        data = self.open(key, self.inner.get(key))
        if start == 0 and length is None:
            return data
        return data[start : None if length is None else start + length]

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        self.check()
        for info in self.inner.list(prefix, start_after):
            if info.key != MARKER_KEY:
                yield _plain(info)

    def stat(self, key: str) -> ObjectInfo:
        return _plain(self.inner.stat(key))

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()


def _plain(info: ObjectInfo) -> ObjectInfo:
    return ObjectInfo(info.key, max(0, info.size - OVERHEAD), info.modified_us)


def marker_document(key_ids: list[str]) -> bytes:
    return orjson.dumps(
        {
            "format": MARKER_FORMAT,
            "version": 1,
            "aead": "AES-256-GCM",
            "kdf": "HKDF-SHA256",
            "key_ids": key_ids,
            "created_us": time.time_ns() // 1000,
        }
    )


def read_marker(store: ObjectStore) -> list[str] | None:
    """The key ids of the store's marker, or None if the store has no marker."""
    try:
        data = store.get(MARKER_KEY)
    except ObjectNotFoundError:
        return None
    try:
        doc = orjson.loads(data)
        ids = doc["key_ids"]
        if doc.get("format") != MARKER_FORMAT or not all(isinstance(i, str) for i in ids):
            raise ValueError("not an encryption marker")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{MARKER_KEY}: unreadable encryption marker ({exc})") from None
    return list(ids)


def check_keys(store: ObjectStore) -> None:
    """Apply the marker rules to ``store`` now: EncryptionKeyError if a sealed store was
    opened without a key or a key was given for a store created without encryption."""
    if isinstance(store, SealedStore):
        store.check()
    elif read_marker(store) is not None:
        raise EncryptionKeyError(
            f"store {store.url} is encrypted: pass --encryption-key-file "
            "(or KCDP_ENCRYPTION_KEY_FILE) with its key file"
        )
