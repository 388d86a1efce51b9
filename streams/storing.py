"""Storing a cut window: its objects, its manifest, the volume's image, a due checkpoint.

:func:`write_window` is the one implementation, called with everything it needs as values
(:class:`WindowCut`, :class:`WindowJob`), so it runs the same inline, on a background
thread, or in a child process (:class:`WindowStorers`). It writes, in this order
(docs/FORMAT.md "Ordering invariants"), once the head shows that no other agent stored a
window of the volume from this one's first offset on (checked again before the manifest):
forward increment, backward increment and write log (in parallel), then the manifest once
all three are durable (chained to the previous stored manifest by the digest the job
carries), then the volume's head naming it; only then does it apply the forward increment
to the image, fsync the image when the job says so, and take a due checkpoint. The caller
(:meth:`streams.volume_builder.VolumeBuilder.stored`) records the result.

**Child processes.** The increment worker is CPU-bound under one interpreter lock: decoding
events and storing windows compete for it. :class:`WindowStorers` moves storing into
``processes`` child processes (started with ``spawn``: the parent has librdkafka threads),
each with its own store client (``open_store(url)``) and opening the image by path (the
kernel's page cache keeps the parent's and the child's view of the file equal; an fsync
from either flushes both). A child dies with the thread that started it
(``PR_SET_PDEATHSIG``: start the pool from the thread that lives as long as the work, the
builder's), so no window is written by an orphan after its worker was killed; a child that
dies makes every pending and later window fail with ``BrokenProcessPool``, which stops the
worker loudly. Windows of one volume are still stored one at a time, in cut order.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import ProcessPoolExecutor
from dataclasses import dataclass, fields
from functools import partial
from multiprocessing import get_context
from operator import attrgetter, itemgetter, methodcaller
from pathlib import Path
from typing import Any

from connectors.errors import UsageError, VolumeError
from connectors.fsutil import libc
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.checkpoint import Checkpoint, write_checkpoint
from schemas.events import CHANGE_KINDS, WriteEvent, now_us
from schemas.extents import union_ranges
from schemas.head import check_still_newest, put_head
from schemas.image import Image
from schemas.increment import write_increment
from schemas.manifest import Bookmark, Manifest, ObjectRef
from schemas.writelog import write_event_log
from streams.assemble import assemble_window


@dataclass(frozen=True, slots=True)
class WindowCut:
    """A window whose membership is final, to be stored (:meth:`VolumeBuilder.cut_window`)."""

    reason: str
    members: list[tuple[int, WriteEvent]]
    first: int
    last: int
    first_seq: int
    last_seq: int
    session: str
    first_time_us: int
    last_time_us: int
    period_us: int | None
    previous: tuple[int, int] | None
    restorable_from: int | None
    consistent: bool
    bookmarks: tuple[Bookmark, ...]
    data_bytes: int  # WRITE/BASELINE bytes of the members (the cutter's count)
    fenced: tuple[str, ...] = ()  # sessions fenced out of the volume's history (manifest)
    baseline_open: bool = False  # a baseline begun after the last break is under way


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_INIT_FIELDS = [f.name for f in fields(WriteEvent) if f.init]
#: the WriteEvent fields, then the CRC of its data (computed once, when it was validated)
_EVENT_FIELDS: tuple[Callable[[WriteEvent], Any], ...] = (
    *map(attrgetter, _INIT_FIELDS),
    methodcaller("data_crc32c"),
)
_DATA = 1 + _INIT_FIELDS.index("data")  # its column
_CUT_FIELDS = tuple(f.name for f in fields(WindowCut) if f.name != "members")
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _cut_columns(cut: WindowCut) -> tuple[tuple[Any, ...], list[list[Any]]]:
    """The cut's fields but its members, and its members column by column (Kafka offsets,
    then the WriteEvent fields): C-level loops, and cheap to pickle."""
    events = list(map(_SECOND, cut.members))
    columns = [list(map(_FIRST, cut.members))]
    columns += [list(map(get, events)) for get in _EVENT_FIELDS]
    return tuple(getattr(cut, f) for f in _CUT_FIELDS), columns


def _cut_from_columns(rest: tuple[Any, ...], columns: list[list[Any]]) -> WindowCut:
    events = map(WriteEvent.with_data_crc32c, map(WriteEvent, *columns[1:-1]), columns[-1])
    members = list(zip(columns[0], events, strict=True))
    return WindowCut(members=members, **dict(zip(_CUT_FIELDS, rest, strict=True)))


@dataclass(frozen=True, slots=True)
class CheckpointJob:
    """A checkpoint due after the window: ``previous`` and the ranges changed since it
    (``dirty`` None: re-hash every chunk), not counting the window's own ranges."""

    previous: Checkpoint | None
    dirty: list[tuple[int, int]] | None
    chunk_size: int


