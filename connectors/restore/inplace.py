"""Move an image in place (``kcdp restore --in-place IMAGE``): a standby replica or an
earlier restore output, at the point its applied state records, is rolled back or forward
to another point with the increments and the write log of the windows in between
(:mod:`connectors.restore.inplace_plan`), writing only ranges they name whose bytes differ.

Contract of :func:`move_in_place`:

* the image is checked before anything is written, its state included: the applied
  state exists, belongs to the volume, and the image holds the volume's size
  (:class:`UsageError` otherwise); the state is complete, or records a move to the same
  target whose plan is unchanged (:class:`UsageError` for another target,
  :class:`NotRestorableError` when the store changed under the move); on a fresh move its
  bytes over the source window's ranges match the store (:class:`IntegrityError`; image
  and state are then left as they were);
* before the first write the state is marked incomplete (``move``: source, target, plan
  digest; written atomically and fsynced); after the last, the image is fsynced and the
  final state (complete, at the target) written the same way. A crash in between leaves
  the state incomplete, never looking complete.

**Why resuming is safe.** Every step of a move is an overwrite with bytes of its own: an
increment extent writes its stored bytes (or zeros), a replayed record its data (or
zeros); none reads the image. So the move is a fixed sequence of overwrites W1..Wn of
ranges R1..Rn, and applied in full to *any* image Y it yields: on every byte of the union U
of R1..Rn, the last writer's byte; elsewhere, Y's byte. A killed run wrote only inside U
(any prefix, the last step partly), so outside U the mixture still holds the source
image's bytes; re-running the full same move (same source, same plan digest) therefore
ends exactly where the uninterrupted move would have. Skipping writes of equal bytes does
not change this. Checks that assume the image holds the source point (the source check
and the checks before each rollback) are skipped on a resumed run; the checks after each
forward increment and after the last rollback hold on any mixture and still run.
"""

from __future__ import annotations

import hashlib
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from connectors.errors import IntegrityError, UsageError
from connectors.restore.catalog import Catalog
from connectors.restore.inplace_objects import MoveObjects, reads
from connectors.restore.inplace_plan import MovePlan, Op, plan_for
from connectors.store.base import ObjectStore
from schemas.applied_state import AppliedState, Move, load_state, save_state, state_path
from schemas.extents import Extent
from schemas.image import Image
from schemas.writelog import ForwardBytes, LogRecord, apply_records, needs_forward

Hook = Callable[[], None]


@dataclass(frozen=True, slots=True)
class MoveResult:
    """What a move did: the plan, whether it resumed a killed one, bytes rewritten."""

    plan: MovePlan
    output: Path
    resumed: bool
    ranges_written: int
    bytes_written: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "move": self.plan.to_dict(),
            "output": str(self.output),
            "resumed": self.resumed,
            "ranges_written": self.ranges_written,
            "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 3),
        }


def image_state(image: str | Path, catalog: Catalog) -> AppliedState:
    """The applied state of ``image``, checked against ``catalog``'s volume, partition and
    size (:class:`UsageError`; a damaged state: :class:`IntegrityError`)."""
    path = Path(image)
    state = load_state(path)
    if state is None:
        raise UsageError(
            f"{path} has no applied state ({state_path(path)}): only a kcdp replica or a "
            "kcdp restore output can be moved in place"
        )
    if state.volume != catalog.volume:
        raise UsageError(
            f"{state_path(path)} belongs to volume {state.volume!r}, not {catalog.volume!r}"
        )
    catalog.require_windows()
    newest = catalog.manifest(len(catalog) - 1)
    if (state.topic, state.partition) != (newest.topic, newest.partition):
        raise UsageError(
            f"{state_path(path)} follows {state.topic}/{state.partition}; volume "
            f"{catalog.volume} is stored from {newest.topic}/{newest.partition}"
        )
    size = newest.volume_size
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{state_path(path)} names an image {path} that is missing") from None
    if not stat.S_ISBLK(st.st_mode) and st.st_size != size:
        raise UsageError(f"image {path} holds {st.st_size} bytes; volume {state.volume} {size}")
    return state


def move_in_place(
    store: ObjectStore,
    catalog: Catalog,
    image: str | Path,
    target: int,
    *,
    plan: MovePlan | None = None,
    step: Hook | None = None,
) -> MoveResult:
    """Move ``image`` to point ``target`` (see the module docstring); ``step`` is called
    before each range write (tests kill the process there)."""
    started = time.monotonic()
    path = Path(image)
    state = image_state(path, catalog)
    plan = plan or plan_for(catalog, state, target)
    resumed = state.move is not None
    img = _Writer(path, plan.volume_size, step)
    objects = MoveObjects(store, reads(plan, resumed))
    try:
        if not resumed:
            _verify_source(objects, img, plan)
        if plan.ops:
            move = Move(plan.source, plan.target, plan.digest)
            save_state(path, replace(state, applied_offset=plan.source, move=move))
        sequence = _run(objects, img, plan, resumed)
        img.sync()
    finally:
        objects.close()
        img.close()
    final = replace(state, applied_offset=target, session=plan.session, move=None)
    save_state(path, replace(final, sequence=plan.sequence if sequence < 0 else sequence))
    seconds = time.monotonic() - started
    return MoveResult(plan, path, resumed, img.ranges, img.written, seconds)


def _verify_source(store: MoveObjects, img: Image, plan: MovePlan) -> None:
    """Check the image at the move's source before anything is written (``plan.check``,
    or the first rollback's check)."""
    if plan.check is not None:
        _check(store, img, plan.check, plan.volume)
        return
    if not plan.ops or not plan.ops[0].precheck:
        return
    op = plan.ops[0]
    extents = store.increment(op.ref, op.kind, op)
    if _digest(img, extents) != op.ranges_sha256:
        raise IntegrityError(
            f"the image does not hold the end of window {op.first}-{op.last} of "
            f"{plan.volume} over its ranges: it is not at the point its applied state records"
        )


