"""The envelope shared by every JSON document kafka-cdp stores (manifests, checkpoints, gap
records, heads): ``{"format": ..., "version": ..., ...}``, read strictly, and the canonical
digest that authenticates a document (docs/FORMAT.md "Manifest")."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

import orjson

from connectors.errors import IntegrityError

DIGEST = "digest"


def load_document(
    data: bytes, *, fmt: str, version: int | Collection[int], what: str, name: str
) -> dict[str, Any]:
    """Parse ``data`` as a ``fmt`` document of ``version`` (one, or any of several);
    :class:`IntegrityError` naming ``name`` when it is not JSON, not a ``what``, or of
    another version."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IntegrityError(f"{name}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise IntegrityError(f"{name}: not a kafka-cdp {what}")
    versions = (version,) if isinstance(version, int) else version
    got = doc.get("version")
    if type(got) is not int or got not in versions:
        reads = ", ".join(str(v) for v in sorted(versions))
        plural = "s" if len(versions) > 1 else ""
        raise IntegrityError(
            f"{name}: unsupported {what} version {got!r} (this kcdp reads version{plural} {reads})"
        )
    return doc


def canonical_digest(doc: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``doc`` without its ``digest`` member, keys sorted at every level."""
    body = {k: v for k, v in doc.items() if k != DIGEST}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def check_digest(doc: dict[str, Any], *, what: str, name: str) -> str:
    """The canonical digest of ``doc``, which must equal its ``digest`` member
    (:class:`IntegrityError` naming ``name`` otherwise)."""
    digest = canonical_digest(doc)
    if doc.get(DIGEST) != digest:
        raise IntegrityError(f"{name}: the {what} does not match its digest (altered or damaged)")
    return digest


def sealed(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its ``digest`` member set to its canonical digest."""
    return {**body, DIGEST: canonical_digest(body)}
