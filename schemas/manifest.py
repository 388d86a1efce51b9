"""Window manifests (docs/FORMAT.md "Manifest").

A window exists once its manifest exists. The manifest names the window's forward and
backward increments and write log with their sizes and SHA-256 digests;
:func:`get_verified` fetches an object and checks it against those. A version 2 manifest
carries its own canonical digest and the digest of the manifest before it (the chain:
:mod:`schemas.chain`). Version 3 is a consolidated window (no write log; what it replaces
in ``merged``). Version 1 manifests are read too (``digest`` is then computed from the
stored document, nothing authenticates it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from connectors.errors import GapError, IntegrityError, ObjectNotFoundError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.document import canonical_digest, check_digest, load_document

FORMAT = "kcdp-manifest"
VERSION = 2
#: consolidated windows (docs/FORMAT.md "Consolidated manifest")
MERGED_VERSION = 3
VERSIONS = (1, 2, 3)


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

    def check_counts(self, *, manifest: str, **counts: int) -> None:
        """The object's content has ``counts`` (``extents``, ``logical_bytes``,
        ``records``); each recorded one must match (:class:`IntegrityError` naming the
        ``manifest`` key otherwise: the object matches its digest, so the manifest lies)."""
        for name, value in counts.items():
            recorded = getattr(self, name)
            if recorded is not None and recorded != value:
                raise IntegrityError(
                    f"{manifest}: says {self.key} holds {recorded} {name.replace('_', ' ')}, "
                    f"it holds {value}"
                )


class WindowId(NamedTuple):
    """A window's identity: its offsets and the canonical digest of its manifest."""

    first_offset: int
    last_offset: int
    digest: str


@dataclass(frozen=True, slots=True)
class Merged:
    """What a consolidated window replaces: how many windows of the original history,
    and the identities its last member had (which later windows and checkpoints name)."""

    windows: int
    aliases: tuple[WindowId, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "aliases": [
                {"first_offset": a.first_offset, "last_offset": a.last_offset, "digest": a.digest}
                for a in self.aliases
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Merged:
        aliases = tuple(
            WindowId(int(a["first_offset"]), int(a["last_offset"]), _hex_digest(a["digest"]))
            for a in d["aliases"]
        )
        return cls(windows=int(d["windows"]), aliases=aliases)


@dataclass(frozen=True, slots=True)
class Bookmark:
    name: str
    offset: int
    time_us: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """One window of one volume; field meanings in docs/FORMAT.md.

    ``digest`` is the canonical digest: of the stored document for a loaded manifest,
    else of :meth:`to_dict` (computed on construction, so :func:`dataclasses.replace`
    yields a manifest with its own digest). ``previous_digest`` is None only in version 1.
    """

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
    writelog: ObjectRef | None
    created_us: int
    previous_digest: str | None = None
    fenced: tuple[str, ...] = ()
    baseline_open: bool = False
    version: int = VERSION
    merged: Merged | None = None
    digest: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"manifest version {self.version} is not one of {VERSIONS}")
        if self.version >= 2 and (self.previous is None) != (self.previous_digest is None):
            raise ValueError("a version 2 manifest names its previous window with its digest")
        if (self.version == MERGED_VERSION) != (self.merged is not None):
            raise ValueError("a consolidated window is version 3 and says what it replaces")
        if (self.merged is None) != (self.writelog is not None):
            raise ValueError("a window has a write log unless it is consolidated")
        object.__setattr__(self, "digest", canonical_digest(self._body()))

    @property
    def key(self) -> str:
        return keys.manifest_key(self.volume, self.first_offset, self.last_offset)

    @property
    def ident(self) -> WindowId:
        return WindowId(self.first_offset, self.last_offset, self.digest)

    def identities(self) -> tuple[WindowId, ...]:
        """Every identity by which a later window or a checkpoint may name this window."""
        return (self.ident,) + (self.merged.aliases if self.merged else ())

    def objects(self) -> tuple[ObjectRef, ...]:
        """The stored objects the manifest names."""
        refs = (self.forward, self.backward)
        return refs if self.writelog is None else (*refs, self.writelog)

    def to_dict(self) -> dict[str, Any]:
        """The stored document (with ``digest`` in version 2)."""
        body = self._body()
        if self.version >= 2:
            body["digest"] = self.digest
        return body

    def _body(self) -> dict[str, Any]:
        previous: dict[str, Any] | None = None
        if self.previous is not None:
            previous = {"first_offset": self.previous[0], "last_offset": self.previous[1]}
            if self.version >= 2:
                previous["digest"] = self.previous_digest
        body = {
            "format": FORMAT,
            "version": self.version,
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
            "previous": previous,
            "restorable_from": self.restorable_from,
            "consistent": self.consistent,
            "bookmarks": [
                {"name": b.name, "offset": b.offset, "time_us": b.time_us} for b in self.bookmarks
            ],
            "ranges_sha256": self.ranges_sha256,
            "objects": {
                "forward": self.forward.to_dict(),
                "backward": self.backward.to_dict(),
                "writelog": None if self.writelog is None else self.writelog.to_dict(),
            },
            "created_us": self.created_us,
        }
        if self.version >= 2:
            body["fenced"] = list(self.fenced)
            body["baseline_open"] = self.baseline_open
        if self.merged is not None:
            body["merged"] = self.merged.to_dict()
        return body

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes, *, name: str = "manifest") -> Manifest:
        """Parse a manifest; :class:`IntegrityError` naming ``name`` if malformed or, in
        version 2, if it does not match its digest."""
        d = load_document(data, fmt=FORMAT, version=VERSIONS, what="manifest", name=name)
        version = int(d["version"])
        digest = check_digest(d, what="manifest", name=name) if version >= 2 else None
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
                writelog=None
                if objs["writelog"] is None
                else ObjectRef.from_dict(objs["writelog"]),
                created_us=int(d["created_us"]),
                previous_digest=None
                if prev is None or version < 2
                else _hex_digest(prev["digest"]),
                fenced=tuple(_strings(d["fenced"])) if version >= 2 else (),
                baseline_open=version >= 2 and _flag(d.get("baseline_open", False)),
                version=version,
                merged=Merged.from_dict(d["merged"]) if version >= MERGED_VERSION else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(
                f"{name}: malformed manifest ({type(exc).__name__}: {exc})"
            ) from None
        if m.last_offset < m.first_offset:
            raise IntegrityError(f"{name}: last_offset before first_offset")
        # the digest of the stored document (a v1 document may differ from to_dict's)
        object.__setattr__(m, "digest", digest or canonical_digest(d))
        return m


def _hex_digest(value: object) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(f"not a SHA-256 hex digest: {value!r}")
    int(value, 16)
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("baseline_open must be true or false")
    return value


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("fenced must be a list of strings")
    return value


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
    except ObjectNotFoundError:
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
    except ObjectNotFoundError:
        raise GapError(f"object {ref.key} is missing") from None
    if len(data) != ref.size:
        raise IntegrityError(f"object {ref.key}: {len(data)} bytes, manifest says {ref.size}")
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise IntegrityError(f"object {ref.key}: SHA-256 does not match its manifest")
    return data
