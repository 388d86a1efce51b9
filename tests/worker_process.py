"""A ``kcdp worker`` child process for integration tests and benchmarks.

:class:`WorkerProcess` starts the worker (``python -m connectors.cli worker``) with the
given store, topic, window length and web port, short Kafka session timeouts, its log in a
file; :meth:`WorkerProcess.wait_ready` polls ``/metrics`` on the web port until the worker
serves it. :func:`metric_values` parses Prometheus text into ``{(name, labels): value}``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """``kcdp worker`` as a child process; a context manager (stops it on exit).

    ``extra`` adds worker flags. The worker's stdout and stderr go to ``log_path``.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        store_url: str,
        topic: str,
        workdir: Path,
        web_port: int,
        window_seconds: float = 1.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.web_port = web_port
        self.workdir = workdir
        self.log_path = workdir / "worker.log"
        self.command = [
            sys.executable,
            "-m",
            "connectors.cli",
            "worker",
            "--bootstrap-servers",
            bootstrap,
            "--store",
            store_url,
            "--topic",
            topic,
            "--state-dir",
            str(workdir / "state"),
            "--window-seconds",
            str(window_seconds),
            "--web-port",
            str(web_port),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        log.close()
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def metrics_text(self, timeout: float = 5.0) -> str:
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode("utf-8"))

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until ``/metrics`` answers; raise with the log tail if the worker died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            try:
                self.metrics_text(timeout=2.0)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"worker not serving /metrics after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of Prometheus exposition ``text``: (name, sorted labels) -> value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux ``/proc``)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in out if alive(c)]


def alive(pid: int) -> bool:
    """Does ``pid`` run (exists and is not a zombie)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
