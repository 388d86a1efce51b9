"""Launch nbdkit with the project's Python plugin: :class:`NbdExport`.

The export runs ``nbdkit --foreground --exit-with-parent python nbd_plugin.py`` with the
project root and this interpreter's site-packages on the plugin's path, and passes the
InterceptedVolume settings in a private (0600) JSON file, so Kafka secrets never appear
on a command line. :meth:`NbdExport.start` returns once nbdkit serves (its pid file
exists); :meth:`NbdExport.stop` sends SIGTERM, which makes the plugin close the volume
cleanly (SESSION_END, state file clean).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from connectors import errors
from connectors.errors import (
    ERROR_LINE_PREFIX,
    ConfigError,
    ExternalToolError,
    KcdpError,
    VolumeError,
)
from connectors.intercept.control import socket_path

PLUGIN = Path(__file__).with_name("nbd_plugin.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Seconds nbdkit has to exit after SIGTERM before it is killed.
STOP_GRACE = 60.0
#: Seconds between checks that a starting nbdkit serves (a few stat calls each).
READY_POLL = 0.01


class NbdExport:
    """One nbdkit process exporting one intercepted volume.

    Exactly one of ``port`` (TCP on ``host``, default 127.0.0.1) or ``unix`` (a socket
    path) is used; neither means a unix socket in a private temporary directory.
    ``volume_settings`` are InterceptedVolume keyword arguments (JSON-serializable):
    at least ``path``, ``volume`` and ``bootstrap_servers``. ``threads`` is nbdkit's
    worker thread count (default 16). A subclass serves another plugin: it sets
    :attr:`plugin` and :attr:`required` and says when the export serves (:meth:`ready_paths`).
    """

    plugin: Path = PLUGIN
    required: tuple[str, ...] = ("path", "volume", "bootstrap_servers")

    def __init__(
        self,
        volume_settings: Mapping[str, Any],
        *,
        port: int | None = None,
        unix: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        threads: int = 16,
        nbdkit: str = "nbdkit",
    ) -> None:
        if port is not None and unix is not None:
            raise ConfigError("give either a TCP port or a unix socket, not both")
        for key in self.required:
            if key not in volume_settings:
                raise ConfigError(f"NBD export settings lack {key!r}")
        self.settings = {
            k: os.fspath(v) if isinstance(v, Path) else v for k, v in volume_settings.items()
        }
        self.port, self.host, self.threads = port, host, threads
        self._tmp = Path(tempfile.mkdtemp(prefix="kcdp-nbd-"))
        self.unix = Path(unix) if unix is not None else (None if port else self._tmp / "nbd.sock")
        self.binary = shutil.which(nbdkit) or ""
        if not self.binary:
            raise ExternalToolError(f"{nbdkit} not found: install nbdkit and nbdkit-plugin-python")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self._tmp / "nbdkit.log"

    @property
    def uri(self) -> str:
        """The NBD URI clients connect to."""
        if self.unix is not None:
            return f"nbd+unix:///?socket={self.unix}"
        return f"nbd://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The nbdkit command line (no secrets: settings travel in a 0600 file)."""
        cmd = [
            self.binary,
            "--foreground",
            "--exit-with-parent",
            "--pidfile",
            str(self._tmp / "nbdkit.pid"),
            "--threads",
            str(self.threads),
        ]
        if self.unix is not None:
            cmd += ["--unix", str(self.unix)]
        else:
            cmd += ["--ipaddr", self.host, "--port", str(self.port)]
        cmd += ["python", str(self.plugin)]
        for path in _plugin_paths():
            cmd.append(f"pythonpath={path}")
        cmd.append(f"settings={self._tmp / 'settings.json'}")
        return cmd

    def start(self, timeout: float = 60.0) -> str:
        """Start nbdkit and wait until it serves; returns :attr:`uri`."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start nbdkit without waiting (:meth:`wait_ready` waits until it serves)."""
        settings_file = self._tmp / "settings.json"
        fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(self.settings))
        if self.unix is not None:
            _remove_stale_socket(self.unix)
        with self.log_path.open("ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            except OSError as exc:
                raise ExternalToolError(f"cannot run nbdkit: {exc}") from None

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait until the launched nbdkit serves; returns :attr:`uri`. Raises the plugin's
        error if nbdkit exits first, ExternalToolError (nbdkit stopped) after ``timeout``."""
        assert self.proc is not None, "launch() first"
        ready = self.ready_paths()
        deadline = time.monotonic() + timeout
        while not all(p.exists() for p in ready):
            if self.proc.poll() is not None:
                raise self.startup_error()
            if time.monotonic() > deadline:
                self.stop()
                raise ExternalToolError(f"nbdkit did not start within {timeout:g}s")
            time.sleep(READY_POLL)
        return self.uri

    def ready_paths(self) -> list[Path]:
        """Files whose existence says nbdkit serves: its pid file and the control socket."""
        ready = [self._tmp / "nbdkit.pid"]
        if self.settings.get("control_socket", True):
            ready.append(socket_path(self.settings["path"]))  # the volume is open
        return ready

    def wait(self) -> int:
        """Wait for nbdkit to exit; its exit status."""
        if self.proc is None:
            return 0
        return self.proc.wait()

    def terminate(self) -> None:
        """Ask nbdkit to stop (SIGTERM) without waiting; safe in a signal handler."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM nbdkit (the volume closes cleanly), wait, clean up; its exit status."""
        status = 0
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            status = self.proc.returncode
        with contextlib.suppress(FileNotFoundError):
            (self._tmp / "settings.json").unlink()
        if self.unix is not None and self.unix.is_socket():
            self.unix.unlink(missing_ok=True)
        return status

    def startup_error(self) -> KcdpError:
        """The error that stopped nbdkit: the plugin's kafka-cdp error if it reported one."""
        for line in reversed(self.log_tail(20000).splitlines()):
            if line.startswith(ERROR_LINE_PREFIX):
                name, _, message = line[len(ERROR_LINE_PREFIX) :].partition(": ")
                cls = getattr(errors, name, None)
                if isinstance(cls, type) and issubclass(cls, KcdpError):
                    return cls(message)
        status = self.proc.returncode if self.proc is not None else None
        return ExternalToolError(f"nbdkit exited with status {status}: {self.log_tail()}")

    def log_tail(self, limit: int = 2000) -> str:
        """The end of nbdkit's log (stderr of the plugin included)."""
        try:
            return self.log_path.read_text("utf-8", "replace")[-limit:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Stop and remove the private temporary directory."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> NbdExport:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def _remove_stale_socket(path: Path) -> None:
    """Remove a unix socket nobody listens on; refuse one that is live."""
    if not path.is_socket():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.fspath(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise VolumeError(f"an NBD server is already listening on {path}")


def _plugin_paths() -> list[str]:
    """Directories the plugin's interpreter needs: the project and this venv's packages."""
    paths = [str(PROJECT_ROOT)]
    for key in ("purelib", "platlib"):
        found = sysconfig.get_paths()[key]
        if found not in paths:
            paths.append(found)
    return paths
