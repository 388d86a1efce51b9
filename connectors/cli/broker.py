"""``kcdp broker``: run the embedded Tansu broker in the foreground.

Once the broker answers Kafka metadata requests the command prints one line to stdout,
``bootstrap.servers=HOST:PORT``, and flushes it, so a script can read the address. It then
waits: SIGINT or SIGTERM is forwarded to the broker (exit 130 for SIGINT, 0 for SIGTERM);
if the broker exits on its own the command fails with a :class:`BrokerError` (exit 5) that
carries the tail of the broker log. The broker never outlives the command.

``--sasl-users`` / ``--tls-cert`` / ``--tls-key`` secure the listener with
:mod:`infra.gateway` (Tansu 0.6 serves no TLS and keeps no SCRAM user itself).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from connectors.config import Settings, redact_text, register_secret
from connectors.errors import BrokerError, UsageError
from connectors.kafka import ensure_topics
from infra.broker import EmbeddedBroker
from infra.gateway import Gateway, TlsFiles

log = logging.getLogger("kcdp.broker")

#: ``--storage`` shorthand -> Tansu storage engine URL.
STORAGE_ALIASES: dict[str, str] = {"memory": "memory://tansu/"}
#: Seconds a forwarded signal has to stop the broker before it is killed.
STOP_GRACE = 10.0


def register(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        parents=list(parents),
        help="run the embedded Kafka-compatible broker (Tansu) in the foreground",
        description="Run the embedded Tansu broker until SIGINT/SIGTERM. Once it serves "
        "requests, print 'bootstrap.servers=HOST:PORT' on stdout. Exit 0 on SIGTERM, "
        "130 on SIGINT, 5 if the broker fails.",
    )
    p.add_argument(
        "--port",
        type=int,
        default=9092,
        help="listener port; 0 picks a free one (default 9092)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listener address (default 127.0.0.1)")
    p.add_argument(
        "--storage",
        default="memory",
        help="'memory' (default, lost on stop) or a Tansu storage URL such as s3://BUCKET/ "
        "(survives restarts; Tansu reads AWS_ENDPOINT, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, and AWS_ALLOW_HTTP=true for http)",
    )
    p.add_argument(
        "--create-topics",
        action="store_true",
        help="create the write, increments and dead-letter topics once the broker is up",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions of each topic made by --create-topics (default 4)",
    )
    p.add_argument(
        "--log-file",
        help="keep the broker's own log in this file (default: a temporary file, "
        "printed in part if the broker fails)",
    )
    sec = p.add_argument_group(
        "security",
        "serve TLS and/or SASL/SCRAM on the listener (a front in this process; Tansu then "
        "listens on a free loopback port and advertises the listener)",
    )
    sec.add_argument(
        "--sasl-users",
        metavar="FILE",
        help="require SASL/SCRAM (SCRAM-SHA-256 and SCRAM-SHA-512) for the users in FILE, "
        "one 'name:password' a line ('#' starts a comment)",
    )
    sec.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    sec.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    sec.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the broker to serve requests (default 30)",
    )
    p.set_defaults(func=run)


def storage_url(value: str) -> str:
    """Tansu storage URL for ``--storage``: ``memory`` or a ``memory://`` / ``s3://`` URL."""
    if value in STORAGE_ALIASES:
        return STORAGE_ALIASES[value]
    if value.startswith(("memory://", "s3://")):
        return value
    raise UsageError(
        f"--storage must be 'memory' or a memory:// or s3:// URL, got {redact_text(value)!r}"
    )


def read_users(path: str) -> dict[str, str]:
    """``name:password`` lines of a ``--sasl-users`` file; passwords are registered secrets."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read --sasl-users {path}: {exc.strerror or exc}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name or not password:
            raise UsageError(f"--sasl-users {path} line {number}: expected name:password")
        register_secret(password)
        users[name] = password
    if not users:
        raise UsageError(f"--sasl-users {path} names no user")
    return users


def _gateway(args: argparse.Namespace) -> Gateway | None:
    """The secured front the flags ask for, bound to the listener address (or None)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    users = read_users(args.sasl_users) if args.sasl_users else None
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    if users is None and tls is None:
        return None
    try:
        gateway = Gateway(
            upstream=("127.0.0.1", 0), host=args.host, port=args.port, users=users, tls=tls
        )
        gateway.start()
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot serve the secured listener: {exc}", retriable=False) from None
    return gateway


def _client_config(gateway: Gateway | None, bootstrap: str, settings: Settings) -> dict[str, Any]:
    """Properties for this command's own client (--create-topics): the first user, and
    no certificate check (it talks to its own listener), under any ``-X`` given."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap}
    if gateway is not None:
        tls = gateway.tls is not None
        conf["security.protocol"] = ("SASL_" if gateway.users else "") + (
            "SSL" if tls else "PLAINTEXT"
        )
        if gateway.users:
            name, password = next(iter(gateway.passwords.items()))
            conf.update(
                {
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": name,
                    "sasl.password": password,
                }
            )
        if tls:
            conf["enable.ssl.certificate.verification"] = "false"
        conf.update(settings.kafka)
    return conf


def _check_port_free(host: str, port: int) -> None:
    """Fail before starting Tansu when the port is taken: the readiness probe would
    otherwise reach the broker already listening there and report it as ours."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BrokerError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", retriable=False
            ) from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.partitions < 1:
        raise UsageError(f"--partitions must be at least 1, got {args.partitions}")
    if args.port:
        _check_port_free(args.host, args.port)
    gateway = _gateway(args)
    broker = EmbeddedBroker(
        port=0 if gateway else args.port,
        host="127.0.0.1" if gateway else args.host,
        storage=storage_url(args.storage),
        log_path=args.log_file,
        advertised=gateway.bootstrap_servers if gateway else None,
    )
    if gateway:
        gateway.upstream = ("127.0.0.1", broker.port)
    bootstrap = gateway.bootstrap_servers if gateway else broker.bootstrap_servers
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.start(timeout=args.start_timeout)
        if args.create_topics:
            topics = (settings.topic, settings.increments_topic, settings.dlq_topic)
            ensure_topics(
                _client_config(gateway, bootstrap, settings),
                dict.fromkeys(topics, args.partitions),
            )
            log.info("topics %s ready with %d partitions", ", ".join(topics), args.partitions)
        print(f"bootstrap.servers={bootstrap}", flush=True)
        log.info("broker serving on %s (storage %s)", bootstrap, broker.storage)
        if gateway:
            log.info(
                "listener security: %s%s",
                "SASL/SCRAM " if gateway.users else "",
                "TLS" if gateway.tls else "(no TLS)",
            )
        return _wait(broker, received)
    finally:
        broker.stop()
        if gateway:
            gateway.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait(broker: EmbeddedBroker, received: list[int]) -> int:
    """Block until a signal arrives (forward it, return its exit code) or the broker dies."""
    proc = broker.proc
    assert proc is not None  # start() succeeded
    while not received:
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        raise BrokerError(
            f"the broker exited with status {proc.returncode}:\n{broker.log_tail()}",
            retriable=False,
        )
    signum = received[0]
    log.info("received %s, stopping the broker", signal.Signals(signum).name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE)
    sys.stdout.flush()
    return 130 if signum == signal.SIGINT else 0
