"""Where a cut window is stored: one :class:`WindowSink` interface, three implementations.

The lifecycle of a window is *cut* (membership ends: :meth:`VolumeBuilder.cut_window`) →
*store* (objects, manifest, head, image: :func:`streams.storing.write_window`, by a sink)
→ *record* (:meth:`VolumeBuilder.stored`, in the partition's thread, in cut order). A sink
only decides where the store step runs:

* :class:`InlineSink` — now, in the caller's thread (``close_threads`` 0);
* :class:`ThreadSink` — on ``close_threads`` background threads of this process;
* :class:`ProcessSink` — in the worker's storing child processes
  (:class:`~streams.storing.WindowStorers`).

Each returns a future of the stored window; the processor records it when it is done.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from connectors.store import store_key_file
from connectors.store.base import ObjectStore
from schemas.image import Image
from streams.storing import StoredWindow, WindowCut, WindowStorers
from streams.volume_builder import VolumeBuilder


@dataclass(frozen=True, slots=True)
class PendingWindow:
    """A cut window a sink is storing: its first offset (nothing from it on may be
    committed), its first event time (RPO) and the future of its store step."""

    first: int
    first_time_us: int
    future: Future[StoredWindow]


class WindowSink(Protocol):
    def store(self, vb: VolumeBuilder, cut: WindowCut) -> Future[StoredWindow]:
        """Start storing ``cut`` of ``vb``; the future of the stored window."""
        ...

    def close(self) -> None:
        """Finish what is being stored (the pool a sink owns shuts down)."""
        ...


class InlineSink:
    """Stores the window before :meth:`store` returns (its future is done)."""

    def store(self, vb: VolumeBuilder, cut: WindowCut) -> Future[StoredWindow]:
        fut: Future[StoredWindow] = Future()
        try:
            fut.set_result(vb.write(cut, vb.job(cut)))
        except Exception as exc:  # raised where the window is recorded, as for the others
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        pass


class ThreadSink:
    """Stores windows on ``threads`` background threads named for the partition."""

    def __init__(self, threads: int, partition: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"kcdp-store-{partition}"
        )

    def store(self, vb: VolumeBuilder, cut: WindowCut) -> Future[StoredWindow]:
        return self._pool.submit(vb.write, cut, vb.job(cut))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class ProcessSink:
    """Stores windows in the worker's child processes (they open the image by path and the
    store by URL); the pool belongs to the worker, not to this sink."""

    def __init__(self, storers: WindowStorers, store: ObjectStore) -> None:
        self._storers = storers
        self._store = store

    def store(self, vb: VolumeBuilder, cut: WindowCut) -> Future[StoredWindow]:
        if vb.image is None:  # the child opens it by path: create it here first
            vb.image = Image(vb.image_path, vb.size)
        return self._storers.submit(self._store.url, store_key_file(self._store), cut, vb.job(cut))

    def close(self) -> None:
        pass
