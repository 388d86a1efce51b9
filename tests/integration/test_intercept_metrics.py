"""The intercept's own Prometheus metrics, scraped over HTTP from a real capture: through
the Python API (``metrics_port``) on the session broker and on a broker of the test's own
that freezes (SIGSTOP) and then goes away, and from ``kcdp intercept nbd --metrics-port``
(the nbdkit plugin's process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.errors import ConfigError, DeliveryError
from connectors.intercept import InterceptedVolume
from infra.broker import EmbeddedBroker, free_port

KCDP = str(Path(sys.executable).with_name("kcdp"))
GAUGES = (
    "kcdp_intercept_in_flight_bytes",
    "kcdp_intercept_in_flight_events",
    "kcdp_intercept_max_in_flight_bytes",
)
COUNTERS = (
    "kcdp_intercept_events_total",
    "kcdp_intercept_published_bytes_total",
    "kcdp_intercept_delivery_failures_total",
    "kcdp_intercept_ack_latency_seconds_count",
    "kcdp_intercept_ack_latency_seconds_sum",
)


def scrape(host: str, port: int, volume: str) -> dict[str, float]:
    """The volume's samples at ``http://host:port/metrics`` (name -> value; buckets by le)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("volume") != volume:
                continue
            name = s.name + (f"[{s.labels['le']}]" if "le" in s.labels else "")
            out[name] = s.value
    return out


def new_topic() -> str:
    return f"test.metrics.{uuid.uuid4().hex[:10]}"


def test_metrics_appear_and_move_with_sync_writes(bootstrap: str, tmp_path: Path) -> None:
    with InterceptedVolume(
        tmp_path / "m.img",
        "m",
        1 << 20,
        bootstrap_servers=bootstrap,
        topic=new_topic(),
        metrics_port=0,
        max_in_flight_bytes=8 << 20,
    ) as vol:
        assert vol.metrics_address is not None
        host, port = vol.metrics_address
        vol.flush()  # the session's opening events are acknowledged
        before = scrape(host, port, "m")
        assert set(GAUGES) | set(COUNTERS) <= set(before), sorted(before)
        assert before["kcdp_intercept_max_in_flight_bytes"] == 8 << 20
        for i in range(5):
            vol.write(i * 4096, os.urandom(4096))
        after = scrape(host, port, "m")
    assert after["kcdp_intercept_events_total"] - before["kcdp_intercept_events_total"] == 5
    sent = (
        after["kcdp_intercept_published_bytes_total"]
        - before["kcdp_intercept_published_bytes_total"]
    )
    assert 5 * 4096 < sent < 5 * 4096 + 5 * 1024  # data plus each event's envelope
    acks = after["kcdp_intercept_ack_latency_seconds_count"]
    assert acks - before["kcdp_intercept_ack_latency_seconds_count"] == 5
    assert acks == after["kcdp_intercept_events_total"]  # every acknowledgement timed
    assert after["kcdp_intercept_ack_latency_seconds_bucket[+Inf]"] == acks
    assert (
        after["kcdp_intercept_ack_latency_seconds_sum"]
        > before["kcdp_intercept_ack_latency_seconds_sum"]
    )
    assert after["kcdp_intercept_in_flight_bytes"] == 0  # sync: each write waited
    assert after["kcdp_intercept_in_flight_events"] == 0
    assert after["kcdp_intercept_delivery_failures_total"] == 0
    with pytest.raises(urllib.error.URLError):  # closing the volume stops the endpoint
        scrape(host, port, "m")


def test_in_flight_while_the_broker_is_frozen_then_a_failure(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    port = free_port()
    vol = InterceptedVolume(
        tmp_path / "f.img",
        "f",
        1 << 20,
        bootstrap_servers=fresh_broker.bootstrap_servers,
        topic=new_topic(),
        mode="async",
        delivery_timeout=4.0,
        metrics_port=port,
    )
    try:
        vol.flush()
        base = scrape("127.0.0.1", port, "f")
        assert fresh_broker.proc is not None
        os.killpg(fresh_broker.proc.pid, signal.SIGSTOP)
        try:
            for i in range(8):
                vol.write(i * 8192, os.urandom(8192))
            frozen = scrape("127.0.0.1", port, "f")
            assert frozen["kcdp_intercept_in_flight_events"] == 8
            assert 8 * 8192 < frozen["kcdp_intercept_in_flight_bytes"] < 8 * 9216
            assert frozen["kcdp_intercept_events_total"] == base["kcdp_intercept_events_total"]
        finally:
            os.killpg(fresh_broker.proc.pid, signal.SIGCONT)
        vol.flush()
        thawed = scrape("127.0.0.1", port, "f")
        assert thawed["kcdp_intercept_in_flight_bytes"] == 0
        assert thawed["kcdp_intercept_events_total"] == base["kcdp_intercept_events_total"] + 8
        assert thawed["kcdp_intercept_delivery_failures_total"] == 0

        fresh_broker.stop()
        vol.write(0, b"never acknowledged")
        with pytest.raises(DeliveryError):
            vol.flush()
        failed = scrape("127.0.0.1", port, "f")
        assert failed["kcdp_intercept_delivery_failures_total"] >= 1
        assert failed["kcdp_intercept_in_flight_bytes"] == 0  # failed records left flight
        assert failed["kcdp_intercept_events_total"] == thawed["kcdp_intercept_events_total"]
    finally:
        vol.close()  # after a failure: no flush, the state stays unclean


def test_metrics_port_in_use_is_a_configuration_error(bootstrap: str, tmp_path: Path) -> None:
    with InterceptedVolume(
        tmp_path / "a.img",
        "a",
        65536,
        bootstrap_servers=bootstrap,
        topic=new_topic(),
        metrics_port=0,
    ) as first:
        assert first.metrics_address is not None
        taken = first.metrics_address[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
            InterceptedVolume(
                tmp_path / "b.img",
                "b",
                65536,
                bootstrap_servers=bootstrap,
                topic=new_topic(),
                metrics_port=taken,
            )
    assert not (tmp_path / "b.img.kcdp.sock").exists()


def test_intercept_nbd_serves_metrics(bootstrap: str, tmp_path: Path) -> None:
    topic, backing, port = new_topic(), tmp_path / "nbd.img", free_port()
    common = ["--bootstrap-servers", bootstrap, "--topic", topic, "--state-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [
            KCDP,
            *common,
            "intercept",
            "nbd",
            "nbdvol",
            "--backing",
            str(backing),
            "--size",
            "2M",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        assert uri.startswith("nbd+unix://"), proc.stderr.read() if proc.stderr else ""
        before = _scrape_soon(port, "nbdvol")
        subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 65536", "-c", "flush", uri],
            check=True,
            capture_output=True,
            timeout=60,
        )
        after = scrape("127.0.0.1", port, "nbdvol")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert after["kcdp_intercept_events_total"] > before["kcdp_intercept_events_total"]
    assert (
        after["kcdp_intercept_published_bytes_total"]
        >= before["kcdp_intercept_published_bytes_total"] + 65536
    )
    assert after["kcdp_intercept_in_flight_bytes"] == 0  # flushed
    assert after["kcdp_intercept_max_in_flight_bytes"] > 0


def _scrape_soon(port: int, volume: str, timeout: float = 30.0) -> dict[str, float]:
    """The first scrape that answers (the plugin serves once its volume is open)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape("127.0.0.1", port, volume)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
