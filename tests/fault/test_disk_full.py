"""Disk full: on a ``file://`` store, and on the worker's scratch directory (``--workdir``).

Real parts: the Tansu broker, the worker as a subprocess, a sync intercept, and a tmpfs of
a few MiB (mounted as root) that is filled to the last byte while windows are durable and
the intercept keeps writing. The worker must exit loudly: with the object-store exit code
(4) when the store is full — ENOSPC is retriable, so after the store's retry budget — and
with the volume/backing-file exit code (9) when its scratch directory is full (connectors/
errors.py EXIT_CODES). Nothing may be committed past the durable windows, and every stored
window must still verify. Once space is freed, a restarted worker must complete the
history exactly: no gap, an unbroken exact chain, restores equal to the acknowledged writes.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.restore.verify import verify_volume
from connectors.store import open_store
from tests.fault.support import (
    MiB,
    SyncWriter,
    assert_committed_within_durable,
    assert_history_exact,
    fill,
    free_bytes,
    read_partition,
    tmpfs,
    volume_events,
    wait_durable,
    wait_exit,
    worker,
)

SIZE = MiB
FS_SIZE = "12m"
#: the longest the worker may take to give up once a window is due (1 s windows, the
#: store's retry budget of 1.5 s of sleeps, a loaded machine)
EXIT_BOUND = 45.0


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("full", "exit_code"), [("store", 4), ("workdir", 9)])
def test_disk_full_exits_loudly_and_resumes_exact_once_space_is_freed(
    bootstrap: str, tmp_path: Path, full: str, exit_code: int
) -> None:
    topic = f"full-{full}-{uuid.uuid4().hex[:8]}"
    volume = f"full-{full}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    with tmpfs(tmp_path / "tiny", FS_SIZE) as tiny:
        store_dir = (tiny if full == "store" else tmp_path) / "store"
        store_url = f"file://{store_dir}"
        store = open_store(store_url)
        extra = ["--workdir", str(tiny / "work")] if full == "workdir" else []
        writer = SyncWriter(
            InterceptedVolume(
                tmp_path / "vol.img", volume, SIZE, bootstrap_servers=bootstrap, topic=topic
            ),
            random.Random(full),
        )
        try:
            with worker(bootstrap, store_url, topic, tmp_path / "w", extra=extra) as w1:
                w1.wait_ready()
                writer.burst(100)
                wait_durable(store, volume, writer.offsets[-1], w1, 60)
                filler = fill(tiny)
                assert free_bytes(tiny) == 0
                writer.burst(100)  # Kafka still takes them: they are acknowledged
                code = wait_exit(w1, EXIT_BOUND)
            log = w1.log_path.read_text(errors="replace")
            assert code == exit_code, f"worker exit {code} on a full {full}:\n{w1.log_tail(30)}"
            assert "increments worker failed" in log and "No space left on device" in log
            if full == "store":
                assert "attempt 4 of 5" in log, "the worker gave up before the retry budget"
            events = volume_events(read_partition(bootstrap, topic), volume)
            assert_committed_within_durable(bootstrap, topic, store, volume, [o for o, _ in events])
            report = verify_volume(store, volume, read_data=True)
            assert report.problems == [], report.to_text()

            filler.unlink()
            with worker(bootstrap, store_url, topic, tmp_path / "w", extra=extra) as w2:
                writer.burst(50)
                writer.volume.close()
                events = volume_events(read_partition(bootstrap, topic), volume)
                wait_durable(store, volume, events[-1][0], w2, 90)
            assert w2.proc is not None and w2.proc.returncode == 0, w2.log_tail(30)
            assert_history_exact(
                store,
                store_url,
                volume,
                writer.model,
                events,
                tmp_path / "restores",
                acked=writer.offsets,
            )
        finally:
            writer.volume.close()
            store.close()