@dataclass(frozen=True, slots=True)
class WindowJob:
    """What storing a window needs besides the cut (picklable: ``clock`` must be a
    module-level function when the job goes to a child process). ``previous_digest``:
    the canonical digest of the manifest of the cut's ``previous`` window (None only when
    the cut has none)."""

    volume: str
    group: str
    topic: str
    partition: int
    volume_size: int
    policy: dict[str, Any]
    image_path: Path
    sync: bool  # fsync the image after applying the window
    checkpoint: CheckpointJob | None
    clock: Callable[[], int] = now_us
    previous_digest: str | None = None


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """The result of :func:`write_window`."""

    manifest: Manifest
    ranges: list[tuple[int, int]]  # the window's changed ranges (merged, sorted)
    synced: bool
    checkpoint: Checkpoint | None


def write_window(
    store: ObjectStore, image: Image, cut: WindowCut, job: WindowJob, pool: ThreadPoolExecutor
) -> StoredWindow:
    """Store ``cut`` (see the module docstring for the order); ``pool`` (3 threads or more)
    builds and uploads the three objects in parallel."""
    first, last, members = cut.first, cut.last, cut.members
    check_still_newest(store, job.volume, first)  # its objects' keys may be another's
    changes = [e for _, e in members if e.kind in CHANGE_KINDS]
    forward, backward, ranges, flags_list = assemble_window(changes, image.pread)
    flags = iter(flags_list)
    in_forward = [e.kind in CHANGE_KINDS and next(flags) for _, e in members]
    v = job.volume
    fbuf, bbuf, lbuf = io.BytesIO(), io.BytesIO(), io.BytesIO()
    # compression, hashing and fsync release the GIL: build and upload in parallel
    span = partial(write_increment, volume=v, first_offset=first, last_offset=last)
    ffut = pool.submit(span, fbuf, forward, direction="forward")
    bfut = pool.submit(span, bbuf, backward, direction="backward", digest=False)
    nrec = write_event_log(
        lbuf, members, in_forward, volume=v, first_offset=first, last_offset=last
    )
    finfo, binfo = ffut.result(), bfut.result()
    parts = [
        ("fwd", fbuf, {"extents": finfo.extents, "logical_bytes": finfo.logical_bytes}),
        ("bwd", bbuf, {"extents": binfo.extents, "logical_bytes": binfo.logical_bytes}),
        ("log", lbuf, {"records": nrec}),
    ]
    puts: list[Future[None]] = []
    refs = []
    for part, buf, counts in parts:
        key = keys.data_key(v, first, last, part)
        blob = buf.getvalue()
        puts.append(pool.submit(store.put, key, blob))
        refs.append(ObjectRef.of(key, blob, **counts))
    for fut in puts:  # the manifest only after all three are durable
        fut.result()
    manifest = Manifest(
        volume=v,
        group=job.group,
        topic=job.topic,
        partition=job.partition,
        volume_size=job.volume_size,
        first_offset=first,
        last_offset=last,
        first_time_us=cut.first_time_us,
        last_time_us=cut.last_time_us,
        session=cut.session,
        first_sequence=cut.first_seq,
        last_sequence=cut.last_seq,
        events=len(members),
        bytes_written=cut.data_bytes,
        policy=job.policy,
        period_us=cut.period_us,
        close_reason=cut.reason,
        previous=cut.previous,
        previous_digest=job.previous_digest,
        fenced=cut.fenced,
        baseline_open=cut.baseline_open,
        restorable_from=cut.restorable_from,
        consistent=cut.consistent,
        bookmarks=cut.bookmarks,
        ranges_sha256=finfo.ranges_sha256,
        forward=refs[0],
        backward=refs[1],
        writelog=refs[2],
        created_us=job.clock(),
    )
    check_still_newest(store, v, first)  # and never fork a chain another agent writes
    store.put(manifest.key, manifest.to_json())
    put_head(store, manifest, manifest.created_us)  # one clock reading per window
    image.apply(forward)
    if job.sync:
        image.sync()
    checkpoint = None
    if job.checkpoint is not None:
        checkpoint = take_checkpoint(store, image, manifest, job.checkpoint, ranges, job.clock)
    return StoredWindow(manifest, ranges, job.sync, checkpoint)


