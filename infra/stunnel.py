"""TLS in front of the embedded broker: ``stunnel`` (Debian ``stunnel4``) as a child process.

Tansu 0.6 accepts ``--cert`` but completes no TLS handshake, so ``kcdp broker --tls-cert``
terminates TLS with stunnel on the public port and forwards the plaintext to a loopback
port (Tansu's, or the SCRAM front's, :mod:`infra.gateway`). The certificate files are
loaded once here first, so a bad file fails with its own message before stunnel starts.
The terminator dies with its parent (``PR_SET_PDEATHSIG``) and never outlives it.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from connectors.errors import BrokerError, ExternalToolError
from infra.broker import die_with_parent

#: binary names tried in order (Debian installs both as the same program)
BINARIES = ("stunnel4", "stunnel")
#: seconds stunnel has to listen on its port
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The listener's certificate chain and key (PEM); ``client_ca`` requires client certs."""

    cert: str
    key: str
    client_ca: str | None = None

    def check(self) -> None:
        """Load the files as a TLS server would; :class:`ssl.SSLError`/``OSError`` if not."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)


def stunnel_binary() -> str:
    """The stunnel executable on PATH; ExternalToolError naming the package if none."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise ExternalToolError("TLS needs stunnel: install the Debian package stunnel4")


def config_text(tls: TlsFiles, accept: tuple[str, int], upstream: tuple[str, int]) -> str:
    """The stunnel configuration: TLS 1.2+ on ``accept``, plaintext to ``upstream``."""
    lines = [
        "foreground = yes",
        "pid =",
        "debug = notice",
        "[kafka]",
        f"accept = {accept[0]}:{accept[1]}",
        f"connect = {upstream[0]}:{upstream[1]}",
        f"cert = {Path(tls.cert).resolve()}",
        f"key = {Path(tls.key).resolve()}",
        "sslVersionMin = TLSv1.2",
    ]
    if tls.client_ca:
        lines += [f"CAfile = {Path(tls.client_ca).resolve()}", "verifyChain = yes"]
    return "\n".join(lines) + "\n"


class TlsTerminator:
    """stunnel listening on ``host:port`` (TLS) and forwarding to ``upstream`` (plaintext)."""

    def __init__(self, tls: TlsFiles, *, host: str, port: int, upstream: tuple[str, int]):
        self.tls = tls
        self.host, self.port = host, port
        self.upstream = upstream
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="kcdp-stunnel-")
        self.log_path = Path(self._dir.name) / "stunnel.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start stunnel and wait until its port accepts connections; BrokerError (not
        retriable) with its log when the files are bad or it exits."""
        try:
            self.tls.check()
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(
                f"cannot serve TLS with {self.tls.cert}: {exc}", retriable=False
            ) from None
        conf = Path(self._dir.name) / "stunnel.conf"
        conf.write_text(config_text(self.tls, (self.host, self.port), self.upstream))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [stunnel_binary(), str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise BrokerError(f"stunnel did not serve TLS on {self.bootstrap_servers}:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()
