"""Gap records (docs/FORMAT.md "Gap records"): holes in a volume's history, as JSON."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from connectors.errors import IntegrityError
from connectors.store.base import ObjectStore
from schemas import keys
from schemas.document import load_document

FORMAT = "kcdp-gap"
VERSION = 1
KINDS = ("sequence", "session", "retention")


@dataclass(frozen=True, slots=True)
class Gap:
    """A detected hole before Kafka offset ``at_offset`` of ``volume``."""

    volume: str
    kind: str
    at_offset: int
    after_offset: int | None
    session: str
    expected_sequence: int | None
    got_sequence: int | None
    detail: str
    detected_us: int

    @property
    def key(self) -> str:
        return keys.gap_key(self.volume, self.at_offset)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "volume": self.volume,
                "kind": self.kind,
                "at_offset": self.at_offset,
                "after_offset": self.after_offset,
                "session": self.session,
                "expected_sequence": self.expected_sequence,
                "got_sequence": self.got_sequence,
                "detail": self.detail,
                "detected_us": self.detected_us,
            }
        )

    @classmethod
    def from_json(cls, data: bytes, *, name: str = "gap record") -> Gap:
        """Parse a gap record; :class:`IntegrityError` naming ``name`` if malformed."""
        d = load_document(data, fmt=FORMAT, version=VERSION, what="gap record", name=name)
        try:
            if d["kind"] not in KINDS:
                raise IntegrityError(f"{name}: unknown gap kind {d['kind']!r}")
            return cls(
                volume=str(d["volume"]),
                kind=str(d["kind"]),
                at_offset=int(d["at_offset"]),
                after_offset=None if d["after_offset"] is None else int(d["after_offset"]),
                session=str(d["session"]),
                expected_sequence=None
                if d["expected_sequence"] is None
                else int(d["expected_sequence"]),
                got_sequence=None if d["got_sequence"] is None else int(d["got_sequence"]),
                detail=str(d["detail"]),
                detected_us=int(d["detected_us"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{name}: malformed gap record ({exc})") from None


def list_gaps(store: ObjectStore, volume: str) -> list[Gap]:
    """Every gap record of ``volume``, by offset."""
    out = []
    for info in store.list(keys.gaps_prefix(volume)):
        out.append(Gap.from_json(store.get(info.key), name=info.key))
    return sorted(out, key=lambda g: g.at_offset)
