"""``kcdp broker``: run the embedded Tansu broker in the foreground.

Once the broker answers Kafka metadata requests the command prints one line to stdout,
``bootstrap.servers=HOST:PORT``, and flushes it, so a script can read the address. It then
waits: SIGINT or SIGTERM is forwarded to the broker (exit 130 for SIGINT, 0 for SIGTERM);
if the broker exits on its own the command fails with a :class:`BrokerError` (exit 5) that
carries the tail of the broker log. The broker never outlives the command.

``--sasl-users`` secures the listener with SCRAM through :mod:`infra.gateway` (Tansu 0.6
keeps no SCRAM user itself); ``--tls-cert`` / ``--tls-key`` with TLS through stunnel
(:mod:`infra.stunnel`; Tansu 0.6 completes no TLS handshake).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from connectors.config import Settings, redact_text, register_secret
from connectors.errors import BrokerError, UsageError
from connectors.kafka import ensure_topics
from infra.broker import EmbeddedBroker, free_port
from infra.gateway import Gateway
from infra.stunnel import TlsFiles, TlsTerminator

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


@dataclass
class SecuredListener:
    """The fronts the security flags ask for: the SCRAM gateway and/or the TLS terminator.

    The public listener is the terminator's with TLS, else the gateway's; Tansu listens on
    a loopback port (:attr:`tansu_port`) behind them and advertises the public one.
    """

    gateway: Gateway | None
    terminator: TlsTerminator | None
    tansu_port: int

    @property
    def bootstrap_servers(self) -> str:
        front = self.terminator or self.gateway
        assert front is not None
        return front.bootstrap_servers

    def start(self) -> None:
        """Start the fronts, innermost first; BrokerError (not retriable) if one cannot."""
        try:
            if self.gateway is not None:
                self.gateway.start()
            if self.terminator is not None:
                self.terminator.start()
        except OSError as exc:
            self.stop()
            raise BrokerError(
                f"cannot serve the secured listener: {exc}", retriable=False
            ) from None

    def stop(self) -> None:
        if self.terminator is not None:
            self.terminator.stop()
        if self.gateway is not None:
            self.gateway.stop()


def _cannot_listen(exc: OSError) -> BrokerError:
    return BrokerError(f"cannot serve the secured listener: {exc}", retriable=False)


def _secured(args: argparse.Namespace) -> SecuredListener | None:
    """The secured listener the flags ask for, bound to the listener address (or None)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    users = read_users(args.sasl_users) if args.sasl_users else None
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    if users is None and tls is None:
        return None
    tansu_port = free_port()
    gateway = None
    if users is not None:
        host, port = ("127.0.0.1", 0) if tls else (args.host, args.port)
        try:
            gateway = Gateway(upstream=("127.0.0.1", tansu_port), host=host, port=port, users=users)
        except OSError as exc:
            raise BrokerError(
                f"cannot serve the secured listener: {exc}", retriable=False
            ) from None
    terminator = None
    if tls is not None:
        upstream = (gateway.host, gateway.port) if gateway else ("127.0.0.1", tansu_port)
        terminator = TlsTerminator(
            tls, host=args.host, port=args.port or free_port(args.host), upstream=upstream
        )
    return SecuredListener(gateway, terminator, tansu_port)


def _client_config(
    secured: SecuredListener | None, bootstrap: str, settings: Settings
) -> dict[str, Any]:
    """Properties for this command's own client (--create-topics): the first user, and
    no certificate check (it talks to its own listener), under any ``-X`` given."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap}
    if secured is not None:
        gateway, tls = secured.gateway, secured.terminator is not None
        conf["security.protocol"] = ("SASL_" if gateway else "") + ("SSL" if tls else "PLAINTEXT")
        if gateway:
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
    secured = _secured(args)
    broker = EmbeddedBroker(
        port=secured.tansu_port if secured else args.port,
        host="127.0.0.1" if secured else args.host,
        storage=storage_url(args.storage),
        log_path=args.log_file,
        advertised=secured.bootstrap_servers if secured else None,
    )
    bootstrap = secured.bootstrap_servers if secured else broker.bootstrap_servers
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if secured:
            secured.start()
        broker.start(timeout=args.start_timeout)
        if args.create_topics:
            topics = (settings.topic, settings.increments_topic, settings.dlq_topic)
            ensure_topics(
                _client_config(secured, bootstrap, settings),
                dict.fromkeys(topics, args.partitions),
            )
            log.info("topics %s ready with %d partitions", ", ".join(topics), args.partitions)
        print(f"bootstrap.servers={bootstrap}", flush=True)
        log.info("broker serving on %s (storage %s)", bootstrap, broker.storage)
        if secured:
            log.info(
                "listener security: %s%s",
                "SASL/SCRAM " if secured.gateway else "",
                "TLS (stunnel)" if secured.terminator else "(no TLS)",
            )
        return _wait(broker, received)
    finally:
        broker.stop()
        if secured:
            secured.stop()
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
