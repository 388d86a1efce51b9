"""nbdkit Python plugin (API v2): an NBD export whose writes go through an InterceptedVolume.

Run by :mod:`connectors.intercept.nbd` as ``nbdkit python nbd_plugin.py pythonpath=DIR...
settings=FILE``. ``pythonpath`` entries (repeatable) are added as site directories so
Debian's ``/usr/bin/python3`` finds the project and the venv's packages; ``settings`` names
a JSON file of InterceptedVolume keyword arguments plus ``path`` and ``volume``.

The volume (and its Kafka producer) is created in ``after_fork`` — in the process that
serves — and shared by every connection. pwrite, zero and trim are captured; flush and
FUA wait for Kafka and fsync. Any failure fails the request with EIO.
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
    missing = [k for k in ("path", "volume", "bootstrap_servers") if k not in _settings]
    if missing:
        raise RuntimeError(f"settings file lacks {', '.join(missing)}")


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def after_fork() -> None:
    logging.basicConfig(level=logging.WARNING, format="kcdp-nbd %(levelname)s %(message)s")
    from connectors.errors import ERROR_LINE_PREFIX, KcdpError
    from connectors.intercept.intercepted import InterceptedVolume

    try:
        _state["volume"] = InterceptedVolume(**_settings)
    except KcdpError as exc:  # one line the launcher turns back into the same error
        sys.stderr.write(f"{ERROR_LINE_PREFIX}{type(exc).__name__}: {exc.message}\n")
        sys.stderr.flush()
        raise


def cleanup() -> None:
    vol = _state.pop("volume", None)
    if vol is not None:
        vol.close()


def open(readonly: bool) -> int:
    return 1


def get_size(h: int) -> int:
    return int(_state["volume"].size)


def can_write(h: int) -> bool:
    return True


def can_flush(h: int) -> bool:
    return True


def can_trim(h: int) -> bool:
    return True


def can_zero(h: int) -> bool:
    return True


def can_fua(h: int) -> int:
    return int(nbdkit.FUA_NATIVE)


def can_multi_conn(h: int) -> bool:
    return True  # flush drains the one shared producer and fsyncs the one backing file


def pread(h: int, buf: Any, offset: int, flags: int) -> None:
    buf[:] = _guard(_state["volume"].read, offset, len(buf))


def pwrite(h: int, buf: Any, offset: int, flags: int) -> None:
    _guard(_state["volume"].write, offset, buf)
    _fua(flags)


def zero(h: int, count: int, offset: int, flags: int) -> None:
    _guard(_state["volume"].zero, offset, count)
    _fua(flags)


def trim(h: int, count: int, offset: int, flags: int) -> None:
    _guard(_state["volume"].trim, offset, count)
    _fua(flags)


def flush(h: int, flags: int) -> None:
    _guard(_state["volume"].flush)


def _fua(flags: int) -> None:
    if flags & nbdkit.FLAG_FUA:
        _guard(_state["volume"].flush)


def _guard(fn: Any, *args: Any) -> Any:
    """Call ``fn``; any failure becomes EIO for the client (and is logged by nbdkit)."""
    try:
        return fn(*args)
    except Exception:
        nbdkit.set_error(errno.EIO)
        raise
