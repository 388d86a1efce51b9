"""Host intercept producers: the Python API, the NBD export and their helpers.

:class:`InterceptedVolume` captures every write of a program that owns its writes; the
NBD export (:mod:`connectors.intercept.nbd`) lets any NBD client write through it.
"""

from __future__ import annotations

from connectors.intercept.intercepted import InterceptedVolume

__all__ = ["InterceptedVolume"]
