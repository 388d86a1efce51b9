"""The broker freezes (SIGSTOP) while an intercept captures, in sync and in async mode.

Real parts: a Tansu broker of this module's own (it is stopped), the intercept Python API
(:class:`~connectors.intercept.InterceptedVolume`), the worker as a subprocess, a file
store and ``kcdp restore``. A writer thread writes random, unaligned writes that are split
into several events; the broker is frozen mid-stream, and the intercept must fail within
its documented bound (``delivery_timeout`` bounds every wait; the wait for an
acknowledgement allows 5 s more) instead of hanging, and refuse writes after that. Then
the broker resumes, the volume is reopened (an unclean restart: a baseline) and closed
cleanly, and the worker stores the history. Afterwards:

* every acknowledged write is in the topic, whole, and restores at the acknowledged
  points equal the model of the acknowledged writes;
* a write that raised DeliveryError (or was in flight when capture failed) is absent from
  the topic or whole, never a part of it;
* every sampled point restores equal to the topic's model, or is refused with a clear
  error (the points after the reopen follow a session gap); the topic's newest point is
  the backing file.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.errors import DeliveryError
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.store import open_store
from infra.broker import EmbeddedBroker
from schemas.events import EventKind
from tests.fault.support import (
    ByteModel,
    MiB,
    check_restores,
    read_partition,
    sample,
    volume_events,
    wait_durable,
    worker,
)

SIZE = 2 * MiB
PIECE = 8 << 10  # max_event_data: most writes are split into several events
DELIVERY_TIMEOUT = 3.0
#: the documented bound of a failing call: delivery_timeout, plus the 5 s the wait for an
#: acknowledgement allows on top, plus scheduling slack on a loaded machine
BOUND = DELIVERY_TIMEOUT + 5.0 + 3.0
#: events of each write in flight when the broker freezes
SPLIT = 32
#: acknowledged writes (async: flushes, every 10 writes) before the broker freezes
ACKED = 50


@pytest.fixture(scope="module")
def pausable() -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: its tests freeze it."""
    with EmbeddedBroker() as b:
        yield b


def _signal(broker: EmbeddedBroker, sig: signal.Signals) -> None:
    assert broker.proc is not None and broker.proc.poll() is None
    os.killpg(broker.proc.pid, sig)


@dataclass
class Call:
    """One write call: what it wrote, the sequences it enqueued, how it ended."""

    where: int
    data: bytes
    seq_first: int
    seq_last: int
    seconds: float
    offset: int | None  # sync: the returned offset
    error: str | None