def take_checkpoint(
    store: ObjectStore,
    image: Image,
    window: Manifest,
    job: CheckpointJob,
    ranges: list[tuple[int, int]],
    clock: Callable[[], int],
) -> Checkpoint:
    """Checkpoint ``image`` (the volume at the end of ``window``); ``ranges`` changed since
    ``job.dirty`` was taken."""
    return write_checkpoint(
        store,
        image,
        volume=window.volume,
        offset=window.last_offset,
        window_digest=window.digest,
        chunk_size=job.chunk_size,
        previous=job.previous,
        dirty=None if job.dirty is None else union_ranges(job.dirty + ranges),
        created_us=clock(),
    )


class WindowStorers:
    """A pool of ``processes`` child processes that run :func:`write_window` (see the
    module docstring). Create it in a thread that outlives the work (the children die with
    it); :meth:`close` waits for the windows being stored.

    A window's event data goes to its child through a file in ``spill_dir`` (written with
    ``writev``, without the interpreter lock; the child reads it back in one call and
    deletes it), everything else pickled through the pool's pipe. Files left by a killed
    run are deleted when the pool starts.
    """

    def __init__(self, processes: int, spill_dir: Path) -> None:
        self.spill_dir = spill_dir
        spill_dir.mkdir(parents=True, exist_ok=True)
        for stale in spill_dir.glob("*.data"):
            stale.unlink(missing_ok=True)
        self._names = itertools.count()
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=get_context("spawn"),
            initializer=_child_init,
            initargs=(os.getpid(),),
        )
        for _ in range(processes):  # start the children and their imports now, not at the
            self._pool.submit(_ready)  # first window

    def submit(
        self, store_url: str, key_file: str | None, cut: WindowCut, job: WindowJob
    ) -> Future[StoredWindow]:
        """Store ``cut`` in a child, on the store at ``store_url`` sealed by ``key_file``
        (its own client, opened once per child; not ``memory://``: a child has its own
        memory). Raises
        :class:`VolumeError` if the data cannot be written to ``spill_dir``."""
        if store_url.startswith("memory://"):
            raise UsageError(f"cannot store windows in child processes on {store_url}")
        rest, columns = _cut_columns(cut)
        datas = columns[_DATA]
        columns[_DATA] = list(map(len, datas))
        path = self.spill_dir / f"{next(self._names)}.data"
        _spill(path, datas)
        return self._pool.submit(_store_in_child, store_url, key_file, rest, columns, path, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _spill(path: Path, datas: list[bytes]) -> None:
    """Write ``datas`` back to back to a new file at ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            for i in range(0, len(datas), _IOV_MAX):
                part = datas[i : i + _IOV_MAX]
                done = os.writev(fd, part)
                if done < sum(map(len, part)):  # a short write: finish it
                    rest = memoryview(b"".join(part))[done:]
                    while rest:
                        rest = rest[os.write(fd, rest) :]
        finally:
            os.close(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise VolumeError(
            f"cannot hand a window's data to a store process through {path}: {exc.strerror}"
        ) from None


# --- in the child process ------------------------------------------------------------------
_child_stores: dict[tuple[str, str | None], ObjectStore] = {}
_child_threads: list[ThreadPoolExecutor] = []


_PR_SET_PDEATHSIG = 1


def _child_init(parent: int) -> None:
    """Die with the parent thread that started this process (Linux), also if it is gone.
    Ctrl-C and a SIGTERM to the process group are the parent's to handle: it finishes the
    windows being stored, then closes the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:  # else it may outlive the worker
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != parent:  # died before the signal was armed
        os._exit(1)


def _ready() -> None:
    import connectors.store  # noqa: F401  # the import the first window would wait for


def _store_in_child(
    store_url: str,
    key_file: str | None,
    rest: tuple[Any, ...],
    columns: list[list[Any]],
    path: Path,
    job: WindowJob,
) -> StoredWindow:
    from connectors.store import open_store

    try:
        blob = memoryview(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
    lengths = columns[_DATA]
    ends = list(itertools.accumulate(lengths))
    # views, not copies: every consumer of event data takes any bytes-like object
    columns[_DATA] = [blob[e - n : e] for e, n in zip(ends, lengths, strict=True)]
    cut = _cut_from_columns(rest, columns)

    store = _child_stores.get((store_url, key_file))
    if store is None:
        store = _child_stores[store_url, key_file] = open_store(store_url, key_file=key_file)
    if not _child_threads:
        _child_threads.append(ThreadPoolExecutor(max_workers=3, thread_name_prefix="kcdp-close"))
    with Image(job.image_path, job.volume_size, create=False) as image:
        return write_window(store, image, cut, job, _child_threads[0])