def _run(store: MoveObjects, img: _Writer, plan: MovePlan, resumed: bool) -> int:
    """Apply the ops in order with their checks; the sequence of the last replayed record
    (-1 without a replay)."""
    sequence = -1
    final = plan.final
    for op in plan.ops:
        if op.kind == "replay":  # always last: after the final check
            if final is not None:
                _check(store, img, final, plan.volume)
                final = None
            sequence = _replay(store, img, op)
            continue
        extents = store.increment(op.ref, op.kind, op)
        where = f"window {op.first}-{op.last} of {plan.volume}"
        current = None  # the image's bytes over the extents, read once for check and write
        if op.precheck and not resumed:
            current = [img.pread(e.offset, e.length) for e in extents]
            if _sha256(current) != op.ranges_sha256:
                raise IntegrityError(
                    f"before rolling back {where} the image does not hold its end state: it "
                    "is not at the point its applied state records, or a stored object is wrong"
                )
        img.apply(extents, current)
        if op.kind == "forward" and _digest(img, extents) != op.ranges_sha256:
            raise IntegrityError(f"{op.ref.key}: {where} does not match its recorded digest")
    if final is not None:
        _check(store, img, final, plan.volume)
    return sequence


def _check(store: MoveObjects, img: Image, op: Op, volume: str) -> None:
    """The image over ``op``'s window's ranges must hold what ``op`` says (an edge's
    ``ranges_sha256``, or edge ``first-1`` with the log replayed up to ``upto``)."""
    if op.log is None:
        extents = store.increment(op.ref, "forward", op)
        if _digest(img, extents) != op.ranges_sha256:
            raise IntegrityError(
                f"the image does not hold the end of window {op.first}-{op.last} of {volume} "
                "over its ranges: it is not at the point its applied state records"
            )
        return
    before = store.increment(op.ref, "backward", op)
    want = _Overlay(before)
    records = store.log(op.log, op)
    fwd = _forward(store, op, records)
    apply_records(want, records, upto_offset=op.upto, forward=fwd, name=op.log.key)  # type: ignore[arg-type]
    if want.digest() != _digest(img, before):
        raise IntegrityError(
            f"the image does not hold point {op.upto} of {volume} over the ranges of window "
            f"{op.first}-{op.last}: it is not at the point its applied state records"
        )


def _replay(store: MoveObjects, img: Image, op: Op) -> int:
    records = store.log(op.ref, op)
    fwd = _forward(store, op, records)
    apply_records(img, records, upto_offset=op.upto, forward=fwd, name=op.ref.key)
    return max((r.sequence for r in records if r.kafka_offset <= op.upto), default=-1)


def _forward(store: MoveObjects, op: Op, records: list[LogRecord]) -> ForwardBytes | None:
    if op.forward is None or not needs_forward(records, upto_offset=op.upto):
        return None
    return ForwardBytes(store.increment(op.forward, "forward", op), name=op.forward.key)


def _digest(img: Image, extents: Iterable[Extent]) -> str:
    return _sha256(img.pread(ext.offset, ext.length) for ext in extents)


def _sha256(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


class _Overlay:
    """In memory: the bytes of one window's ranges (from its backward increment), onto
    which log records are replayed (the ``pwrite``/``zero`` an :func:`apply_records` uses)."""

    def __init__(self, extents: list[Extent]) -> None:
        self.extents = extents
        self.parts = [bytearray(e.data if e.data is not None else bytes(e.length)) for e in extents]

    def _each(self, offset: int, length: int) -> Iterable[tuple[bytearray, int, int, int]]:
        for ext, part in zip(self.extents, self.parts, strict=True):
            lo, hi = max(offset, ext.offset), min(offset + length, ext.offset + ext.length)
            if lo < hi:
                yield part, lo - ext.offset, lo - offset, hi - lo

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        for part, at, src, n in self._each(offset, len(data)):
            part[at : at + n] = data[src : src + n]

    def zero(self, offset: int, length: int) -> None:
        for part, at, _, n in self._each(offset, length):
            part[at : at + n] = bytes(n)

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in self.parts:
            h.update(part)
        return h.hexdigest()


class _Writer(Image):
    """The image being moved: writes only ranges whose bytes differ, counts them, and
    calls ``step`` before each write."""

    def __init__(self, path: Path, size: int, step: Hook | None) -> None:
        super().__init__(path, size, create=False)
        self.step = step
        self.ranges = 0
        self.written = 0

    def _will_write(self, length: int) -> None:
        if self.step is not None:
            self.step()
        self.ranges += 1
        self.written += length

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        if self.pread(offset, len(data)) != data:
            self._will_write(len(data))
            super().pwrite(offset, data)

    def zero(self, offset: int, length: int) -> None:
        if self.pread(offset, length) != bytes(length):
            self._will_write(length)
            super().zero(offset, length)

    def apply(self, extents: Iterable[Extent], current: Sequence[bytes] | None = None) -> None:
        """Write each extent where it differs from the image (``current``: the image's
        bytes over the extents, already read)."""
        for i, (offset, length, data) in enumerate(extents):
            have = self.pread(offset, length) if current is None else current[i]
            if have != (bytes(length) if data is None else data):
                self._will_write(length)
                if data is None:
                    Image.zero(self, offset, length)
                else:
                    Image.pwrite(self, offset, data)