@dataclass
class Flush:
    calls: int  # calls made before it
    offset: int | None
    seconds: float
    error: str | None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_broker_sigstop_during_capture(pausable: EmbeddedBroker, tmp_path: Path, mode: str) -> None:
    bootstrap = pausable.bootstrap_servers
    topic, name = f"pause-{uuid.uuid4().hex[:8]}", f"pause-{mode}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    backing = tmp_path / "vol.img"
    rng = random.Random(mode)
    vol = InterceptedVolume(
        backing,
        name,
        SIZE,
        bootstrap_servers=bootstrap,
        topic=topic,
        mode=mode,  # type: ignore[arg-type]
        delivery_timeout=DELIVERY_TIMEOUT,
        max_event_data=PIECE,
        max_in_flight_bytes=MiB,
    )
    calls: list[Call] = []
    flushes: list[Flush] = []
    failed_at: list[float] = []
    stop = threading.Event()
    split = threading.Event()  # from now on every write is split into SPLIT events

    def writer() -> None:
        while not stop.is_set():
            length = SPLIT * PIECE if split.is_set() else rng.randint(1, 16 * PIECE)
            where = rng.randrange(SIZE - length)
            data = rng.randbytes(length)
            before, t = vol.sequence, time.monotonic()
            try:
                at: int | None = vol.write(where, data)
                error = None
            except DeliveryError as exc:
                at, error = None, str(exc)
            took = time.monotonic() - t
            calls.append(Call(where, data, before + 1, vol.sequence, took, at, error))
            if error is None and mode == "async" and len(calls) % 10 == 0:
                t = time.monotonic()
                try:
                    off: int | None = vol.flush()
                    error = None
                except DeliveryError as exc:
                    off, error = None, str(exc)
                flushes.append(Flush(len(calls), off, time.monotonic() - t, error))
            if error is not None:
                failed_at.append(time.monotonic())
                time.sleep(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    paused = False
    try:
        deadline = time.monotonic() + 30

        def acked_now() -> int:
            return max((f.calls for f in flushes), default=0) if mode == "async" else len(calls)

        while acked_now() < ACKED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert acked_now() >= ACKED, "the writer did not get going"
        split.set()  # freeze the broker while a write's events are on their way
        time.sleep(0.02)
        _signal(pausable, signal.SIGSTOP)
        paused, frozen = True, time.monotonic()
        while not failed_at and time.monotonic() - frozen < BOUND + 10:
            time.sleep(0.05)
        assert failed_at, f"capture still hangs {BOUND + 10:.0f}s after the broker froze"
        assert failed_at[0] - frozen <= BOUND, f"failed after {failed_at[0] - frozen:.1f}s"
        while len(failed_at) < 5 and time.monotonic() - frozen < 2 * BOUND:
            time.sleep(0.05)
        stop.set()
        thread.join(BOUND + 5)
        assert not thread.is_alive(), "a write call hangs with the broker frozen"
    finally:
        stop.set()
        if paused:
            _signal(pausable, signal.SIGCONT)
    slowest = max([c.seconds for c in calls] + [f.seconds for f in flushes])
    assert slowest <= BOUND, f"a call took {slowest:.1f}s (bound {BOUND:.0f}s)"
    assert sum(c.error is not None for c in calls) + sum(f.error is not None for f in flushes) >= 5
    later = [c for c in calls if c.error][1:]
    assert all("reopen" in (c.error or "") and c.seconds < 1.0 for c in later), (
        "after a failure, writes must be refused at once, asking for a reopen"
    )
    time.sleep(1.0)  # let the thawed broker finish what it had received
    vol.close()

    # an unclean restart: a new session with a baseline, then writes, then a clean close
    with InterceptedVolume(backing, name, bootstrap_servers=bootstrap, topic=topic) as again:
        again.wait_baseline(timeout=60)
        after = [again.write(rng.randrange(SIZE - 9000), rng.randbytes(9000)) for _ in range(5)]
    final_image = backing.read_bytes()

    # -- the topic: acknowledged writes all there and whole, failed ones absent or whole
    events = volume_events(read_partition(bootstrap, topic), name)
    first_session = events[0][1].session
    by_seq = {e.sequence: (o, e) for o, e in events if e.session == first_session}
    if mode == "sync":
        acked = [c for c in calls if c.error is None]
        assert acked == calls[: len(acked)]
    else:
        good = [f for f in flushes if f.error is None]
        assert good, "no flush succeeded before the broker froze"
        acked = calls[: good[-1].calls]
    assert len(acked) >= ACKED
    for k, c in enumerate(calls):
        # the write's events: one per PIECE bytes, consecutive sequences from seq_first
        # (a call that failed while enqueuing them enqueued only the first few)
        seqs = list(range(c.seq_first, c.seq_first + -(-len(c.data) // PIECE)))
        present = [s for s in seqs if s in by_seq]
        if k < len(acked):
            assert present == seqs, f"acknowledged write {k} is missing from the topic"
        else:
            # a write that was not acknowledged may be torn, never out of order: the
            # topic holds a prefix of its pieces (docs/FORMAT.md "Event rules")
            assert present == seqs[: len(present)], (
                f"{mode} write {k} ({c.error or 'in flight'}; enqueued sequences "
                f"{c.seq_first}..{c.seq_last}) is in the topic out of order: sequences "
                f"{present} of {seqs[0]}..{seqs[-1]}"
            )
        if present:
            data = b"".join(by_seq[s][1].data for s in present)
            assert c.data.startswith(data) and by_seq[seqs[0]][1].offset == c.where
    if mode == "sync":
        for c in acked:
            assert c.offset == by_seq[c.seq_last][0]

    # -- the stored history
    store_url = f"file://{tmp_path / 'store'}"
    store = open_store(store_url)
    with worker(bootstrap, store_url, topic, tmp_path / "w") as w:
        wait_durable(store, name, events[-1][0], w, 90)
    assert events[-1][1].kind is EventKind.SESSION_END

    app = ByteModel(SIZE)  # the acknowledged writes only
    ack_points: list[int] = []
    for c in acked:
        app.write(by_seq[c.seq_last][0], c.where, c.data)
        ack_points.append(by_seq[c.seq_last][0])
    if mode == "async":
        ack_points = [f.offset for f in flushes if f.error is None and f.offset is not None]
    rng = random.Random(1)
    must = sample(ack_points, 10, rng, ack_points[-1])
    expected = app.images_at(must)
    topic_model = ByteModel.of_events(SIZE, events)
    assert topic_model.images_at(must) == expected
    late = sample(after, 3, rng, after[-1], events[-1][0])
    others = sample([o for o, _ in events], 20, rng)
    expected |= topic_model.images_at([*late, *others])
    assert expected[events[-1][0]] == final_image, "the topic's last point is not the volume"
    # the points after the reopen follow a recorded session gap: the store may refuse them
    report = check_restores(store_url, name, expected, tmp_path / "r", must=must)
    assert report.restored
    store.close()
