"""The object store goes away for longer than the store's retry budget.

Real parts: the Tansu broker, S3 over HTTP (moto) reached through a TCP proxy, the worker
as a subprocess, a sync intercept. The budget is :class:`~connectors.store.retry.
RetryingStore`'s: 5 tries of each call with full-jitter sleeps of at most 0.1, 0.2, 0.4
and 0.8 s between them (1.5 s in all). While windows are durable the proxy is switched to
refuse every connection (the endpoint is unreachable) or to answer every request with
``503 SlowDown`` (the endpoint throttles), and the intercept keeps writing. The worker
must use up the budget, then exit loudly with the object-store exit code (4) and commit
nothing past the durable windows; the store must hold no window that names a missing or
bad object. After the endpoint is back a restarted worker must complete the history
exactly: no gap, an unbroken exact chain, and restores equal to the acknowledged writes.
"""

from __future__ import annotations

import random
import time
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
    TcpProxy,
    assert_committed_within_durable,
    assert_history_exact,
    durable_end,
    read_partition,
    volume_events,
    wait_durable,
    wait_exit,
    worker,
)
from tests.fixtures.s3 import BUCKET

SIZE = MiB
VOLUME = "outage"
#: the longest the worker may take to give up once a window is due (1 s window, 0.5 s
#: grace, the retry budget, process start-up noise on a loaded machine)
EXIT_BOUND = 45.0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["refuse", "throttle"])
def test_store_outage_past_the_retry_budget_exits_4_and_resumes_exact(
    bootstrap: str, s3_endpoint: str, tmp_path: Path, fault: str
) -> None:
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1})
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    proxy = TcpProxy(s3_endpoint)
    query = "secure=false&region=us-east-1"
    url = f"s3://{BUCKET}/{prefix}?endpoint={proxy.endpoint}&{query}"
    direct = open_store(f"s3://{BUCKET}/{prefix}?endpoint={s3_endpoint}&{query}")
    workdir = tmp_path / "worker"
    writer = SyncWriter(
        InterceptedVolume(
            tmp_path / "vol.img", VOLUME, SIZE, bootstrap_servers=bootstrap, topic=topic
        ),
        random.Random(fault),
    )
    try:
        with worker(bootstrap, url, topic, workdir) as w1:
            w1.wait_ready()
            writer.burst(120)
            wait_durable(direct, VOLUME, writer.offsets[-1], w1, 60)
            durable_before = durable_end(direct, VOLUME)

            proxy.set_mode(fault)
            cut = time.monotonic()
            writer.burst(120)  # Kafka still takes them: they are acknowledged
            code = wait_exit(w1, EXIT_BOUND)
            took = time.monotonic() - cut
        log = w1.log_path.read_text(errors="replace")
        assert code == 4, f"worker exit {code} after the store went away:\n{w1.log_tail(30)}"
        assert "increments worker failed" in log
        assert "attempt 4 of 5" in log, "the worker gave up before using the retry budget"
        assert took < EXIT_BOUND
        # nothing is committed or announced past what is durable, and what is in the
        # store is whole: every window's objects exist and match their digests
        events = volume_events(read_partition(bootstrap, topic), VOLUME)
        assert durable_end(direct, VOLUME) >= durable_before
        assert_committed_within_durable(bootstrap, topic, direct, VOLUME, [o for o, _ in events])
        report = verify_volume(direct, VOLUME, read_data=True)
        assert report.problems == [], report.to_text()

        proxy.set_mode("open")
        with worker(bootstrap, url, topic, workdir) as w2:
            writer.burst(60)
            writer.volume.close()
            events = volume_events(read_partition(bootstrap, topic), VOLUME)
            wait_durable(direct, VOLUME, events[-1][0], w2, 90)
        assert w2.proc is not None and w2.proc.returncode == 0, w2.log_tail(30)
        assert_history_exact(
            direct,
            direct.url,
            VOLUME,
            writer.model,
            events,
            tmp_path / "restores",
            acked=writer.offsets,
        )
    finally:
        writer.volume.close()
        proxy.close()
        direct.close()
