"""kill -9 the ``kcdp worker`` mid-stream, restart it, and check the stored history.

Real parts: the Tansu broker, S3 over HTTP (moto), the worker as a subprocess. Two volumes
share one partition; the worker is killed with SIGKILL while it is building windows (twice,
once also losing its images so it must rebuild them from checkpoints; its
window-storing child processes must die with it), then restarted. Afterwards each
volume's manifests must form one unbroken chain with no gap record and no duplicate or
overlapping window, and every window's forward and backward increment must be exact
against a model of the volume.
"""

from __future__ import annotations

import random
import shutil
import signal
import uuid
from pathlib import Path

import orjson

from connectors.store import ObjectStore, open_store
from infra.broker import free_port
from schemas.codec import AvroCodec
from schemas.events import WriteEvent
from schemas.gaps import list_gaps
from schemas.manifest import list_window_keys
from tests.streams_support import (
    Volume,
    check_chain,
    produce,
    random_writes,
    states_after,
    wait_for,
)
from tests.worker_process import WorkerProcess, alive, child_pids

SIZE = 1 << 20
PER_PHASE = 1500


def test_kill_9_and_restart_keeps_an_exact_unbroken_chain(
    bootstrap: str, s3_url: str, tmp_path: Path
) -> None:
    from connectors.kafka import ensure_topics

    rng = random.Random(7)
    topic = f"kill-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    vols = [Volume("ka", SIZE), Volume("kb", SIZE)]
    codec = AvroCodec()
    events: list[WriteEvent] = [*vols[0].start(), *vols[1].start()]
    events += random_writes(vols, rng, PER_PHASE, SIZE)
    where = produce(
        bootstrap, topic, [(e.group.encode(), codec.encode(e.to_record())) for e in events]
    )
    store = open_store(s3_url)
    workdir = tmp_path / "w"
    flags = [
        "--group-id",
        f"g-{topic}",
        "--window-count",
        "40",
        "--batch-size",
        "100",
        "--checkpoint-windows",
        "4",
        "--session-timeout",
        "6",
    ]

    def worker() -> WorkerProcess:
        return WorkerProcess(
            bootstrap=bootstrap,
            store_url=s3_url,
            topic=topic,
            workdir=workdir,
            web_port=free_port(),
            window_seconds=1.0,
            extra=flags,
        )

    def windows(volume: str) -> int:
        return len(list_window_keys(store, volume))

    def kill_after(w: WorkerProcess, volume: str, more_than: int) -> None:
        w.start()
        try:
            wait_for(
                lambda: windows(volume) > more_than,
                f"{volume} has > {more_than} windows",
                90,
                interval=0.02,
            )
        finally:
            assert w.proc is not None
            kids = child_pids(w.proc.pid)
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(10)
        # its window-storing child processes die with it: no orphan writes objects or the
        # image while the restarted worker resumes
        assert len(kids) >= 2, kids
        wait_for(lambda: not any(map(alive, kids)), "the worker's children are gone", 10, 0.05)

    kill_after(worker(), "ka", 0)
    first_kill = windows("ka")
    phase1_last = max(o for e, (_, o) in zip(events, where, strict=True) if e.volume == "ka")
    # killed mid-stream: the durable history stops short of the produced events
    assert list_window_keys(store, "ka")[-1][1] < phase1_last
    events2 = random_writes(vols, rng, PER_PHASE, SIZE)
    where += produce(
        bootstrap, topic, [(e.group.encode(), codec.encode(e.to_record())) for e in events2]
    )
    events += events2
    kill_after(worker(), "ka", first_kill + 1)
    shutil.rmtree(workdir / "state" / "worker" / "images", ignore_errors=True)  # lose the replicas
    last = {
        v.name: max(o for e, (_, o) in zip(events, where, strict=True) if e.volume == v.name)
        for v in vols
    }
    w = worker()
    with w:

        def done() -> bool:
            return all(
                (keys := list_window_keys(store, v.name)) and keys[-1][1] == last[v.name]
                for v in vols
            )

        wait_for(done, "every event is in a durable window", 120)
    log = w.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "2 volume(s) resumed" in log  # the restarts resumed from the store
    for v in vols:
        mine = [(e, o) for e, (_, o) in zip(events, where, strict=True) if e.volume == v.name]
        states = states_after([e for e, _ in mine], [o for _, o in mine], SIZE)
        manifests = check_chain(store, v.name, SIZE, states)
        assert manifests[0].first_offset == mine[0][1]
        assert sum(m.events for m in manifests) == len(mine)  # no event twice, none lost
        assert all(m.consistent for m in manifests)
        assert list_gaps(store, v.name) == []
    assert any(k.key.endswith(".json") for k in store.list("v1/volumes/ka/checkpoints/"))
    # determinism: a fresh worker over the same log (with the TICKs the first one wrote)
    # builds the same windows, byte for byte, without any crash
    fresh_url = f"file://{tmp_path / 'fresh'}"
    fresh = open_store(fresh_url)
    again = WorkerProcess(
        bootstrap=bootstrap,
        store_url=fresh_url,
        topic=topic,
        workdir=tmp_path / "again",
        web_port=free_port(),
        window_seconds=1.0,
        extra=[*flags[:1], f"g2-{topic}", *flags[2:]],
    )
    with again:
        wait_for(
            lambda: all(
                (k := list_window_keys(fresh, v.name)) and k[-1][1] == last[v.name] for v in vols
            ),
            "the fresh worker catches up",
            120,
        )
    for v in vols:
        assert comparable(fresh, v.name) == comparable(store, v.name)
    fresh.close()
    store.close()


def comparable(store: ObjectStore, volume: str) -> dict[str, object]:
    """A volume's stored windows and checkpoints, without wall-clock fields (and the
    digests and head time that depend on them)."""
    out: dict[str, object] = {}
    for info in store.list(f"v1/volumes/{volume}/"):
        data = store.get(info.key)
        if info.key.endswith(".json"):
            doc = orjson.loads(data)
            doc.pop("created_us", None)
            doc.pop("detected_us", None)
            # format 2 digests cover created_us: they differ between runs too
            for name in ("digest", "window_digest", "updated_us"):
                doc.pop(name, None)
            if isinstance(doc.get("previous"), dict):
                doc["previous"].pop("digest", None)
            out[info.key] = doc
        else:
            out[info.key] = data
    return out


def test_worker_exits_loudly_on_a_corrupt_store(bootstrap: str, tmp_path: Path) -> None:
    """A manifest that does not parse stops the worker with the integrity exit code."""
    from connectors.kafka import ensure_topics
    from schemas import keys

    topic = f"bad-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    store_url = f"file://{tmp_path / 'store'}"
    store = open_store(store_url)
    store.put(keys.partition_marker_key(topic, 0, "vx"), b"")
    store.put(keys.manifest_key("vx", 0, 1), b"not a manifest")
    store.close()
    w = WorkerProcess(
        bootstrap=bootstrap,
        store_url=store_url,
        topic=topic,
        workdir=tmp_path / "w",
        web_port=free_port(),
        extra=["--group-id", f"g-{topic}"],
    )
    with w:
        assert w.proc is not None
        code = w.proc.wait(90)
    log = w.log_path.read_text(errors="replace")
    assert code == 6, log[-2000:]
    assert "increments worker failed" in log and "not JSON" in log
