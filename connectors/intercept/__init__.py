"""Host intercept producers: the Python API, the NBD export and their helpers.

:class:`InterceptedVolume` captures every write of a program that owns its writes; the
NBD export (:mod:`connectors.intercept.nbd`) lets any NBD client write through it. The
class is imported on first use, so a command that needs only the NBD launcher (``kcdp
export``) does not load the Kafka producer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.intercept.intercepted import InterceptedVolume

__all__ = ["InterceptedVolume"]


def __getattr__(name: str) -> Any:
    if name == "InterceptedVolume":
        from connectors.intercept.intercepted import InterceptedVolume

        return InterceptedVolume
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
