"""Launch nbdkit serving a restore point from the store: :class:`ExportServer`.

The launcher of :mod:`connectors.intercept.nbd` with the plugin
:mod:`connectors.restore.export_plugin`: settings (the store URL, key file path, volume,
offset, cache bound, overlay) travel in a private 0600 JSON file; :meth:`start` returns
once the plugin opened the point (its ``ready`` file exists) or raises the plugin's
kafka-cdp error (e.g. NotRestorableError) when it could not. nbdkit's output (the
plugin's log lines, e.g. the object a failed read needed) is kept in its log file, which
:meth:`relay_log` copies to a stream (the command's stderr) as it grows.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TextIO

from connectors.intercept.nbd import NbdExport

PLUGIN = Path(__file__).with_name("export_plugin.py")
#: default bound of the object cache of ``kcdp export`` (MiB of decompressed bytes)
DEFAULT_CACHE_MIB = 256


class ExportServer(NbdExport):
    """One nbdkit process exporting one restore point (see :class:`NbdExport`); with
    ``writable`` writes go to ``overlay`` (default: a file in the private directory,
    removed by :meth:`cleanup`)."""

    plugin = PLUGIN
    required = ("store_url", "volume", "offset")

    def __init__(
        self,
        *,
        store_url: str,
        volume: str,
        offset: int,
        key_file: str | None = None,
        cache_mib: int | None = None,
        writable: bool = False,
        overlay: str | os.PathLike[str] | None = None,
        port: int | None = None,
        unix: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        threads: int = 8,
    ) -> None:
        settings = {
            "store_url": store_url,
            "volume": volume,
            "offset": offset,
            "key_file": key_file,
            "cache_mib": cache_mib,
        }
        super().__init__(settings, port=port, unix=unix, host=host, threads=threads)
        self.settings["ready"] = os.fspath(self._tmp / "ready")
        if writable:
            where = Path(overlay) if overlay is not None else self._tmp / "overlay.img"
            self.settings["overlay"] = os.fspath(where.absolute())

    @property
    def direction(self) -> str:
        """The direction of the restore path the export serves ('' before it started)."""
        try:
            return (self._tmp / "ready").read_text("utf-8").strip()
        except OSError:
            return ""

    def ready_paths(self) -> list[Path]:
        return [self._tmp / "nbdkit.pid", self._tmp / "ready"]

    def relay_log(self, stream: TextIO, interval: float = 0.1) -> threading.Thread:
        """Copy nbdkit's log to ``stream`` as it grows, until nbdkit exits (a daemon thread)."""

        def run() -> None:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as log:
                while True:
                    done = self.proc is None or self.proc.poll() is not None
                    text = log.read()
                    if text:
                        stream.write(text)
                        stream.flush()
                    elif done:
                        return
                    else:
                        time.sleep(interval)

        thread = threading.Thread(target=run, name="kcdp-export-log", daemon=True)
        thread.start()
        return thread
