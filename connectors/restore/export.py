"""A restore point served straight from the object store: :class:`PointExport`.

:func:`open_point` plans the point as a restore would (the forward path preferred: it is
what an extent map is made of; the planner's choice otherwise) and builds its
:class:`~connectors.restore.extent_map.ExtentMap` (an object found bad while it is built
is avoided by one more plan, as a restore does). :meth:`PointExport.read` resolves each
read through the map and fetches whole objects through a bounded LRU cache
(:class:`ObjectCache`); every object is verified as a restore verifies it before a byte
of it is served (chunk digests; increment digest, CRCs, counts, window ranges digest). A
missing or corrupt object fails the read with :class:`ExportReadError` naming it — never
wrong bytes. With an :class:`Overlay` (``--writable``) writes go to a local sparse file
and a bitmap of written blocks; the store is never written.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from connectors.errors import (
    ExportReadError,
    GapError,
    IntegrityError,
    KcdpError,
    NotRestorableError,
    VolumeError,
)
from connectors.fsutil import pwrite_all
from connectors.restore.catalog import Catalog
from connectors.restore.export_server import DEFAULT_CACHE_MIB
from connectors.restore.extent_map import (
    CHUNK,
    EXTENT,
    LITERAL,
    ExtentMap,
    Source,
    build_map,
    step_extents,
)
from connectors.restore.materialize import BadObjectError
from connectors.restore.plan import Plan
from connectors.restore.planner import plan_restore
from connectors.store.base import ObjectStore
from schemas.checkpoint import fetch_chunk
from schemas.extents import Extent

log = logging.getLogger("kcdp.export")

#: the overlay's block size: a partial write first copies its block from the store
OVERLAY_BLOCK = 4096
ZERO_PIECE = 1 << 20


class ObjectCache:
    """A thread-safe LRU of verified objects, bounded by ``limit`` (sum of their sizes).

    An object larger than the bound is used for the reads waiting for it, not kept.
    :meth:`fetch` loads a missing object once however many reads ask for it at the same
    time (an NBD client reading sequentially has many requests in one chunk in flight).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._loading: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            return self._hit(key)

    def fetch(self, key: str, load: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value of ``key``, else ``load()``'s (value, size), run by one caller
        while the others wait for it; its exception reaches every waiting caller and
        nothing is cached."""
        with self._lock:
            value = self._hit(key)
            if value is not None:
                return value
            pending = self._loading.get(key)
            owner = pending is None
            if pending is None:
                pending = self._loading[key] = Future()
        if not owner:
            return pending.result()
        try:
            value, nbytes = load()
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._keep(key, value, nbytes)
        pending.set_result(value)
        return value

    def put(self, key: str, value: Any, nbytes: int) -> None:
        with self._lock:
            self._keep(key, value, nbytes)

    def _hit(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def _keep(self, key: str, value: Any, nbytes: int) -> None:
        if nbytes > self.limit:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old[1]
        self._items[key] = (value, nbytes)
        self.used += nbytes
        while self.used > self.limit:
            _, (_, n) = self._items.popitem(last=False)
            self.used -= n


def plan_export(
    catalog: Catalog, offset: int, *, avoid: frozenset[str] | set[str] = frozenset()
) -> Plan:
    """The restore plan of point ``offset`` an export serves: forward if it can be
    (backward otherwise), reading no object in ``avoid``."""
    try:
        return plan_restore(catalog, offset, direction="forward", avoid=avoid)
    except (NotRestorableError, GapError, IntegrityError):
        return plan_restore(catalog, offset, avoid=avoid)


class PointExport:
    """Point ``plan.offset`` of ``plan.volume``, readable by byte range."""

    def __init__(self, store: ObjectStore, plan: Plan, emap: ExtentMap, cache: ObjectCache) -> None:
        self.store, self.plan, self.map, self.cache = store, plan, emap, cache
        self.size = plan.volume_size

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; :class:`ExportReadError` names a bad object."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ExportReadError(f"read [{offset}, {offset + length}) outside the volume")
        out = bytearray(length)
        for start, end, src in self.map.lookup(offset, length):
            at = start - offset
            if src.kind == LITERAL:
                assert src.data is not None
                view = memoryview(src.data)
                out[at : at + end - start] = view[start - src.origin : end - src.origin]
            elif src.kind == CHUNK:
                chunk = memoryview(self._object(src))
                out[at : at + end - start] = chunk[start - src.origin : end - src.origin]
            elif src.kind == EXTENT:
                extents: list[Extent] = self._object(src)
                data = extents[src.index].data
                if data is None or extents[src.index].offset != src.origin:
                    raise ExportReadError(f"{src.key}: extent {src.index} changed since opening")
                view = memoryview(data)
                out[at : at + end - start] = view[start - src.origin : end - src.origin]
        return bytes(out)

    def _object(self, src: Source) -> Any:
        """The verified object serving ``src`` (a chunk's bytes, an increment's extents)."""
        return self.cache.fetch(src.object_key, lambda: self._load(src))

    def _load(self, src: Source) -> tuple[Any, int]:
        try:
            if src.kind == CHUNK:
                return self._chunk(src.key, src.length)
            return self._increment(src.object_key)
        except (GapError, IntegrityError) as exc:
            raise ExportReadError(exc.message) from None

    def _chunk(self, digest: str, length: int) -> tuple[bytes, int]:
        data = fetch_chunk(self.store, digest, length, self.map.chunk_names)
        return data, len(data)

    def _increment(self, key: str) -> tuple[list[Extent], int]:
        extents = step_extents(self.store, self.map.steps[key], self.map.direction)
        return extents, sum(e.length for e in extents if e.data is not None)


def open_point(
    store: ObjectStore, volume: str, offset: int, *, cache_mib: int = DEFAULT_CACHE_MIB
) -> PointExport:
    """Plan point ``offset`` of ``volume`` and build its map; raises what a restore's
    planning raises (NotRestorableError, GapError, IntegrityError naming the object)."""
    catalog = Catalog(store, volume)
    plan = plan_export(catalog, offset)
    cache = ObjectCache(cache_mib << 20)
    try:
        emap = build_map(store, catalog, plan, keep=cache.put)
    except BadObjectError as bad:  # as a restore does: one more path, around the object
        try:
            plan = plan_export(catalog, offset, avoid={bad.key})
        except KcdpError:
            raise bad.error from None
        log.warning(
            "%s; exporting the %s path, which avoids it", bad.error.message, plan.path.direction
        )
        try:
            emap = build_map(store, catalog, plan, keep=cache.put)
        except BadObjectError as again:
            raise again.error from None
    return PointExport(store, plan, emap, cache)


class Overlay:
    """Copy-on-write blocks over a :class:`PointExport`: a sparse file at ``path`` and a
    bitmap of written blocks at ``path.bitmap`` (one bit per :data:`OVERLAY_BLOCK`).

    A reopened overlay of the same size keeps what was written to it.
    """

    def __init__(self, base: PointExport, path: str | os.PathLike[str]) -> None:
        self.base, self.size = base, base.size
        self.path = Path(path)
        self.bitmap_path = self.path.with_name(self.path.name + ".bitmap")
        nblocks = -(-self.size // OVERLAY_BLOCK)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, self.size)
        try:
            bits = self.bitmap_path.read_bytes()
        except FileNotFoundError:
            bits = b""
        self.bits = bytearray(bits if len(bits) == -(-nblocks // 8) else bytes(-(-nblocks // 8)))
        self._lock = threading.Lock()

    def _dirty(self, block: int) -> bool:
        return bool(self.bits[block >> 3] & (1 << (block & 7)))

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            block = pos // OVERLAY_BLOCK
            dirty = self._dirty(block)
            stop = pos
            while stop < end and self._dirty(stop // OVERLAY_BLOCK) == dirty:
                stop = min(end, (stop // OVERLAY_BLOCK + 1) * OVERLAY_BLOCK)
            if dirty:
                out += os.pread(self._fd, stop - pos, pos)
            else:
                out += self.base.read(pos, stop - pos)
            pos = stop
        return bytes(out)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``; a partly written clean block is copied in first."""
        end = offset + len(data)
        if offset < 0 or end > self.size:
            raise VolumeError(f"write [{offset}, {end}) outside the volume")
        with self._lock:
            first, last = offset // OVERLAY_BLOCK, (end - 1) // OVERLAY_BLOCK
            for block in {first, last}:
                lo = block * OVERLAY_BLOCK
                hi = min(lo + OVERLAY_BLOCK, self.size)
                if not self._dirty(block) and (offset > lo or end < hi):
                    pwrite_all(self._fd, self.base.read(lo, hi - lo), lo)
            pwrite_all(self._fd, data, offset)
            for block in range(first, last + 1):
                self.bits[block >> 3] |= 1 << (block & 7)

    def zero(self, offset: int, length: int) -> None:
        """Write ``length`` zeros at ``offset``, 1 MiB at a time (a request may span it all)."""
        piece = bytes(min(length, ZERO_PIECE))
        pos, end = offset, offset + length
        while pos < end:
            n = min(end - pos, len(piece))
            self.write(pos, memoryview(piece)[:n])
            pos += n

    def flush(self) -> None:
        with self._lock:
            os.fsync(self._fd)
            tmp = self.bitmap_path.with_name(self.bitmap_path.name + ".tmp")
            tmp.write_bytes(self.bits)
            os.replace(tmp, self.bitmap_path)

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
