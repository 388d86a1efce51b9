"""Run a restore plan into a sparse file or a block device.

Objects are downloaded by a thread pool (``workers``, default 4) a few ahead of the one
being applied, each checked against its manifest digest (size + SHA-256) and its extents'
CRC-32C before it is applied in plan order. At every window boundary the image is checked
against the window's recorded ``ranges_sha256``: after a forward increment is applied, and
before a backward increment is applied (the image must then hold the window's end state);
after the last backward increment, the image over the edge window's ranges (from its
forward increment, ``Path.final``) must match that window's ``ranges_sha256``. The
checkpoint read to start from must be the one planned (its canonical digest).
Single writes come from Kafka while the broker still retains the window's offsets (when a
:class:`~connectors.restore.kafka_source.KafkaReplay` is given), else from the archived
write log; when a log record up to the point is ``in_forward`` (its bytes live only in the
window's forward increment), that increment is fetched and verified too, and each such
record's bytes are checked against its CRC-32C.

A file output is written to a new sparse temporary file beside it and renamed at the end,
so a failed restore leaves no half-written output (the checkpoint's all-zero 4 KiB blocks
are not written: they stay holes); its applied state (``<output>.kcdp-replica.json``,
the point it holds) is removed before the rename and written after it. A block device is
written in place (and zeroed first when the path starts from the empty image). With
``direction="auto"`` a corrupt or missing object makes :func:`restore_point` re-plan around
it once (the other direction, when that avoids the object); otherwise the error names the
object.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from connectors.errors import (
    GapError,
    IntegrityError,
    KcdpError,
    NotRestorableError,
    VolumeError,
)
from connectors.fsutil import fsync_dir
from connectors.restore.catalog import Catalog
from connectors.restore.kafka_source import KafkaReplay
from connectors.restore.plan import Plan, Step
from connectors.restore.planner import plan_restore
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.applied_state import AppliedState, remove_state, save_state
from schemas.checkpoint import materialize_checkpoint
from schemas.extents import Extent
from schemas.image import Image
from schemas.increment import read_increment
from schemas.manifest import ObjectRef, get_verified
from schemas.writelog import ForwardBytes, LogRecord, apply_records, needs_forward, read_log

log = logging.getLogger("kcdp.restore")


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did: the plan it ran, where, and how."""

    plan: Plan
    output: Path
    replay_source: str
    seconds: float
    retried_after: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            **self.plan.to_dict(),
            "output": str(self.output),
            "replay_source": self.replay_source,
            "seconds": round(self.seconds, 3),
            "retried_after": self.retried_after,
        }


class BadObjectError(Exception):
    """Internal control flow, not part of the error hierarchy: ``error`` was raised while
    reading ``key``; :func:`restore_point` re-plans around it or re-raises ``error``."""

    def __init__(self, key: str, error: KcdpError) -> None:
        super().__init__(error.message)
        self.key = key
        self.error = error


class Progress:
    """A one-line progress bar on ``stream`` (stderr), drawn only when it is a terminal."""

    def __init__(self, total: int, *, stream: TextIO | None = None, label: str = "") -> None:
        self.stream = stream or sys.stderr
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}%")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def restore_point(
    store: ObjectStore,
    catalog: Catalog,
    offset: int,
    output: str | Path,
    *,
    direction: str = "auto",
    workers: int = 4,
    kafka: KafkaReplay | None = None,
    progress: bool = True,
) -> RestoreResult:
    """Plan and materialize point ``offset`` of ``catalog.volume`` into ``output``.

    With ``kafka``, points after the newest stored window are reached by replaying the
    topic from its end (see :func:`~connectors.restore.planner.plan_restore`'s ``tail``).
    """
    started = time.monotonic()
    tail = kafka is not None
    plan = plan_restore(catalog, offset, direction=direction, tail=tail)
    try:
        source = execute(
            store, catalog, plan, output, workers=workers, kafka=kafka, progress=progress
        )
        return RestoreResult(plan, Path(output), source, time.monotonic() - started)
    except BadObjectError as bad:
        if direction != "auto":
            raise bad.error from None
        try:
            plan = plan_restore(catalog, offset, direction="auto", avoid={bad.key}, tail=tail)
        except KcdpError:
            raise bad.error from None
        retried = bad.key
        log.warning(
            "%s; retrying with the %s path, which avoids it", bad.error.message, plan.path.direction
        )
    try:
        source = execute(
            store, catalog, plan, output, workers=workers, kafka=kafka, progress=progress
        )
    except BadObjectError as again:
        raise again.error from None
    return RestoreResult(plan, Path(output), source, time.monotonic() - started, retried)


