"""Checks shared by every backend: what a key, a prefix and a byte range may be.

A key is 1 to 1024 characters of printable ASCII (``0x20``-``0x7e``) forming ``/``-separated
segments; no segment is empty, ``.``, ``..`` or longer than 255 characters, and no segment
ends with :data:`TEMP_SUFFIX` (reserved for the file store's in-flight writes). A prefix is
any printable-ASCII string (it may end inside a segment). Bad values raise a non-retriable
:class:`connectors.errors.StoreError` naming the value.
"""

from __future__ import annotations

from connectors.errors import StoreError

MAX_KEY_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255
#: File-name suffix of the file store's temp files; never part of a valid key.
TEMP_SUFFIX = ".kcdp-tmp"


def _printable(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise :class:`StoreError`."""
    if not isinstance(key, str) or not key:
        raise StoreError(f"invalid store key {key!r}: must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise StoreError(f"invalid store key {key[:60]!r}...: longer than {MAX_KEY_LENGTH}")
    if not _printable(key):
        raise StoreError(f"invalid store key {key!r}: only printable ASCII is allowed")
    if key.startswith("/"):
        raise StoreError(f"invalid store key {key!r}: must be relative (no leading '/')")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise StoreError(f"invalid store key {key!r}: empty, '.' or '..' segment")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise StoreError(f"invalid store key {key!r}: a segment exceeds 255 characters")
        if segment.endswith(TEMP_SUFFIX):
            raise StoreError(f"invalid store key {key!r}: suffix {TEMP_SUFFIX} is reserved")
    return key


def check_prefix(prefix: str, start_after: str | None) -> None:
    """Raise :class:`StoreError` unless ``prefix`` and ``start_after`` are printable ASCII."""
    for name, value in (("prefix", prefix), ("start_after", start_after)):
        if value is None:
            continue
        if not isinstance(value, str) or not _printable(value):
            raise StoreError(f"invalid list {name} {value!r}: only printable ASCII is allowed")


def check_range(start: int, length: int | None) -> None:
    """Raise :class:`StoreError` for a negative ``start`` or ``length``."""
    if start < 0 or (length is not None and length < 0):
        raise StoreError(f"invalid byte range start={start} length={length}: must be >= 0")
