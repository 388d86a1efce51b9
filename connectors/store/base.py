"""The object store protocol: one small interface, one module per backend.

Contract (every backend, checked by tests/unit/test_store_contract.py):

* ``put(key, data)`` is atomic: a reader sees the old object, or the whole new one,
  never a part. Once it returns the object is durable and ``data`` (any bytes-like
  object) is no longer referenced. Putting an existing key replaces it.
* ``get(key)`` returns the whole object; ``get(key, start, length)`` a byte range
  (``length=None``: to the end; a range past the end is cut at the end).
  A missing key raises :class:`connectors.errors.ObjectNotFoundError`.
* ``list(prefix, start_after=None)`` yields :class:`ObjectInfo` for every key that starts
  with ``prefix`` and sorts after ``start_after``, in lexicographic (byte) order.
* ``stat(key)`` returns :class:`ObjectInfo` or raises ``ObjectNotFoundError``. An object's
  ``modified_us`` is when it was last put (putting it again, same bytes or not, renews it).
* ``delete(key)`` removes the key; deleting a missing key is not an error.

Keys are ``/``-separated relative paths of printable ASCII, without ``..`` segments or a
leading ``/`` (exact rules and the error for a bad key: :mod:`connectors.store.validate`).
No key may also be a directory of other keys (``a/b`` and ``a/b/c``): the file store
refuses it; the v1 layout never needs it.

Failures raise :class:`connectors.errors.StoreError` with ``retriable`` set for faults
worth retrying (network, throttling, 5xx); retries live in a wrapper
(``connectors.store.retry``), not in the backends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from connectors.errors import EncryptionKeyError

#: Checkpoint chunks named by the SHA-256 of their raw bytes (every unsealed store).
SHA256_NAMES = "sha256"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A stored object: key, size, and when it was last written (µs since the epoch;
    the store's clock: file mtime, S3 ``LastModified``, the memory store's put time).
    In a sealed store the size is the plaintext's (docs/FORMAT.md "Encryption")."""

    key: str
    size: int
    modified_us: int = field(default=0, compare=False)


@runtime_checkable
class ObjectStore(Protocol):
    """An S3-like key/value store of immutable-once-written blobs."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes: ...

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


def chunk_names_of(store: ObjectStore) -> str:
    """How checkpoints written to ``store`` name their chunks: :data:`SHA256_NAMES`, or a
    sealed store's keyed MAC (``hmac-sha256:<key id>``)."""
    return str(getattr(store, "chunk_names", SHA256_NAMES))


def chunk_name(store: ObjectStore, data: bytes | memoryview, names: str) -> str:
    """The name of chunk ``data`` under ``names`` (a checkpoint's ``chunk_names``)."""
    if names == SHA256_NAMES:
        return hashlib.sha256(data).hexdigest()
    under = getattr(store, "chunk_name_under", None)
    if under is None:
        raise EncryptionKeyError(
            f"checkpoint chunks are named by a key ({names}) but the store is opened "
            "without an encryption key file"
        )
    return str(under(names, data))