def execute(
    store: ObjectStore,
    catalog: Catalog,
    plan: Plan,
    output: str | Path,
    *,
    workers: int = 4,
    kafka: KafkaReplay | None = None,
    progress: bool = True,
) -> str:
    """Materialize ``plan`` into ``output``; returns the replay source (log, kafka, none).

    Raises :class:`BadObjectError` wrapping the IntegrityError/GapError of the object at fault.
    """
    output = Path(output)
    if output.is_dir():
        raise VolumeError(f"output {output} is a directory; give a file or block device path")
    if not output.parent.is_dir():
        raise VolumeError(f"output directory {output.parent} does not exist")
    is_block = output.exists() and stat.S_ISBLK(output.stat().st_mode)
    target = output if is_block else output.with_name(f".{output.name}.kcdp-restore-{os.getpid()}")
    if is_block:
        log.warning("%s is a block device: restoring in place", output)
    label = f"restore {plan.volume}@{plan.offset}"
    bar = Progress(plan.path.bytes, label=label) if progress else None
    ok = False
    if not is_block:  # a leftover of a killed restore: start from a new, all-zero file
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
    try:
        with Image(target, plan.volume_size) as image:
            _start(store, catalog, plan, image, is_block, workers)
            if bar:
                bar.advance(plan.path.checkpoint_bytes)
            _apply_steps(store, plan, image, workers, bar)
            _check_final(store, plan, image)
            source = _replay(store, plan, image, kafka)
            if bar and plan.path.replay:
                bar.advance(plan.path.replay.bytes)
            image.sync()
        if not is_block:
            state = point_state(catalog, plan)  # may still refuse: before the rename
            remove_state(output)  # never an image beside a state naming another point
            os.replace(target, output)
            fsync_dir(output.parent)
            save_state(output, state)
        ok = True
        return source
    finally:
        if bar:
            bar.finish()
        if not ok and not is_block:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()


def point_state(catalog: Catalog, plan: Plan) -> AppliedState:
    """The applied state of an image at ``plan.offset`` (docs/FORMAT.md "Local state
    files"): session and sequence are known at a window's end, else empty / -1."""
    index = catalog.index_for(plan.offset)  # the window holding the point, else the newest
    m = catalog.manifest(len(catalog) - 1 if index is None else index)
    state = AppliedState(plan.volume, m.topic, m.partition, applied_offset=plan.offset)
    if plan.path.replay is None and index is not None and plan.offset >= m.last_offset:
        return AppliedState(
            plan.volume, m.topic, m.partition, plan.offset, m.session, m.last_sequence
        )
    return state


def _start(
    store: ObjectStore, catalog: Catalog, plan: Plan, image: Image, is_block: bool, workers: int
) -> None:
    path = plan.path
    if path.checkpoint is None:
        if is_block:
            image.zero(0, image.size)
        return
    assert path.checkpoint_key is not None
    try:
        cp = catalog.checkpoint(path.checkpoint)
        if cp.digest != path.checkpoint_digest:
            raise IntegrityError(f"{cp.key}: changed since the restore was planned")
        materialize_checkpoint(store, cp, image, workers=workers, fresh=not is_block)
    except (IntegrityError, GapError) as exc:
        raise BadObjectError(path.checkpoint_key, exc) from None


def _fetch(store: ObjectStore, step: Step, direction: str) -> list[Extent]:
    """The verified extents of ``step``'s increment (digest, CRCs, recorded counts)."""
    try:
        return _extents(store, step.ref, direction, step.manifest)
    except (IntegrityError, GapError) as exc:
        raise BadObjectError(step.ref.key, exc) from None


def _extents(store: ObjectStore, ref: ObjectRef, direction: str, manifest: str) -> list[Extent]:
    data = get_verified(store, ref)
    extents = list(read_increment(data, expect_direction=direction, name=ref.key))
    logical = sum(e.length for e in extents)
    ref.check_counts(manifest=manifest, extents=len(extents), logical_bytes=logical)
    return extents


