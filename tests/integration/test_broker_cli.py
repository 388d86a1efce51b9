"""``kcdp broker`` as a real subprocess: serves Avro events, stops on signals, leaves no process."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors import __version__
from connectors.kafka import partition_count, producer_config
from connectors.store import open_store
from infra.broker import free_port
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent, crc32c

KCDP = str(Path(sys.executable).parent / "kcdp")
START_TIMEOUT = 45.0


class BrokerCommand:
    """A running ``kcdp broker`` subprocess and the address it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [KCDP, "broker", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def pump() -> None:
            for x in stdout:
                lines.put(x)

        threading.Thread(target=pump, daemon=True).start()
        try:
            self.first_line = lines.get(timeout=START_TIMEOUT).strip()
        except queue.Empty:
            self.kill()
            raise AssertionError(f"kcdp broker printed nothing: {self.stderr()}") from None
        key, _, self.bootstrap = self.first_line.partition("=")
        assert key == "bootstrap.servers", self.first_line

    def tansu_children(self) -> list[int]:
        """Pids of the broker's child processes (read from /proc)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                found.append(int(entry))
        return found

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        """Stop the command (SIGTERM, then SIGKILL) and reap it; idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cli_broker() -> Iterator[BrokerCommand]:
    b = BrokerCommand("--port", "0", "--create-topics", "--partitions", "3")
    try:
        yield b
    finally:
        children = b.tansu_children()
        b.kill()
        assert not [pid for pid in children if _alive(pid)], "tansu outlived kcdp broker"


def test_prints_bootstrap_and_creates_topics(cli_broker: BrokerCommand) -> None:
    host, _, port = cli_broker.bootstrap.partition(":")
    assert host == "127.0.0.1" and int(port) > 0
    conf = {"bootstrap.servers": cli_broker.bootstrap}
    for topic in ("kcdp.writes", "kcdp.increments", "kcdp.writes.dlq"):
        assert partition_count(conf, topic) == 3, topic
    assert cli_broker.tansu_children(), "the broker should run as a child of kcdp"


def test_avro_write_event_round_trip(cli_broker: BrokerCommand) -> None:
    data = os.urandom(3000) + b"\x00" * 100
    # hand-built, not tests.event_factory: the round trip is about every field's encoding
    event = WriteEvent(
        group="db",
        volume="db",
        sequence=5,
        kind=EventKind.WRITE,
        timestamp_us=1_795_571_270_880_000,
        offset=12345,
        length=len(data),
        data=data,
        volume_size=1 << 20,
        crc32c=crc32c(data),
        session="ab" * 16,
        host="h",
    )
    codec = AvroCodec()
    producer = Producer(producer_config({"bootstrap.servers": cli_broker.bootstrap}))
    acks: list[tuple[int, int]] = []

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        acks.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer.produce(
        "kcdp.writes", key=b"db", value=codec.encode(event.to_record()), on_delivery=on_delivery
    )
    assert producer.flush(15) == 0
    assert len(acks) == 1
    partition, offset = acks[0]
    consumer = Consumer({"bootstrap.servers": cli_broker.bootstrap, "group.id": "t-broker-cli"})
    consumer.assign([TopicPartition("kcdp.writes", partition, offset)])
    got = None
    deadline = time.monotonic() + 15
    while got is None and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got = msg
    consumer.close()
    assert got is not None, "the event did not come back within 15 s"
    assert got.key() == b"db"
    value = got.value()
    assert value is not None
    decoded = WriteEvent.from_record(codec.decode(value))
    assert decoded == event
    decoded.validate()


def _produce_one(bootstrap: str, value: bytes) -> tuple[int, int]:
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    acks: list[tuple[int, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        acks.append((partition, offset))

    producer.produce("kcdp.writes", key=b"db", value=value, on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert len(acks) == 1
    return acks[0]


def _consume_one(bootstrap: str, partition: int, offset: int) -> bytes | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-broker-cli"})
    consumer.assign([TopicPartition("kcdp.writes", partition, offset)])
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return msg.value()
        return None
    finally:
        consumer.close()


def test_s3_storage_survives_a_restart(s3_endpoint: str) -> None:
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    open_store(
        f"s3://{bucket}?endpoint={s3_endpoint}&secure=false&region=us-east-1&create_bucket=true"
    ).close()
    env = dict(os.environ, AWS_ENDPOINT=f"http://{s3_endpoint}", AWS_ALLOW_HTTP="true")
    args = ("--port", str(free_port()), "--storage", f"s3://{bucket}/")
    first = BrokerCommand(*args, "--create-topics", "--partitions", "1", env=env)
    try:
        partition, offset = _produce_one(first.bootstrap, b"kept in S3")
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(20) == 0
    finally:
        first.kill()
    second = BrokerCommand(*args, env=env)
    try:
        assert _consume_one(second.bootstrap, partition, offset) == b"kept in S3"
    finally:
        second.kill()


def _stop_with(sig: signal.Signals) -> tuple[int, list[int], str]:
    b = BrokerCommand("--port", str(free_port()))
    children = b.tansu_children()
    assert children
    b.proc.send_signal(sig)
    try:
        code = b.proc.wait(20)
    finally:
        b.kill()
    return code, children, b.stderr()


def test_sigterm_stops_the_broker_and_leaves_no_process() -> None:
    code, children, _ = _stop_with(signal.SIGTERM)
    assert code == 0
    assert not [pid for pid in children if _alive(pid)], "tansu outlived kcdp broker"


def test_sigint_exits_130_and_leaves_no_process() -> None:
    code, children, _ = _stop_with(signal.SIGINT)
    assert code == 130
    assert not [pid for pid in children if _alive(pid)]


def test_broker_death_fails_the_command_with_exit_5() -> None:
    b = BrokerCommand("--port", "0")
    try:
        children = b.tansu_children()
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        code = b.proc.wait(20)
    finally:
        b.kill()
    assert code == 5
    assert "kcdp: error: the broker exited" in b.stderr()


def test_port_in_use_fails_with_exit_5(cli_broker: BrokerCommand) -> None:
    port = cli_broker.bootstrap.rpartition(":")[2]
    run = subprocess.run(
        [KCDP, "broker", "--port", port, "--start-timeout", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 5
    assert run.stdout == ""
    assert f"kcdp: error: cannot listen on 127.0.0.1:{port}: Address already in use" in (run.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "disk"], "--storage must be"),
        (["--port", "70000"], "--port must be between"),
        (["--partitions", "0"], "--partitions must be at least 1"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    run = subprocess.run([KCDP, "broker", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_help_and_version() -> None:
    help_run = subprocess.run([KCDP, "--help"], capture_output=True, text=True, timeout=60)
    assert help_run.returncode == 0
    assert help_run.stdout.startswith("usage: kcdp")
    for word in ("broker", "check", "--bootstrap-servers", "--store", "-X KEY=VALUE"):
        assert word in help_run.stdout
    broker_help = subprocess.run(
        [KCDP, "broker", "--help"], capture_output=True, text=True, timeout=60
    )
    assert broker_help.returncode == 0
    assert "--storage" in broker_help.stdout and "bootstrap.servers=" in broker_help.stdout
    version = subprocess.run([KCDP, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0
    assert version.stdout.strip() == f"kcdp {__version__}"


@pytest.mark.parametrize("cert", ["garbage", "missing"])
def test_tls_with_a_bad_certificate_fails_before_serving(tmp_path: Path, cert: str) -> None:
    """A certificate that cannot be loaded: exit 5 naming the file, no address printed,
    nothing left listening."""
    bad = tmp_path / "server.pem"
    if cert == "garbage":
        bad.write_text("not a certificate\n")
    port = free_port()
    res = subprocess.run(
        [KCDP, "broker", "--port", str(port), "--tls-cert", str(bad), "--tls-key", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 5, res.stderr
    assert res.stdout == ""
    assert f"cannot serve TLS with {bad}" in res.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again: no stunnel and no Tansu left on it
