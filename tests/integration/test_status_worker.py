"""``kcdp status --json`` and ``/metrics`` with a running worker (real Tansu, S3 over HTTP).

A volume is written through ``InterceptedVolume`` while no worker runs: status reports the
writes as captured but not durable, with a positive RPO. Then a ``kcdp worker`` subprocess
(1 s windows, short session timeouts) starts; once it catches up, status reports every
event durable and the RPO back under the window length, and the worker's ``/metrics``
report the volume's RPO, windows, increment bytes, dead letters and lag.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from confluent_kafka import Producer

from connectors.cli import main as kcdp
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics, producer_config
from connectors.status import StatusReader
from connectors.status_figures import VolumeStatus
from connectors.store import open_store
from infra.broker import free_port
from schemas.codec import AvroCodec
from schemas.events import EventKind, now_us
from streams.options import WorkerOptions
from streams.window import WindowPolicy
from tests.event_factory import make_event
from tests.fixtures.s3 import BUCKET
from tests.status_support import Topic, Writer
from tests.worker_process import WorkerProcess, metric_values

WINDOW_SECONDS = 1.0
VOLUME = "statusvol"
GAP_VOLUME = "gapvol"
SIZE = 8 << 20
GROUP_ID = WorkerOptions(workdir=Path("."), policy=WindowPolicy.default()).group_id
#: metric families the issue asks for, as sample names
METRICS = (
    "kcdp_rpo_seconds",
    "kcdp_lag_events",
    "kcdp_lag_bytes",
    "kcdp_window_bytes_count",
    "kcdp_window_duration_seconds_count",
    "kcdp_increment_bytes_total",
    "kcdp_checkpoint_age_seconds",
    "kcdp_dlq_events_total",
    "kcdp_gaps_total",
    "kcdp_committed_offset",
)
T = TypeVar("T")


@dataclass
class Setup:
    bootstrap: str
    store_url: str
    topic: str
    worker: WorkerProcess
    last_offset: int
    before: VolumeStatus

    def common(self) -> list[str]:
        return [
            "--bootstrap-servers",
            self.bootstrap,
            "--store",
            self.store_url,
            "--topic",
            self.topic,
        ]

    def status(self, volume: str = VOLUME) -> VolumeStatus:
        store = open_store(self.store_url)
        try:
            [found] = StatusReader(
                store,
                kafka_conf={"bootstrap.servers": self.bootstrap},
                group_id=GROUP_ID,
                topic=self.topic,
            ).volumes([volume])
        finally:
            store.close()
        return found


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    """Poll ``probe`` until it returns a value (not None), within a generous bound."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.5)


def poison(bootstrap: str, topic: str) -> None:
    """An event of the volume that breaks a rule (bad CRC) from another session."""
    ev = make_event(
        EventKind.WRITE,
        0,
        b"evil",
        volume=VOLUME,
        timestamp_us=now_us(),
        volume_size=SIZE,
        session="p" * 32,
        sealed=False,
    )
    ev.crc32c = 1  # not the data's CRC: the rule it breaks
    p = Producer(producer_config({"bootstrap.servers": bootstrap}))
    p.produce(topic, key=VOLUME.encode(), value=AvroCodec().encode(ev.to_record()))
    assert p.flush(10) == 0


@pytest.fixture(scope="module")
def setup(bootstrap: str, s3_endpoint: str, tmp_path_factory: Any) -> Iterator[Setup]:
    tmp: Path = tmp_path_factory.mktemp("status-worker")
    topic = f"sw-{uuid.uuid4().hex[:8]}"
    store_url = (
        f"s3://{BUCKET}/sw-{uuid.uuid4().hex[:8]}?endpoint={s3_endpoint}"
        "&secure=false&region=us-east-1"
    )
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1, "kcdp.writes.dlq": 1})
    vol = InterceptedVolume(tmp / "vol.img", VOLUME, SIZE, bootstrap_servers=bootstrap, topic=topic)
    worker = WorkerProcess(
        bootstrap=bootstrap,
        store_url=store_url,
        topic=topic,
        workdir=tmp / "worker",
        web_port=free_port(),
        window_seconds=WINDOW_SECONDS,
        extra=("--checkpoint-windows", "1"),
    )
    with vol:
        for i in range(20):
            last = vol.write(i * 4096 + 7, os.urandom(3000))
        poison(bootstrap, topic)
        gaps = Writer(Topic(bootstrap, topic, "kcdp.writes.dlq"), GAP_VOLUME, size=SIZE)
        gaps.start()
        gaps.write(0, b"before")
        gaps.seq += 3  # three events never arrive: a sequence gap ...
        for k in range(4):  # ... that the writes after it confirm (FORMAT.md "Quarantine")
            gaps.write(4096 * (k + 1), b"after")
        s = Setup(bootstrap, store_url, topic, worker, last, None)  # type: ignore[arg-type]
        s.before = s.status()  # nothing durable yet: no worker runs
        with worker:
            worker.wait_ready(timeout=120)
            yield s


