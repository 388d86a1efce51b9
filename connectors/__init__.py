"""kafka-cdp edges: host intercepts, object stores, restore and replica consumers, the CLI.

``connectors.__version__`` is the installed distribution's version, looked up on first
use (importlib.metadata costs tens of milliseconds, which every command would pay).
"""

from __future__ import annotations

import functools

__all__ = ["__version__"]


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kafka-cdp")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
