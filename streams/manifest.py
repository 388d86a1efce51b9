"""Window manifests (docs/FORMAT.md "Manifest").

A window exists once its manifest exists. The manifest names the window's forward and
backward increments and write log with their sizes and SHA-256 digests;
:func:`get_verified` fetches an object and checks it against those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.errors import GapError, IntegrityError, ObjectNotFound
from connectors.store.base import ObjectStore
from streams import keys
from streams.document import load_document

FORMAT = "kcdp-manifest"
VERSION = 1


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A stored object: key, stored size and SHA-256 of the stored bytes."""

    key: str
    size: int
    sha256: str
    extents: int | None = None
    logical_bytes: int | None = None
    records: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "size": self.size, "sha256": self.sha256}
        for name in ("extents", "logical_bytes", "records"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectRef:
        return cls(
            key=str(d["key"]),
            size=int(d["size"]),
            sha256=str(d["sha256"]),
            extents=d.get("extents"),
            logical_bytes=d.get("logical_bytes"),
            records=d.get("records"),
        )

    @classmethod
    def of(cls, key: str, data: bytes, **counts: int) -> ObjectRef:
        """The reference of ``data`` stored under ``key``."""
        return cls(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), **counts)


@dataclass(frozen=True, slots=True)
class Bookmark:
    name: str
    offset: int
    time_us: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """One window of one volume; field meanings in docs/FORMAT.md."""

    volume: str
    group: str
    topic: str
    partition: int
    volume_size: int
    first_offset: int
    last_offset: int
    first_time_us: int
    last_time_us: int
    session: str
    first_sequence: int
    last_sequence: int
    events: int
    bytes_written: int
    policy: dict[str, Any]
    period_us: int | None
    close_reason: str
    previous: tuple[int, int] | None
    restorable_from: int | None
    consistent: bool
    bookmarks: tuple[Bookmark, ...]
    ranges_sha256: str
    forward: ObjectRef
    backward: ObjectRef
    writelog: ObjectRef
    created_us: int

    @property
    def key(self) -> str:
        return keys.manifest_key(self.volume, self.first_offset, self.last_offset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "volume": self.volume,
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "volume_size": self.volume_size,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "first_time_us": self.first_time_us,
            "last_time_us": self.last_time_us,
            "session": self.session,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "events": self.events,
            "bytes_written": self.bytes_written,
            "policy": self.policy,
            "period_us": self.period_us,
            "close_reason": self.close_reason,
            "previous": None
            if self.previous is None
            else {"first_offset": self.previous[0], "last_offset": self.previous[1]},
            "restorable_from": self.restorable_from,
            "consistent": self.consistent,
            "bookmarks": [
                {"name": b.name, "offset": b.offset, "time_us": b.time_us} for b in self.bookmarks
            ],
            "ranges_sha256": self.ranges_sha256,
            "objects": {
                "forward": self.forward.to_dict(),
                "backward": self.backward.to_dict(),
                "writelog": self.writelog.to_dict(),
            },
            "created_us": self.created_us,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes, *, name: str = "manifest") -> Manifest:
        """Parse a manifest; :class:`IntegrityError` naming ``name`` if malformed."""
        d = load_document(data, fmt=FORMAT, version=VERSION, what="manifest", name=name)
        try:
            prev = d["previous"]
            objs = d["objects"]
            m = cls(
                volume=str(d["volume"]),
                group=str(d["group"]),
                topic=str(d["topic"]),
                partition=int(d["partition"]),
                volume_size=int(d["volume_size"]),
                first_offset=int(d["first_offset"]),
                last_offset=int(d["last_offset"]),
                first_time_us=int(d["first_time_us"]),
                last_time_us=int(d["last_time_us"]),
                session=str(d["session"]),
                first_sequence=int(d["first_sequence"]),
                last_sequence=int(d["last_sequence"]),
                events=int(d["events"]),
                bytes_written=int(d["bytes_written"]),
                policy=dict(d["policy"]),
                period_us=None if d["period_us"] is None else int(d["period_us"]),
                close_reason=str(d["close_reason"]),
                previous=None
                if prev is None
                else (int(prev["first_offset"]), int(prev["last_offset"])),
                restorable_from=None if d["restorable_from"] is None else int(d["restorable_from"]),
                consistent=bool(d["consistent"]),
                bookmarks=tuple(
                    Bookmark(str(b["name"]), int(b["offset"]), int(b["time_us"]))
                    for b in d["bookmarks"]
                ),
                ranges_sha256=str(d["ranges_sha256"]),
                forward=ObjectRef.from_dict(objs["forward"]),
                backward=ObjectRef.from_dict(objs["backward"]),
                writelog=ObjectRef.from_dict(objs["writelog"]),
                created_us=int(d["created_us"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(
                f"{name}: malformed manifest ({type(exc).__name__}: {exc})"
            ) from None
        if m.last_offset < m.first_offset:
            raise IntegrityError(f"{name}: last_offset before first_offset")
        return m


def list_window_keys(
    store: ObjectStore, volume: str, *, start_after: str | None = None
) -> list[tuple[int, int, str]]:
    """``(first, last, key)`` of every manifest of ``volume``, by offset (key names only)."""
    out: list[tuple[int, int, str]] = []
    for info in store.list(keys.manifests_prefix(volume), start_after=start_after):
        try:
            first, last = keys.parse_window_key(info.key)
        except ValueError:
            continue
        out.append((first, last, info.key))
    out.sort()
    return out


def load_manifest(store: ObjectStore, key: str) -> Manifest:
    """Fetch and parse the manifest under ``key``; it must be the one its key names.

    Raises :class:`GapError` when missing, :class:`IntegrityError` when malformed.
    """
    try:
        data = store.get(key)
    except ObjectNotFound:
        raise GapError(f"manifest {key} is missing") from None
    m = Manifest.from_json(data, name=key)
    if m.key != key:
        raise IntegrityError(f"{key}: holds the manifest of {m.key}")
    return m


def get_verified(store: ObjectStore, ref: ObjectRef) -> bytes:
    """Fetch ``ref`` and check its size and SHA-256.

    Raises :class:`GapError` naming the key when it is missing, :class:`IntegrityError`
    naming it when the bytes differ from the reference.
    """
    try:
        data = store.get(ref.key)
    except ObjectNotFound:
        raise GapError(f"object {ref.key} is missing") from None
    if len(data) != ref.size:
        raise IntegrityError(f"object {ref.key}: {len(data)} bytes, manifest says {ref.size}")
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise IntegrityError(f"object {ref.key}: SHA-256 does not match its manifest")
    return data