def _prefetched(
    store: ObjectStore, steps: tuple[Step, ...], direction: str, workers: int
) -> Iterator[tuple[Step, list[Extent]]]:
    """Yield (step, extents) in order while up to ``2·workers`` downloads run ahead."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        queue: deque[tuple[Step, Future[list[Extent]]]] = deque()
        todo = iter(steps)
        for step in todo:
            queue.append((step, pool.submit(_fetch, store, step, direction)))
            if len(queue) >= 2 * max(1, workers):
                break
        try:
            while queue:
                step, fut = queue.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    queue.append((nxt, pool.submit(_fetch, store, nxt, direction)))
                yield step, fut.result()
        finally:
            for _, fut in queue:
                fut.cancel()


def _ranges_sha256(image: Image, extents: list[Extent]) -> str:
    h = hashlib.sha256()
    for ext in extents:
        h.update(image.pread(ext.offset, ext.length))
    return h.hexdigest()


def _apply_steps(
    store: ObjectStore, plan: Plan, image: Image, workers: int, bar: Progress | None
) -> None:
    direction = plan.path.direction
    blame = plan.path.checkpoint_key or ""
    for step, extents in _prefetched(store, plan.path.steps, direction, workers):
        window = f"window {step.first}-{step.last} of {plan.volume}"
        if direction == "backward" and _ranges_sha256(image, extents) != step.ranges_sha256:
            raise BadObjectError(
                blame,
                IntegrityError(
                    f"before rolling back {window} the image does not match its recorded "
                    f"digest: {blame or 'the starting image'} holds wrong bytes"
                ),
            )
        image.apply(extents)
        if direction == "forward" and _ranges_sha256(image, extents) != step.ranges_sha256:
            raise BadObjectError(
                step.ref.key,
                IntegrityError(f"{step.ref.key}: {window} does not match its recorded digest"),
            )
        blame = step.ref.key
        if bar:
            bar.advance(step.ref.size)


def _check_final(store: ObjectStore, plan: Plan, image: Image) -> None:
    """After rolling back: the edge window's ranges must hold its recorded end state."""
    final = plan.path.final
    if final is None:
        return
    extents = _fetch(store, final, "forward")
    if _ranges_sha256(image, extents) != final.ranges_sha256:
        blame = plan.path.steps[-1].ref.key if plan.path.steps else plan.path.checkpoint_key
        raise BadObjectError(
            blame or final.ref.key,
            IntegrityError(
                f"after rolling back to window {final.first}-{final.last} of {plan.volume} "
                f"the image does not match its recorded digest: {blame} holds wrong bytes"
            ),
        )


def _replay(store: ObjectStore, plan: Plan, image: Image, kafka: KafkaReplay | None) -> str:
    replay = plan.path.replay
    if replay is None:
        return "none"
    if replay.ref is None:  # the tail after the newest window: only Kafka has it
        records = None
        if kafka is not None:
            records = kafka.records(
                plan.volume, replay.first, replay.upto, continues=replay.first - 1
            )
        if records is None:
            raise NotRestorableError(
                f"offsets {replay.first}..{replay.upto} of {plan.volume} are in no stored "
                "window and cannot be read from Kafka (not retained, not produced yet, or "
                f"the broker is unreachable); the newest stored point is {replay.first - 1}"
            )
        apply_records(image, records, upto_offset=replay.upto)
        return "kafka"
    if kafka is not None:
        records = kafka.records(plan.volume, replay.first, replay.upto)
        if records is not None:
            apply_records(image, records, upto_offset=replay.upto)
            return "kafka"
    ref = replay.ref
    manifest = keys.manifest_key(plan.volume, replay.first, replay.last)
    try:
        data = get_verified(store, ref)
        logged: list[LogRecord] = list(read_log(data, name=ref.key))
        ref.check_counts(manifest=manifest, records=len(logged))
    except (IntegrityError, GapError) as exc:
        raise BadObjectError(ref.key, exc) from None
    forward: ForwardBytes | None = None
    if replay.forward is not None and needs_forward(logged, upto_offset=replay.upto):
        fkey = replay.forward.key
        try:
            extents = _extents(store, replay.forward, "forward", manifest)
            forward = ForwardBytes(extents, name=fkey)
        except (IntegrityError, GapError) as exc:
            raise BadObjectError(fkey, exc) from None
    try:
        apply_records(image, logged, upto_offset=replay.upto, forward=forward, name=ref.key)
    except IntegrityError as exc:
        raise BadObjectError(ref.key, exc) from None
    return "log"
