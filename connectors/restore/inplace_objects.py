"""The objects of an in-place move (:mod:`connectors.restore.inplace`): what it reads, in
order (:func:`reads`), and :class:`MoveObjects`, which reads, verifies (size, SHA-256,
CRC-32C, recorded counts) and decodes each once, a few objects ahead of the step that
asks for it, in one thread (file reads, SHA-256 and zstd release the GIL while the move
checks and writes the image).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from connectors.restore.inplace_plan import MovePlan, Op
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.extents import Extent
from schemas.increment import read_increment
from schemas.manifest import ObjectRef, get_verified
from schemas.writelog import LogRecord, read_log

#: Objects read ahead of the step that needs them.
AHEAD = 4

Read = tuple[ObjectRef, str, Op]


def _load(store: ObjectStore, ref: ObjectRef, kind: str, op: Op) -> list[Any]:
    """Object ``ref`` read and verified (size, SHA-256, CRCs, recorded counts) and decoded:
    a write log's records (``kind`` log) or the extents of a ``kind`` increment."""
    data = get_verified(store, ref)
    manifest = keys.manifest_key(op.volume, op.first, op.last)
    if kind == "log":
        records = list(read_log(data, name=ref.key))
        ref.check_counts(manifest=manifest, records=len(records))
        return records
    extents = list(read_increment(data, expect_direction=kind, name=ref.key))
    logical = sum(e.length for e in extents)
    ref.check_counts(manifest=manifest, extents=len(extents), logical_bytes=logical)
    return extents


def reads(plan: MovePlan, resumed: bool) -> list[Read]:
    """What the move reads (object, kind, op), in the order it reads them: the source
    check (not when ``resumed``), the ops (the final check before a replay), the final
    check; a forward increment a replay may need is listed after its log."""
    out: list[Read] = []

    def check(op: Op) -> None:
        if op.log is None:
            out.append((op.ref, "forward", op))
            return
        out.extend([(op.ref, "backward", op), (op.log, "log", op)])
        if op.forward is not None:
            out.append((op.forward, "forward", op))

    if plan.check is not None and not resumed:
        check(plan.check)
    elif plan.ops and plan.ops[0].precheck and not resumed:
        out.append((plan.ops[0].ref, plan.ops[0].kind, plan.ops[0]))
    final = plan.final
    for op in plan.ops:
        if op.kind != "replay":
            out.append((op.ref, op.kind, op))
            continue
        if final is not None:
            check(final)
            final = None
        out.append((op.ref, "log", op))
        if op.forward is not None:
            out.append((op.forward, "forward", op))
    if final is not None:
        check(final)
    return out


class MoveObjects:
    """The move's objects (``reads``, in order), each read, verified and decoded once, by
    one thread up to :data:`AHEAD` objects ahead of the step asking for it; an object a
    later step reads again (a source check and its step) is kept until that step. An
    object asked for out of order is read then; a failure is raised to the step that
    asks (one never asked for is never raised)."""

    def __init__(self, store: ObjectStore, reads: Sequence[Read]) -> None:
        self.store = store
        self.uses = Counter((ref.key, kind) for ref, kind, _ in reads)
        self.todo: deque[Read] = deque()
        seen: set[tuple[str, str]] = set()
        for read in reads:
            if (read[0].key, read[1]) not in seen:
                seen.add((read[0].key, read[1]))
                self.todo.append(read)
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.ahead: dict[tuple[str, str], Future[list[Any]]] = {}
        self.kept: dict[tuple[str, str], list[Any]] = {}
        self._fill()

    def _fill(self) -> None:
        while self.todo and len(self.ahead) < AHEAD:
            ref, kind, op = self.todo.popleft()
            key = (ref.key, kind)
            if key not in self.kept:
                self.ahead[key] = self.pool.submit(_load, self.store, ref, kind, op)

    def _get(self, ref: ObjectRef, kind: str, op: Op) -> list[Any]:
        key = (ref.key, kind)
        if key in self.kept:
            value = self.kept.pop(key)
        elif key in self.ahead:
            value = self.ahead.pop(key).result()
        else:
            value = _load(self.store, ref, kind, op)
        self.uses[key] -= 1
        if self.uses[key] > 0:
            self.kept[key] = value
        self._fill()
        return value

    def increment(self, ref: ObjectRef, direction: str, op: Op) -> list[Extent]:
        """The verified extents of increment ``ref`` (``direction``) of ``op``'s window."""
        return self._get(ref, direction, op)

    def log(self, ref: ObjectRef, op: Op) -> list[LogRecord]:
        """The verified records of write log ``ref`` of ``op``'s window."""
        return self._get(ref, "log", op)

    def close(self) -> None:
        """Stop reading ahead (objects not yet read are not)."""
        for fut in self.ahead.values():
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
