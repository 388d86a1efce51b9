"""The envelope shared by every JSON document kafka-cdp stores (manifests, checkpoints, gap
records): ``{"format": ..., "version": ..., ...}``, read strictly."""

from __future__ import annotations

from typing import Any

import orjson

from connectors.errors import IntegrityError


def load_document(data: bytes, *, fmt: str, version: int, what: str, name: str) -> dict[str, Any]:
    """Parse ``data`` as a ``fmt`` document of ``version``; :class:`IntegrityError` naming
    ``name`` when it is not JSON, not a ``what``, or of another version."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IntegrityError(f"{name}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise IntegrityError(f"{name}: not a kafka-cdp {what}")
    if doc.get("version") != version:
        raise IntegrityError(f"{name}: unsupported {what} version {doc.get('version')!r}")
    return doc