def test_status_reports_the_gap(setup: Setup) -> None:
    g = eventually(
        lambda: (lambda s: s if s.gaps else None)(setup.status(GAP_VOLUME)),
        "the worker records the sequence gap",
    )
    assert [gap["kind"] for gap in g.gaps] == ["sequence"]


def test_status_before_the_worker_runs(setup: Setup) -> None:
    b = setup.before
    assert b.last_captured_offset == setup.last_offset
    assert b.last_durable_offset is None and b.windows == 0
    assert b.lag_events == 23  # SESSION_START, BASELINE_START, BASELINE_END + 20 writes
    assert b.lag_bytes == 20 * 3000
    assert b.rpo_seconds > 0
    assert b.oldest_point is None and b.newest_point is None


def caught_up(setup: Setup) -> VolumeStatus | None:
    s = setup.status()
    return s if s.last_durable_offset == setup.last_offset and s.lag_events == 0 else None


def test_status_after_the_worker_caught_up(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    s = eventually(lambda: caught_up(setup), "the worker makes every write durable")
    assert s.rpo_seconds < WINDOW_SECONDS
    assert s.windows >= 1 and s.newest_point == setup.last_offset
    assert s.oldest_point is not None and s.oldest_point <= setup.last_offset
    assert s.bytes_stored > 20 * 3000  # at least the forward increment's and log's data
    assert s.gaps == []
    eventually(lambda: setup.status().dlq_events == 1 or None, "the poison event is dead-lettered")
    # the CLI prints the same figures as JSON
    metrics = f"http://127.0.0.1:{setup.worker.web_port}/metrics"
    live = ["--worker-metrics", metrics]
    assert kcdp(["status", "--json", "--group-id", GROUP_ID, *live, *setup.common(), VOLUME]) == 0
    [doc] = orjson.loads(capsys.readouterr().out)
    assert doc["volume"] == VOLUME
    assert doc["last_durable_offset"] == setup.last_offset
    assert doc["lag_events"] == 0 and doc["rpo_seconds"] < WINDOW_SECONDS
    assert doc["dlq_events"] == 1
    assert doc["dlq_by_reason"] == {"InvalidEventError": 1}  # the poison's bad CRC
    assert doc["fenced_sessions"] == []
    assert doc["quarantined"] == 0 and doc["reread_found"] == 0  # from the worker
    # a worker that cannot be read is an error, not a status without it
    assert kcdp(["status", "--worker-metrics", "http://127.0.0.1:1/metrics", *setup.common()]) == 5
    assert doc["worker"]["group_id"] == GROUP_ID


def test_worker_group_health(setup: Setup) -> None:
    eventually(lambda: caught_up(setup), "the worker makes every write durable")
    w = eventually(
        lambda: (lambda h: h if h.committed_offset is not None else None)(setup.status().worker),
        "the worker commits an offset in its consumer group",
    )
    assert w.group_id == GROUP_ID
    assert w.committed_offset is not None and w.committed_offset <= w.high_watermark
    assert w.state in ("running", "unknown")


def test_metrics_report_the_volume(setup: Setup) -> None:
    eventually(lambda: caught_up(setup), "the worker makes every write durable")
    label = (("volume", VOLUME),)

    def rpo_low() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        found = metric_values(setup.worker.metrics_text())
        rpo = found.get(("kcdp_rpo_seconds", label))
        return found if rpo is not None and rpo < WINDOW_SECONDS else None

    m = eventually(rpo_low, "kcdp_rpo_seconds{volume} falls under the window length")
    names = {name for name, _ in m}
    for wanted in METRICS:
        assert wanted in names, f"/metrics lacks {wanted}"
