"""The whole story on a secured broker, once on SASL/SCRAM and once on TLS (real endpoints).

``kcdp broker --sasl-users`` / ``--tls-cert/--tls-key`` runs Tansu behind the project's
secured front. Writes are captured through the intercept's API (and, separately, through its
NBD export driven by qemu-io) with the ``-X`` properties,
a ``kcdp worker`` subprocess (its Faust group client gets the same properties) windows
them, ``kcdp status`` reports them durable and ``kcdp restore`` lands byte-exact on random
offsets. Wrong credentials and an untrusted certificate fail fast (exit 5) with a clear
message; DEBUG logs, librdkafka's security debug included, carry no secret.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from connectors.cli import main as kcdp
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from infra.broker import free_port
from tests.fixtures.secure_broker import (
    KCDP,
    SCRAM_PASSWORD,
    SCRAM_USER,
    SecuredBroker,
    start_broker,
    stop_broker,
)
from tests.fixtures.tls import TlsFiles
from tests.worker_process import WorkerProcess

SIZE = 1 << 20
WRONG_PASSWORD = "Wrong-S3cr3t-pw-9d02"
#: a refused connection must fail well inside this (librdkafka would retry for minutes)
FAST = 12.0


@pytest.fixture(params=["scram", "tls"])
def secured(request: pytest.FixtureRequest) -> SecuredBroker:
    broker: SecuredBroker = request.getfixturevalue(f"{request.param}_broker")
    return broker


def _write_history(vol: InterceptedVolume, rng: random.Random) -> dict[int, bytes]:
    """Unaligned, overlapping writes; the volume's image after each, by Kafka offset."""
    images: dict[int, bytes] = {}
    for _ in range(24):
        offset = rng.randrange(0, SIZE - 70_000)
        data = rng.randbytes(rng.randrange(1, 65_536))
        last = vol.write(offset, data)
        images[last] = vol.read(0, SIZE)
    return images


