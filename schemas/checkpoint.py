"""Checkpoints: full images stored as content-addressed chunks (docs/FORMAT.md "Checkpoints").

Chunk ``i`` covers ``[i·chunk_size, min((i+1)·chunk_size, volume_size))``. A non-zero chunk
is stored zstd-compressed under ``v1/chunks/<h[0:2]>/<h>`` with ``h`` the SHA-256 of its
raw bytes; an all-zero chunk is ``null`` and not stored. A new checkpoint uploads only
chunks not already present, so unchanged data is never uploaded twice. A version 2
checkpoint carries its own canonical digest and ``window_digest``, the digest of the
manifest of the window ending at its offset (:func:`check_pairing`); version 1 is read too.
In a sealed store chunks are named by a keyed MAC instead of SHA-256 and the checkpoint is
version 3, recording the naming in ``chunk_names`` (docs/FORMAT.md "Encryption").
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from connectors.errors import GapError, IntegrityError, ObjectNotFoundError
from connectors.store.base import SHA256_NAMES, ObjectStore, chunk_name, chunk_names_of
from schemas import keys
from schemas.document import canonical_digest, check_digest, load_document
from schemas.extents import intersects, union_ranges
from schemas.image import Image
from schemas.manifest import Manifest

FORMAT = "kcdp-checkpoint"
VERSION = 2
VERSIONS = (1, 2, 3)
#: the version of a checkpoint whose chunks are named by a keyed MAC (sealed stores)
KEYED_VERSION = 3
DEFAULT_CHUNK_SIZE = 4 << 20
#: A stored chunk older than this is written again rather than taken as it is
#: (docs/FORMAT.md "Retention", invariant 4); a prune's grace must exceed it.
CHUNK_REFRESH_US = 600 * 1_000_000
ZSTD_LEVEL = 3


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The image of ``volume`` after point ``offset``, as a chunk list.

    ``window_digest`` (None only in version 1): the canonical digest of the manifest of the
    window ending at ``offset``. ``digest``: the canonical digest, computed on construction
    (of the stored document for a loaded checkpoint). ``chunk_names``: how ``chunks`` are
    named, :data:`SHA256_NAMES` or (version 3 only) ``hmac-sha256:<key id>``.
    """

    volume: str
    offset: int
    volume_size: int
    chunk_size: int
    chunks: tuple[str | None, ...]
    chunk_sizes: tuple[int, ...]
    image_sha256: str
    created_us: int
    window_digest: str | None = None
    version: int = VERSION
    chunk_names: str = SHA256_NAMES
    digest: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"checkpoint version {self.version} is not one of {VERSIONS}")
        if self.version >= 2 and self.window_digest is None:
            raise ValueError("a version 2 checkpoint records its window's manifest digest")
        if (self.version >= KEYED_VERSION) != (self.chunk_names != SHA256_NAMES):
            raise ValueError("keyed chunk names are exactly what makes a version 3 checkpoint")
        object.__setattr__(self, "digest", canonical_digest(self._body()))

    @property
    def key(self) -> str:
        return keys.checkpoint_key(self.volume, self.offset)

    @property
    def stored_bytes(self) -> int:
        """Stored (compressed) bytes of all chunks, shared ones counted each time."""
        return sum(self.chunk_sizes)

    def chunk_range(self, i: int) -> tuple[int, int]:
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.volume_size)

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "volume": self.volume,
            "offset": self.offset,
            "volume_size": self.volume_size,
            "chunk_size": self.chunk_size,
            "chunks": list(self.chunks),
            "chunk_sizes": list(self.chunk_sizes),
            "image_sha256": self.image_sha256,
            "created_us": self.created_us,
        }
        if self.version >= 2:
            body["window_digest"] = self.window_digest
        if self.version >= KEYED_VERSION:
            body["chunk_names"] = self.chunk_names
        return body

    def to_json(self) -> bytes:
        body = self._body()
        if self.version >= 2:
            body["digest"] = self.digest
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, data: bytes, *, name: str = "checkpoint") -> Checkpoint:
        """Parse a checkpoint; :class:`IntegrityError` naming ``name`` if malformed or, in
        version 2, if it does not match its digest."""
        d = load_document(data, fmt=FORMAT, version=VERSIONS, what="checkpoint", name=name)
        version = int(d["version"])
        digest = check_digest(d, what="checkpoint", name=name) if version >= 2 else None
        try:
            cp = cls(
                volume=str(d["volume"]),
                offset=int(d["offset"]),
                volume_size=int(d["volume_size"]),
                chunk_size=int(d["chunk_size"]),
                chunks=tuple(None if c is None else str(c) for c in d["chunks"]),
                chunk_sizes=tuple(int(s) for s in d["chunk_sizes"]),
                image_sha256=str(d["image_sha256"]),
                created_us=int(d["created_us"]),
                window_digest=str(d["window_digest"]) if version >= 2 else None,
                version=version,
                chunk_names=str(d["chunk_names"]) if version >= KEYED_VERSION else SHA256_NAMES,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(
                f"{name}: malformed checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        n = -(-cp.volume_size // cp.chunk_size) if cp.chunk_size > 0 else -1
        if n != len(cp.chunks) or n != len(cp.chunk_sizes):
            raise IntegrityError(f"{name}: chunk list does not match the volume size")
        object.__setattr__(cp, "digest", digest or canonical_digest(d))
        return cp


def check_pairing(cp: Checkpoint, m: Manifest | None) -> None:
    """Check that ``cp`` was taken after window ``m``, the stored window ending at its
    offset (None: no stored window ends there): :class:`GapError` when there is none,
    :class:`IntegrityError` when ``cp`` (version 2) records another manifest digest."""
    if m is None or m.last_offset != cp.offset:
        raise GapError(f"checkpoint {cp.key} is not at the end of a stored window of {cp.volume}")
    paired = {i.digest for i in m.identities() if i.last_offset == cp.offset}
    if cp.window_digest is not None and cp.window_digest not in paired:
        raise IntegrityError(
            f"{cp.key}: was taken after a window whose manifest differs from {m.key} "
            "(the manifest was altered or replaced)"
        )


def _image_digest(cp_chunks: Iterable[tuple[str | None, int]]) -> str:
    h = hashlib.sha256()
    zero_digests: dict[int, bytes] = {}
    for digest, length in cp_chunks:
        if digest is None:
            if length not in zero_digests:
                zero_digests[length] = hashlib.sha256(bytes(length)).digest()
            h.update(zero_digests[length])
        else:
            h.update(bytes.fromhex(digest))
    return h.hexdigest()


def write_checkpoint(
    store: ObjectStore,
    image: Image,
    *,
    volume: str,
    offset: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    previous: Checkpoint | None = None,
    dirty: Iterable[tuple[int, int]] | None = None,
    created_us: int | None = None,
    window_digest: str,
) -> Checkpoint:
    """Store a checkpoint of ``image`` (the volume after point ``offset``, the end of the
    window whose manifest has canonical digest ``window_digest``) and return it.

    Uploads the chunk objects first (only those not stored within the last
    :data:`CHUNK_REFRESH_US`: an older stored chunk is written again, so a prune never
    deletes a chunk this checkpoint takes; docs/FORMAT.md "Retention"), then the checkpoint
    JSON. With ``previous`` (same volume size and chunk size) and ``dirty`` (the ranges
    changed since it), only chunks overlapping ``dirty`` are read and hashed again.
    """
    size = image.size
    n = -(-size // chunk_size)
    names = chunk_names_of(store)
    reuse = (
        previous is not None
        and dirty is not None
        and previous.volume_size == size
        and previous.chunk_size == chunk_size
        and previous.chunk_names == names  # after a key rotation every chunk is named anew
    )
    changed = union_ranges(dirty or [])
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    zeros = bytes(chunk_size)
    chunks: list[str | None] = []
    sizes: list[int] = []
    for i in range(n):
        start = i * chunk_size
        end = min(start + chunk_size, size)
        if reuse and previous is not None and not intersects(changed, start, end):
            chunks.append(previous.chunks[i])
            sizes.append(previous.chunk_sizes[i])
            continue
        data = image.pread(start, end - start)
        if data == zeros[: end - start]:
            chunks.append(None)
            sizes.append(0)
            continue
        digest = chunk_name(store, data, names)
        key = keys.chunk_key(digest)
        try:
            info = store.stat(key)
            fresh = time.time_ns() // 1000 - info.modified_us < CHUNK_REFRESH_US
        except ObjectNotFoundError:
            fresh = False
        if fresh:
            stored = info.size
        else:  # missing, or stored long ago: it may be a deletion candidate, write it again
            blob = cctx.compress(data)
            store.put(key, blob)
            stored = len(blob)
        chunks.append(digest)
        sizes.append(stored)
    cp = Checkpoint(
        volume=volume,
        offset=offset,
        volume_size=size,
        chunk_size=chunk_size,
        chunks=tuple(chunks),
        chunk_sizes=tuple(sizes),
        image_sha256=_image_digest(
            (c, min((i + 1) * chunk_size, size) - i * chunk_size) for i, c in enumerate(chunks)
        ),
        created_us=time.time_ns() // 1000 if created_us is None else created_us,
        window_digest=window_digest,
        version=VERSION if names == SHA256_NAMES else KEYED_VERSION,
        chunk_names=names,
    )
    store.put(cp.key, cp.to_json())
    return cp


def list_checkpoints(store: ObjectStore, volume: str) -> list[int]:
    """Offsets of the stored checkpoints of ``volume``, ascending."""
    out: list[int] = []
    for info in store.list(keys.checkpoints_prefix(volume)):
        try:
            out.append(keys.parse_offset_key(info.key))
        except ValueError:
            continue
    return sorted(out)


def load_checkpoint(store: ObjectStore, volume: str, offset: int) -> Checkpoint:
    """Fetch and parse a checkpoint; :class:`GapError` if missing, IntegrityError if bad."""
    key = keys.checkpoint_key(volume, offset)
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        raise GapError(f"checkpoint {key} is missing") from None
    cp = Checkpoint.from_json(data, name=key)
    if cp.volume != volume or cp.offset != offset:
        raise IntegrityError(f"{key}: holds the checkpoint of {cp.volume}@{cp.offset}")
    if (
        _image_digest(
            (c, cp.chunk_range(i)[1] - cp.chunk_range(i)[0]) for i, c in enumerate(cp.chunks)
        )
        != cp.image_sha256
    ):
        raise IntegrityError(f"{key}: image_sha256 does not match its chunk list")
    return cp


def fetch_chunk(store: ObjectStore, digest: str, length: int, names: str = SHA256_NAMES) -> bytes:
    """Download, decompress and verify one chunk of ``length`` raw bytes named ``digest``
    under ``names`` (its checkpoint's ``chunk_names``)."""
    key = keys.chunk_key(digest)
    try:
        blob = store.get(key)
    except ObjectNotFoundError:
        raise GapError(f"checkpoint chunk {key} is missing") from None
    try:
        data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=length)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"checkpoint chunk {key}: does not decompress ({exc})") from None
    if len(data) != length or chunk_name(store, data, names) != digest:
        raise IntegrityError(f"checkpoint chunk {key}: content does not match its digest")
    return data


def materialize_checkpoint(
    store: ObjectStore, cp: Checkpoint, image: Image, *, workers: int = 4, fresh: bool = False
) -> None:
    """Write checkpoint ``cp`` into ``image``: chunks fetched, decompressed and verified
    in parallel (``workers`` threads; zstd and SHA-256 release the GIL).

    Zero chunks become holes. With ``fresh`` the caller promises the image reads as zeros
    everywhere (a newly created sparse file): zero chunks and the all-zero 4 KiB blocks
    inside chunks are then not written at all (they stay holes). Every chunk is verified
    either way. Raises :class:`GapError` / :class:`IntegrityError` naming the chunk that
    is missing or corrupt.
    """
    if image.size != cp.volume_size:
        raise IntegrityError(
            f"{cp.key}: volume size {cp.volume_size} differs from the image's {image.size}"
        )

    def one(i: int) -> None:
        start, end = cp.chunk_range(i)
        digest = cp.chunks[i]
        if digest is None:
            if not fresh:
                image.zero(start, end - start)
            return
        data = fetch_chunk(store, digest, end - start, cp.chunk_names)
        if fresh:
            image.write_nonzero(start, data)
        else:
            image.pwrite(start, data)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(one, range(len(cp.chunks))):
            pass
