"""nbdkit Python plugin (API v2): a restore point served from the object store.

Run by :mod:`connectors.restore.export_server` as ``nbdkit python export_plugin.py
pythonpath=DIR... settings=FILE``; ``settings`` is a JSON file of ``store_url``,
``key_file``, ``volume``, ``offset``, ``cache_mib``, ``overlay`` (a path: writable, or
null: read-only) and ``ready`` (a file created once the point is open).

The store and the point are opened in ``after_fork`` — in the process that serves — and
shared by every connection. Without an overlay writes are refused (the export is
read-only: EPERM/EROFS); with one they go to it. A read the store cannot serve verified
fails with EIO and a log line on stderr naming the object.
"""

from __future__ import annotations

import errno
import json
import logging
import pathlib
import site
import sys
from typing import Any

import nbdkit

API_VERSION = 2

_settings: dict[str, Any] = {}
_state: dict[str, Any] = {}


def config(key: str, value: str) -> None:
    if key == "pythonpath":
        site.addsitedir(value)
        if value in sys.path:
            sys.path.remove(value)
        sys.path.insert(0, value)
    elif key == "settings":
        _settings.update(json.loads(pathlib.Path(value).read_text("utf-8")))
    else:
        raise RuntimeError(f"unknown parameter {key!r} (expected pythonpath= or settings=)")


def config_complete() -> None:
    missing = [k for k in ("store_url", "volume", "offset", "ready") if k not in _settings]
    if missing:
        raise RuntimeError(f"settings file lacks {', '.join(missing)}")


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def after_fork() -> None:
    logging.basicConfig(level=logging.WARNING, format="kcdp-export %(levelname)s %(message)s")
    from connectors.errors import ERROR_LINE_PREFIX, KcdpError
    from connectors.fsutil import write_atomic
    from connectors.restore.export import Overlay, open_point
    from connectors.restore.export_server import DEFAULT_CACHE_MIB
    from connectors.store import open_store

    mib = _settings.get("cache_mib")
    try:
        store = open_store(
            _settings["store_url"], key_file=_settings.get("key_file"), keys_now=True
        )
        _state["store"] = store
        point = open_point(
            store,
            _settings["volume"],
            int(_settings["offset"]),
            cache_mib=DEFAULT_CACHE_MIB if mib is None else int(mib),
        )
        _state["point"] = point
        if _settings.get("overlay"):
            _state["overlay"] = Overlay(point, _settings["overlay"])
    except KcdpError as exc:  # one line the launcher turns back into the same error
        sys.stderr.write(f"{ERROR_LINE_PREFIX}{type(exc).__name__}: {exc.message}\n")
        sys.stderr.flush()
        raise
    # the launcher waits for the marker to exist: it must appear whole, never empty
    write_atomic(_settings["ready"], f"{point.plan.path.direction}\n".encode())


def cleanup() -> None:
    overlay = _state.pop("overlay", None)
    if overlay is not None:
        overlay.close()
    store = _state.pop("store", None)
    if store is not None:
        store.close()


def open(readonly: bool) -> int:
    return 1


def get_size(h: int) -> int:
    return int(_state["point"].size)


def can_write(h: int) -> bool:
    return "overlay" in _state


def can_flush(h: int) -> bool:
    return "overlay" in _state


def can_zero(h: int) -> bool:
    return "overlay" in _state


def can_multi_conn(h: int) -> bool:
    return True  # one shared overlay; flush fsyncs it


def pread(h: int, buf: Any, offset: int, flags: int) -> None:
    source = _state.get("overlay") or _state["point"]
    buf[:] = _guard(source.read, offset, len(buf))


def pwrite(h: int, buf: Any, offset: int, flags: int) -> None:
    overlay = _writable()
    _guard(overlay.write, offset, bytes(buf))
    if flags & nbdkit.FLAG_FUA:
        _guard(overlay.flush)


def zero(h: int, count: int, offset: int, flags: int) -> None:
    overlay = _writable()
    _guard(overlay.zero, offset, count)
    if flags & nbdkit.FLAG_FUA:
        _guard(overlay.flush)


def flush(h: int, flags: int) -> None:
    overlay = _state.get("overlay")
    if overlay is not None:
        _guard(overlay.flush)


def _writable() -> Any:
    overlay = _state.get("overlay")
    if overlay is None:
        nbdkit.set_error(errno.EROFS)
        raise RuntimeError("the export is read-only (kcdp export --writable serves writes)")
    return overlay


def _guard(fn: Any, *args: Any) -> Any:
    """Call ``fn``; any failure becomes EIO for the client, with its message (naming the
    object a failed read needed) on stderr."""
    try:
        return fn(*args)
    except Exception as exc:
        sys.stderr.write(f"kcdp-export ERROR {exc}\n")
        sys.stderr.flush()
        nbdkit.set_error(errno.EIO)
        raise
