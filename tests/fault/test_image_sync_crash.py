"""A builder killed (SIGKILL) between image writes and the applied-state update resumes exact.

The image is fsynced and its applied offset recorded only every
``image_sync_windows`` windows. A child process builds windows on a file store and is
killed in the middle of applying a window's forward increment, two windows after the last
recorded state. The bytes of the windows after that state are then overwritten with garbage
(unsynced pages may reach the disk in any state), and a new builder must bring the image to
the store's head by replaying forward increments, then go on writing exact backward
increments: the whole chain is checked against a byte model.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterable
from pathlib import Path

import orjson

from connectors.store.file import FileStore
from schemas.events import EventKind, WriteEvent
from schemas.extents import Extent
from schemas.image import Image
from schemas.increment import read_increment
from schemas.manifest import get_verified, list_window_keys, load_manifest
from streams.options import BuildOptions
from streams.volume_builder import VolumeBuilder
from streams.window import WindowPolicy
from tests.streams_support import Volume, check_chain, close_window, states_after

SIZE = 64 * 1024
PER_WINDOW = 6
SYNC_EVERY = 4
KILL_IN_WINDOW = 10  # 1-based: state recorded after window 8, killed while applying 10


def _workload() -> list[WriteEvent]:
    rng = random.Random(7)
    v = Volume("crash", SIZE)
    evs = v.start()
    for _ in range(100):
        off = rng.randrange(SIZE - 4096)
        if rng.random() < 0.15:
            evs.append(v.event(EventKind.ZERO, off, length=rng.randrange(1, 4096)))
        else:
            evs.append(v.write(off, rng.randbytes(rng.randrange(1, 4096))))
    return evs


def _builder(tmp: Path, store: FileStore) -> VolumeBuilder:
    opts = BuildOptions(
        topic="t",
        partition=0,
        workdir=tmp / "work",
        policy=WindowPolicy(count=PER_WINDOW),
        checkpoint_windows=0,
        checkpoint_bytes=0,
        image_sync_windows=SYNC_EVERY,
    )
    return VolumeBuilder(store, opts, volume="crash", group="crash", volume_size=SIZE)


def _feed(b: VolumeBuilder, events: Iterable[tuple[int, WriteEvent]]) -> None:
    for off, ev in events:
        reason = b.add(off, ev, ev.timestamp_us)
        if reason is not None:
            close_window(b, reason)


def _child(tmp: Path, events: list[WriteEvent]) -> None:
    """Build windows until killed halfway through applying window ``KILL_IN_WINDOW``."""
    original = Image.apply
    applied = [0]

    def apply(self: Image, extents: Iterable[Extent]) -> None:
        exts = list(extents)
        applied[0] += 1
        if applied[0] == KILL_IN_WINDOW:
            original(self, exts[: len(exts) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, exts)

    Image.apply = apply  # type: ignore[method-assign]
    b = _builder(tmp, FileStore(tmp / "store"))
    b.resume()
    _feed(b, enumerate(events))


def test_kill_between_image_writes_and_state_update_resumes_exact(tmp_path: Path) -> None:
    events = _workload()
    pid = os.fork()
    if pid == 0:  # the child never returns to pytest
        try:
            _child(tmp_path, events)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status

    store = FileStore(tmp_path / "store")
    windows = list_window_keys(store, "crash")
    assert len(windows) == KILL_IN_WINDOW  # its manifest is put before the image is touched
    state_path = tmp_path / "work" / "crash.img.kcdp-replica.json"
    synced = windows[SYNC_EVERY * (KILL_IN_WINDOW // SYNC_EVERY) - 1][1]  # last fsync
    assert orjson.loads(state_path.read_bytes())["applied_offset"] == synced
    later = [load_manifest(store, key) for _, last, key in windows if last > synced]
    assert len(later) == KILL_IN_WINDOW % SYNC_EVERY
    # writes after the last fsync may have reached the disk in any state
    rng = random.Random(1)
    with Image(tmp_path / "work" / "crash.img", SIZE) as img:
        for m in later:
            for ext in read_increment(get_verified(store, m.forward)):
                img.pwrite(ext.offset, rng.randbytes(ext.length))

    offsets = list(range(len(events)))
    states = states_after(events, offsets, SIZE)
    b = _builder(tmp_path, store)
    assert b.resume()
    head = windows[-1][1]
    assert b.durable_offset == head
    assert b.image is not None and b.image.pread(0, SIZE) == states[head]
    _feed(b, ((o, e) for o, e in enumerate(events) if o > head))
    close_window(b, "end")
    b.close()
    manifests = check_chain(store, "crash", SIZE, states)
    assert manifests[-1].last_offset == len(events) - 1
    assert orjson.loads(state_path.read_bytes())["applied_offset"] == len(events) - 1
    assert (tmp_path / "work" / "crash.img").read_bytes() == states[len(events) - 1]