def test_capture_window_status_restore_on_a_secured_broker(
    secured: SecuredBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"sec-{secured.kind}-{uuid.uuid4().hex[:8]}"
    volume = f"vol{secured.kind}"
    store = f"file://{tmp_path / 'store'}"
    ensure_topics(secured.conf(), {topic: 1, "kcdp.writes.dlq": 1, "kcdp.increments": 1})
    rng = random.Random(14)
    with InterceptedVolume(
        tmp_path / "vol.img",
        volume,
        SIZE,
        bootstrap_servers=secured.bootstrap,
        topic=topic,
        client_config=secured.props,
        control_socket=False,
    ) as vol:
        images = _write_history(vol, rng)
    last = max(images)
    group = f"g-{topic}"
    worker = WorkerProcess(
        bootstrap=secured.bootstrap,
        store_url=store,
        topic=topic,
        workdir=tmp_path / "worker",
        web_port=free_port(),
        window_seconds=1.0,
        extra=[
            *secured.x_args(),
            "--group-id",
            group,
            "--window-count",
            "5",
            "--session-timeout",
            "6",
        ],
    )
    common = [*secured.x_args(), "--store", store, "--topic", topic]
    with worker:
        worker.wait_ready(timeout=90)
        deadline = time.monotonic() + 90
        while True:
            capsys.readouterr()
            assert kcdp(["status", "--json", "--group-id", group, *common, volume]) == 0
            [doc] = orjson.loads(capsys.readouterr().out)
            durable = doc["last_durable_offset"]
            if durable is not None and durable == doc["last_captured_offset"] > last:
                break  # everything, SESSION_END after the last write included
            assert time.monotonic() < deadline, f"not durable: {doc}\n{worker.log_tail()}"
            time.sleep(1)
    assert doc["lag_events"] == 0 and doc["worker"]["uncommitted"] == 0
    assert doc["windows"] >= 4  # 24 writes and the session events in windows of 5
    for offset in [*rng.sample(sorted(images), 4), last]:
        out = tmp_path / f"restored-{offset}.img"
        code = kcdp(["restore", volume, "--to-offset", str(offset), "-o", str(out), *common])
        assert code == 0, capsys.readouterr().err
        assert out.read_bytes() == images[offset], f"restore at {offset} differs"


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCDP_", "KAFKA_"))}
    started = time.monotonic()
    run = subprocess.run(
        [KCDP, "--log-level", "DEBUG", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return run, time.monotonic() - started


def _assert_refused(run: subprocess.CompletedProcess[str], took: float, *words: str) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == 5, output[-3000:]
    assert took < FAST, f"took {took:.1f}s"
    for secret in (WRONG_PASSWORD, SCRAM_PASSWORD):
        assert secret not in output and secret[-10:] not in output, "a secret leaked"
    assert "Traceback" not in output
    # a command's one error line; kcdp check reports in its table instead
    error = [line for line in run.stderr.splitlines() if line.startswith("kcdp: error:")]
    error += [line for line in run.stdout.splitlines() if "kafka  FAILED" in line]
    assert error, output[-3000:]
    for word in words:
        assert word in error[-1], error[-1]


COMMANDS = {
    "check": ["check", "--timeout", "10"],
    "worker": ["worker", "--session-timeout", "6"],
    "status": ["status", "vol"],
    "replica": ["replica", "vol", "-o", "replica.img", "--partition", "0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_wrong_password_fails_fast_without_the_secret(
    scram_broker: SecuredBroker, tmp_path: Path, command: str
) -> None:
    args = [*COMMANDS[command], "--state-dir", str(tmp_path), "--store", f"file://{tmp_path}"]
    run, took = _run(
        [
            *args,
            *scram_broker.x_args(**{"sasl.password": WRONG_PASSWORD}),
            "-X",
            "debug=security,broker,conf",
        ]
    )
    _assert_refused(run, took, "SASL credentials")
    if command == "check":
        assert "kafka  FAILED" in run.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_untrusted_certificate_fails_fast(
    tls_broker: SecuredBroker, tls_files: TlsFiles, tmp_path: Path, command: str
) -> None:
    args = [*COMMANDS[command], "--state-dir", str(tmp_path), "--store", f"file://{tmp_path}"]
    run, took = _run([*args, *tls_broker.x_args(**{"ssl.ca.location": str(tls_files.other_ca)})])
    _assert_refused(run, took, "TLS handshake failed")


def test_intercept_api_refuses_wrong_password(scram_broker: SecuredBroker, tmp_path: Path) -> None:
    from connectors.errors import BrokerError

    started = time.monotonic()
    with pytest.raises(BrokerError, match="SASL credentials") as caught:
        InterceptedVolume(
            tmp_path / "v.img",
            "refused",
            SIZE,
            bootstrap_servers=scram_broker.bootstrap,
            client_config={**scram_broker.props, "sasl.password": WRONG_PASSWORD},
            control_socket=False,
        )
    assert time.monotonic() - started < FAST
    assert WRONG_PASSWORD not in str(caught.value)
    assert caught.value.exit_code == 5


def test_plaintext_client_cannot_use_the_secured_broker(scram_broker: SecuredBroker) -> None:
    """Nothing but the SASL exchange is served before authentication."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": scram_broker.bootstrap})
    with pytest.raises(KafkaException, match=r"(?i)transport|timed out"):
        admin.list_topics(timeout=3)


def test_nbd_capture_on_a_secured_broker(secured: SecuredBroker, tmp_path: Path) -> None:
    """qemu-io writes through the NBD export; the topic replays to the same image."""
    from connectors.intercept.nbd import NbdExport
    from connectors.intercept.replay import replay

    topic = f"sec-nbd-{secured.kind}-{uuid.uuid4().hex[:8]}"
    path, volume = tmp_path / "nbd.img", f"nbd{secured.kind}"
    exp = NbdExport(
        {
            "path": str(path),
            "volume": volume,
            "size": SIZE,
            "bootstrap_servers": secured.bootstrap,
            "topic": topic,
            "client_config": secured.props,
        },
        unix=tmp_path / "nbd.sock",
    )
    exp.start()
    try:
        writes = ["write -P 7 4095 70001", "write -z 8192 4096", "write -P 9 500000 3"]
        cmd = ["qemu-io", "-f", "raw", *[a for w in writes for a in ("-c", w)], "-c", "flush"]
        done = subprocess.run([*cmd, exp.uri], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr + exp.log_tail()
        assert exp.stop() == 0, exp.log_tail()
    finally:
        exp.cleanup()
    replayed = tmp_path / "replayed.img"
    records = replay(secured.bootstrap, topic, volume, replayed, SIZE, client_config=secured.props)
    assert len(records) >= 5  # session start, baseline, the three writes, session end
    assert replayed.read_bytes() == path.read_bytes()


def _children(pid: int) -> dict[int, str]:
    """``pid``'s live child processes: pid -> command name."""
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True
    )
    return {int(p): name for p, name in (line.split(None, 1) for line in out.stdout.splitlines())}


def test_scram_over_tls_is_served_by_stunnel(tls_files: TlsFiles, tmp_path: Path) -> None:
    """SASL_SSL: TLS terminated by a stunnel child of ``kcdp broker``, SCRAM behind it; a
    client that skips TLS or gives the wrong password is refused; stopping the broker
    leaves no stunnel behind."""
    users = tmp_path / "users"
    users.write_text(f"{SCRAM_USER}:{SCRAM_PASSWORD}\n")
    props = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": SCRAM_USER,
        "sasl.password": SCRAM_PASSWORD,
        "ssl.ca.location": str(tls_files.ca),
    }
    flags = ["--sasl-users", str(users), "--tls-cert", str(tls_files.cert)]
    broker = start_broker("scram+tls", props, *flags, "--tls-key", str(tls_files.key))
    try:
        stunnels = [p for p, name in _children(broker.proc.pid).items() if "stunnel" in name]
        assert len(stunnels) == 1
        topic = f"kcdp-sasl-ssl-{uuid.uuid4().hex[:6]}"
        ensure_topics(broker.conf(), {topic: 1})
        assert topic in AdminClient(broker.conf()).list_topics(timeout=10).topics
        for bad in (
            {"sasl.password": "not-the-password"},
            {"security.protocol": "SASL_PLAINTEXT"},
        ):
            res = subprocess.run(
                [KCDP, "check", "--part", "kafka", *broker.x_args(**bad)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert res.returncode == 5, res.stderr
            assert "not-the-password" not in res.stdout + res.stderr
    finally:
        stop_broker(broker)
    assert broker.proc.returncode == 0
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{stunnels[0]}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{stunnels[0]}"), "stunnel outlived kcdp broker"
