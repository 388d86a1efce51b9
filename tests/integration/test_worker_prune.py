"""``kcdp worker --prune-interval``: the worker prunes the volumes of its partitions on a
timer while it keeps windowing (real broker, real worker process, file store), exports
the retention metrics, and what it keeps restores exactly."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.restore.catalog import Catalog
from connectors.restore.materialize import restore_point
from connectors.store import open_store
from infra.broker import free_port
from schemas.retention import load_retention
from tests.worker_process import WorkerProcess, metric_values

VOLUME = "prunevol"
SIZE = 1 << 20


def test_the_worker_prunes_its_volumes_on_a_timer(bootstrap: str, tmp_path: Path) -> None:
    topic = f"wp-{uuid.uuid4().hex[:8]}"
    store_url = f"file://{tmp_path / 'store'}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1, "kcdp.writes.dlq": 1})
    worker = WorkerProcess(
        bootstrap=bootstrap,
        store_url=store_url,
        topic=topic,
        workdir=tmp_path / "worker",
        web_port=free_port(),
        window_seconds=0.5,
        extra=(
            "--checkpoint-windows",
            "2",
            "--prune-interval",
            "1",
            "--keep-within",
            "2s",
            "--grace",
            "1s",
            "--base-slack",
            "0",  # the base moves at the first prune that drops a window
            "--unsafe-grace",
            "--store-processes",
            "0",
        ),
    )
    image = bytearray(SIZE)
    last = -1
    with (
        InterceptedVolume(
            tmp_path / "vol.img", VOLUME, SIZE, bootstrap_servers=bootstrap, topic=topic
        ) as vol,
        worker,
    ):
        worker.wait_ready(timeout=120)
        for i in range(24):  # ~6 s of writes: windows leave the 2 s journal while it runs
            data = os.urandom(2000)
            at = (i * 7919) % (SIZE - 2000)
            last = vol.write(at, data)
            image[at : at + len(data)] = data
            time.sleep(0.25)
        deadline = time.monotonic() + 60
        found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        store = open_store(store_url)
        while time.monotonic() < deadline:
            found = metric_values(worker.metrics_text())
            state = load_retention(store, VOLUME)
            history = found.get(("kcdp_history_seconds", (("volume", VOLUME),)))
            pruned = state is not None and state.base is not None and history is not None
            windows = Catalog(store, VOLUME).windows
            if pruned and windows and windows[-1].last >= last:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no prune within 60 s:\n{worker.log_tail()}")
    assert found[("kcdp_history_target_seconds", (("volume", VOLUME),))] == 2.0
    assert ("kcdp_stored_bytes", (("tier", "any-point"), ("volume", VOLUME))) in found
    assert found[("kcdp_prune_last_success_timestamp_seconds", (("volume", VOLUME),))] > 0
    assert found.get(("kcdp_prune_failures_total", (("volume", VOLUME),)), 0.0) == 0.0
    catalog = Catalog(store, VOLUME)
    newest = catalog.latest()
    assert newest >= last
    out = tmp_path / "latest.img"
    restore_point(store, catalog, newest, out, progress=False)
    assert out.read_bytes() == bytes(image)
    store.close()
