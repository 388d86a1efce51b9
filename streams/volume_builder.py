"""One volume's increment builder: window membership, objects, manifest, the volume's image.

:class:`VolumeBuilder` is Faust-free. The partition processor (:mod:`streams.partition`)
hands it events in offset order; it keeps the open window in memory (bounded by the
policy's ``max_bytes``). Closing is two steps: :meth:`VolumeBuilder.cut_window` ends the
window's membership; storing it (:func:`streams.storing.write_window`: here with
:meth:`VolumeBuilder.store_window`, or on another thread or in a child process with
:meth:`VolumeBuilder.write` or :meth:`VolumeBuilder.job`, one window at a time, in cut
order; memory is then bounded by two windows) writes, in this order (docs/FORMAT.md
"Ordering invariants"): forward increment, backward increment, write log, manifest; then
applies the forward increment to the local image. :meth:`VolumeBuilder.stored` records
each stored window, in the builder's thread.
Every ``image_sync_windows`` windows (and on :meth:`VolumeBuilder.close`) the image is
synced and then the applied offset recorded in ``<image>.kcdp-replica.json``, so the state
never claims more than is on disk; the windows after it are replayed from the store on
resume. Write-log records of writes that no later change of the window overlaps are
``in_forward`` (no data: the forward increment holds their bytes;
:func:`streams.assemble.assemble_window`). Every ``checkpoint_windows`` windows or
``checkpoint_bytes`` written bytes a checkpoint of the image is uploaded after the window
(only changed chunks).

Resume (:meth:`VolumeBuilder.resume`) trusts the store: the last manifest gives the
durable offset, session, sequence and consistency; :mod:`streams.image_state` brings the
image to that manifest. Backward increments are only ever read from the in-process image,
which resume first brings to the store's head.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from connectors.errors import GapError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.applied_state import AppliedState
from schemas.checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent
from schemas.image import Image
from schemas.manifest import (
    Bookmark,
    Manifest,
    get_verified,
    list_window_keys,
    load_manifest,
)
from schemas.retention import Base, effective_windows, load_retention
from schemas.writelog import read_log
from streams.admission import Reread, VolumeLine
from streams.image_state import catch_up, fresh_image, record_applied
from streams.options import BuildOptions
from streams.storing import (
    CheckpointJob,
    StoredWindow,
    WindowCut,
    WindowJob,
    take_checkpoint,
    write_window,
)
from streams.window import WindowCutter

if TYPE_CHECKING:
    from streams.sinks import PendingWindow

log = logging.getLogger("kcdp.volume")


class VolumeBuilder:
    """Builds the windows of one volume of one partition."""

    def __init__(
        self,
        store: ObjectStore,
        options: BuildOptions,
        *,
        volume: str,
        group: str,
        volume_size: int,
        reread: Reread | None = None,
    ) -> None:
        self.store = store
        self.opt = options
        self.volume = keys.check_name(volume)
        self.group = group
        self.size = volume_size
        self.cutter = WindowCutter(options.policy)
        options.workdir.mkdir(parents=True, exist_ok=True)
        self.image_path = options.workdir / f"{volume}.img"
        self.image: Image | None = None
        # history
        self.durable_offset = -1  # last offset of the last manifest (store_window's)
        self.cut_offset = -1  # last offset of the last cut window (the cuts')
        #: the cut window being stored in the background: its first offset, first event
        #: time and result (managed by the partition processor)
        self.pending: PendingWindow | None = None  # the cut window a sink is storing
        self.previous: tuple[int, int] | None = None
        #: the newest stored window: offsets and manifest digest (the next one chains to it)
        self.newest: tuple[int, int, str] | None = None
        #: the session and sequence rules' state (owned by the line, read here)
        self.line = VolumeLine(
            self.volume,
            support=options.quarantine_support,
            hold_us=options.quarantine_us,
            reread=reread,
        )
        self.consistent = False
        #: a BASELINE_START was applied since the history last broke (only a baseline begun
        #: after the break makes the volume consistent again at its BASELINE_END)
        self.baseline_open = False
        self.last_offset_seen = -1
        # checkpoints
        self.checkpoint: Checkpoint | None = None
        self.base: Base | None = None  # the retention base, once a prune set one
        self.windows_since_cp = 0
        self.bytes_since_cp = 0
        self.dirty: list[tuple[int, int]] = []  # changed ranges since it, merged when taken
        self.unsynced = 0  # windows applied to the image since its last sync
        self._executor: ThreadPoolExecutor | None = None  # close_window's, made on first use
        self.dirty_known = True  # False after a resume: the next checkpoint re-hashes all
        self._reset_window()

    # -- window membership ---------------------------------------------------------------
    def _reset_window(self) -> None:
        self.members: list[tuple[int, WriteEvent]] = []
        self.win_first: int | None = None
        self.win_last = -1
        self.win_first_seq: int | None = None
        self.win_last_seq = -1
        self.win_session = self.line.session
        self.restorable_from: int | None = None
        self.bookmarks: list[Bookmark] = []

    @property
    def open(self) -> bool:
        return self.win_first is not None

    def _member(self, offset: int, event: WriteEvent) -> None:
        if self.win_first is None:
            self.win_first = offset
            self.win_first_seq = event.sequence
        self.win_last = offset
        self.win_last_seq = event.sequence
        self.win_session = event.session
        self.last_offset_seen = offset
        if self.consistent and self.restorable_from is None:
            self.restorable_from = offset

    def break_history(self) -> None:
        """Records were lost or a session began uncleanly: inconsistent until a baseline
        that starts after this point ends."""
        self.consistent = self.baseline_open = False

    def add(self, offset: int, event: WriteEvent, t_us: int) -> str | None:
        """Add a valid event (clamped time ``t_us``); return a close reason or None."""
        if event.kind is EventKind.BASELINE_START:
            self.baseline_open = True
        elif event.kind is EventKind.BASELINE_END:
            self.consistent = self.consistent or self.baseline_open
        elif event.kind is EventKind.BOOKMARK:
            self.bookmarks.append(Bookmark(event.name, offset, t_us))
        self.members.append((offset, event))
        self._member(offset, event)
        data = event.length if event.kind in DATA_KINDS else 0
        changed = event.length if event.kind in CHANGE_KINDS else 0
        return self.cutter.add(t_us, data, changed)

    # -- closing -------------------------------------------------------------------------
    def cut_window(self, reason: str) -> WindowCut | None:
        """End the open window and return what :meth:`store_window` needs; None if none.

        Only the window's membership moves on: its objects, the image and the durable offset
        change in :meth:`store_window`, which must be called for every cut, in cut order,
        one at a time (it may run on another thread than the cuts).
        """
        if self.win_first is None:
            return None
        c = self.cutter
        cut = WindowCut(
            reason=reason,
            members=self.members,
            first=self.win_first,
            last=self.win_last,
            first_seq=self.win_first_seq if self.win_first_seq is not None else -1,
            last_seq=self.win_last_seq,
            session=self.win_session,
            first_time_us=c.first_time_us,
            last_time_us=c.last_time_us,
            period_us=c.period_us,
            previous=self.previous,
            restorable_from=self.restorable_from,
            consistent=self.consistent,
            bookmarks=tuple(self.bookmarks),
            data_bytes=c.data_bytes,
            fenced=tuple(self.line.fenced),
            baseline_open=self.baseline_open and not self.consistent,
        )
        self.previous = (cut.first, cut.last)
        self.cut_offset = cut.last
        c.closed()
        self._reset_window()
        return cut

    def store_window(self, cut: WindowCut) -> Manifest:
        """Store a cut window here (:func:`streams.storing.write_window`) and record
        it (:meth:`stored`)."""
        return self.stored(self.write(cut, self.job(cut)))

    def write(self, cut: WindowCut, job: WindowJob) -> StoredWindow:
        """Store a cut window in this thread without recording it (:meth:`stored` does);
        ``job`` from :meth:`job`, made in the builder's thread."""
        if self.image is None:
            self.image = Image(self.image_path, self.size)
        return write_window(self.store, self.image, cut, job, self._pool())

    def job(self, cut: WindowCut) -> WindowJob:
        """What storing ``cut`` needs besides the cut: whether the image is due for an
        fsync and a checkpoint after it (decided from the windows recorded so far; call it
        after the previous window of the volume was recorded)."""
        o = self.opt
        return WindowJob(
            volume=self.volume,
            group=self.group,
            topic=o.topic,
            partition=o.partition,
            volume_size=self.size,
            policy=o.policy.to_dict(),
            image_path=self.image_path,
            sync=self.unsynced + 1 >= max(1, o.image_sync_windows),
            checkpoint=self._checkpoint_job(1, cut.data_bytes),
            clock=o.clock,
            previous_digest=self._previous_digest(cut),
        )

    def _previous_digest(self, cut: WindowCut) -> str | None:
        """The manifest digest of the window ``cut`` follows: the newest stored one."""
        if cut.previous is None:
            return None
        if self.newest is None or self.newest[:2] != cut.previous:
            raise GapError(
                f"volume {self.volume}: window {cut.first}-{cut.last} follows window "
                f"{cut.previous}, but the newest stored window is {self.newest}"
            )
        return self.newest[2]

    def _checkpoint_job(self, windows: int, data: int) -> CheckpointJob | None:
        """The checkpoint due after ``windows`` more windows of ``data`` written bytes
        (None: not due)."""
        o = self.opt
        if not (
            (o.checkpoint_windows and self.windows_since_cp + windows >= o.checkpoint_windows)
            or (o.checkpoint_bytes and self.bytes_since_cp + data >= o.checkpoint_bytes)
        ):
            return None
        return CheckpointJob(
            previous=self.checkpoint,
            dirty=list(self.dirty) if self.checkpoint and self.dirty_known else None,
            chunk_size=o.chunk_size,
        )

    def stored(self, sw: StoredWindow) -> Manifest:
        """Record a window stored by :func:`~streams.storing.write_window` (from
        :meth:`job`): durable offset, checkpoint counters, image state."""
        m = sw.manifest
        self.durable_offset = m.last_offset
        self.newest = (m.first_offset, m.last_offset, m.digest)
        self.unsynced += 1
        self.windows_since_cp += 1
        self.bytes_since_cp += m.bytes_written
        self.dirty.extend(sw.ranges)
        if sw.checkpoint is not None:
            self._checkpointed(sw.checkpoint)
        if sw.synced:
            self._write_state(self.durable_offset)
            self.unsynced = 0
        return m

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="kcdp-close")
        return self._executor

    def _sync_image(self) -> None:
        """fsync the image, then record the durable offset as applied."""
        assert self.image is not None
        self.image.sync()
        self._write_state(self.durable_offset)
        self.unsynced = 0

    def _maybe_checkpoint(self, window: Manifest) -> None:
        job = self._checkpoint_job(0, 0)
        if job is not None:
            assert self.image is not None
            cp = take_checkpoint(self.store, self.image, window, job, [], self.opt.clock)
            self._checkpointed(cp)

    def _checkpointed(self, cp: Checkpoint) -> None:
        self.checkpoint = cp
        self.windows_since_cp = 0
        self.bytes_since_cp = 0
        self.dirty = []
        self.dirty_known = True

    def _write_state(self, applied: int) -> None:
        state = AppliedState(
            volume=self.volume,
            topic=self.opt.topic,
            partition=self.opt.partition,
            applied_offset=applied,
            session=self.line.session,
            sequence=(self.line.next_seq or 0) - 1,
        )
        record_applied(self.image_path, state)

    # -- resume --------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the volume's history from the store and bring the image up to it.

        Returns False (and starts a fresh image) when the store holds no window yet."""
        retention = load_retention(self.store, self.volume)
        self.base = retention.base if retention else None
        floor = None if self.base is None else self.base.offset
        windows = effective_windows(list_window_keys(self.store, self.volume), floor)
        if not windows:
            self.image = fresh_image(self.image_path, self.size)
            return False
        last = load_manifest(self.store, windows[-1][2])
        self.size = last.volume_size
        self.group = last.group
        self.durable_offset = self.cut_offset = last.last_offset
        self.last_offset_seen = last.last_offset
        self.previous = (last.first_offset, last.last_offset)
        self.newest = (last.first_offset, last.last_offset, last.digest)
        self.win_session = last.session
        self.consistent = last.consistent
        self.baseline_open = last.consistent or last.baseline_open
        log = last.writelog  # None: a consolidated window (not a clean end to resume)
        records = [] if log is None else list(read_log(get_verified(self.store, log), name=log.key))
        self.line.resume(
            session=last.session,
            next_seq=last.last_sequence + 1,
            ended=bool(records) and records[-1].kind is EventKind.SESSION_END,
            fenced=getattr(last, "fenced", ()),
            last_offset=last.last_offset,
        )
        self.cutter.resume(
            last_time_us=last.last_time_us,
            period_us=last.period_us,
            dur_us=last.last_time_us - last.first_time_us,
            data_bytes=last.bytes_written,
        )
        cps = [o for o in list_checkpoints(self.store, self.volume) if o <= last.last_offset]
        if cps:
            self.checkpoint = load_checkpoint(self.store, self.volume, cps[-1])
        self.windows_since_cp = sum(1 for w in windows if w[1] > (cps[-1] if cps else -1))
        self._catch_up(windows)
        self.dirty_known = False
        # a crash between the last manifest and its due checkpoint: take it now, at the
        # same offset an uninterrupted run would have
        self._maybe_checkpoint(last)
        return True

    def _catch_up(self, windows: list[tuple[int, int, str]]) -> None:
        self.image, stale = catch_up(
            self.store, self.volume, self.image_path, self.size, windows, self.checkpoint, self.base
        )
        if stale:
            self._sync_image()

    def close(self) -> None:
        """Finish the windows this builder's threads store, then sync the image and record
        its applied offset if windows are pending, and close it."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self.image is not None:
            try:
                if self.unsynced:
                    self._sync_image()
            finally:
                self.image.close()
                self.image = None
