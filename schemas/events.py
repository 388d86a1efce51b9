"""Value types of the event stream: :class:`EventKind` and :class:`WriteEvent`.

A :class:`WriteEvent` is the Python face of the ``io.kcdp.v1.WriteEvent`` record. Its
``validate`` states the rules every consumer enforces (see docs/FORMAT.md).
"""

from __future__ import annotations

import enum
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import crc32c as _crc32c

from connectors.errors import InvalidEventError


class EventKind(enum.StrEnum):
    WRITE = "WRITE"
    ZERO = "ZERO"
    TRIM = "TRIM"
    BOOKMARK = "BOOKMARK"
    BASELINE = "BASELINE"
    BASELINE_START = "BASELINE_START"
    BASELINE_END = "BASELINE_END"
    SESSION_START = "SESSION_START"
    SESSION_END = "SESSION_END"
    TICK = "TICK"


#: kinds that carry bytes in ``data``.
DATA_KINDS = frozenset({EventKind.WRITE, EventKind.BASELINE})
#: kinds that change volume bytes.
CHANGE_KINDS = frozenset({EventKind.WRITE, EventKind.BASELINE, EventKind.ZERO, EventKind.TRIM})


#: The event format producers write (docs/FORMAT.md "The seal"); readers accept every
#: version in :data:`EVENT_FORMATS`.
EVENT_FORMAT = 2
EVENT_FORMATS = frozenset({1, 2})
#: ``kind`` → its index in the Avro enum (the schema's symbol order), for the seal.
_KIND_INDEX = {k: i for i, k in enumerate(EventKind)}
_HEADER_INTS = struct.Struct("<7q")
_TEXT_LEN = struct.Struct("<I")


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data`` as an unsigned int; ``value`` continues a CRC."""
    return int(_crc32c.crc32c(data, value))


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class WriteEvent:
    """One event of topic ``kcdp.writes``; field meanings are those of the Avro schema."""

    group: str
    volume: str
    sequence: int
    kind: EventKind
    timestamp_us: int
    offset: int = 0
    length: int = 0
    data: bytes = b""
    volume_size: int = 0
    crc32c: int = 0
    session: str = ""
    host: str = ""
    name: str = ""
    format_version: int = field(default=1)
    #: CRC-32C of ``data`` alone, set by :meth:`validate` and :meth:`seal` (not a field
    #: of the record; see :meth:`data_crc32c`)
    _data_crc: int | None = field(default=None, init=False, compare=False, repr=False)

    def to_record(self) -> dict[str, Any]:
        """A dict ready for the Avro codec."""
        rec = asdict(self)
        del rec["_data_crc"]
        rec["kind"] = str(self.kind)
        return rec

    def header(self) -> bytes:
        """The canonical header the format-2 seal covers (docs/FORMAT.md "The seal")."""
        parts = [
            _HEADER_INTS.pack(
                self.format_version,
                self.sequence,
                _KIND_INDEX[self.kind],
                self.offset,
                self.length,
                self.volume_size,
                self.timestamp_us,
            )
        ]
        for text in (self.group, self.volume, self.session, self.host, self.name):
            raw = text.encode()
            parts += (_TEXT_LEN.pack(len(raw)), raw)
        return b"".join(parts)

    def seal(self) -> WriteEvent:
        """Make this a format-2 event and set ``crc32c`` to its seal; returns ``self``.
        Producers call it once every other field is final."""
        self.format_version = EVENT_FORMAT
        self._data_crc = None
        self.crc32c = crc32c(self.header(), self.data_crc32c())
        return self

    def with_data_crc32c(self, value: int) -> WriteEvent:
        """Take ``value`` as the CRC-32C of ``data`` (for an event rebuilt from fields of a
        validated one); returns ``self``."""
        self._data_crc = value
        return self

    def data_crc32c(self) -> int:
        """CRC-32C of ``data`` (0 when empty): what write-log records carry."""
        if self._data_crc is None:
            self._data_crc = crc32c(self.data)
        return self._data_crc

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> WriteEvent:
        """Build from a decoded Avro record (unknown extra fields are ignored)."""
        return cls(
            group=rec["group"],
            volume=rec["volume"],
            sequence=rec["sequence"],
            kind=EventKind(rec["kind"]),
            timestamp_us=rec["timestamp_us"],
            offset=rec.get("offset", 0),
            length=rec.get("length", 0),
            data=rec.get("data", b""),
            volume_size=rec.get("volume_size", 0),
            crc32c=rec.get("crc32c", 0),
            session=rec.get("session", ""),
            host=rec.get("host", ""),
            name=rec.get("name", ""),
            format_version=rec.get("format_version", 1),
        )

    def validate(self) -> None:
        """Raise :class:`InvalidEventError` if the event breaks a rule of docs/FORMAT.md."""
        self.validate_trusting_crc()
        if self.kind is EventKind.TICK:
            return
        self._data_crc = None  # computed afresh: the data may have changed since
        data_crc = self.data_crc32c()
        if self.format_version >= 2:
            if crc32c(self.header(), data_crc) != self.crc32c:
                raise InvalidEventError(
                    f"{self._where()}: the event does not match its seal (CRC-32C)"
                )
        elif self.kind in DATA_KINDS and data_crc != self.crc32c:
            raise InvalidEventError(f"{self._where()}: data does not match its CRC-32C")

    def validate_trusting_crc(self) -> None:
        """Every rule of :meth:`validate` except re-hashing ``data`` against ``crc32c``.

        For producers that just computed ``crc32c`` from ``data`` themselves; consumers
        use :meth:`validate`.
        """
        if self.format_version not in EVENT_FORMATS:
            raise InvalidEventError(
                f"{self._where()}: unknown event format {self.format_version} "
                f"(known: {', '.join(map(str, sorted(EVENT_FORMATS)))})"
            )
        if self.kind is EventKind.TICK:
            if self.volume or self.sequence != -1 or self.data or self.crc32c:
                raise InvalidEventError("TICK must have no volume, sequence -1, data or CRC")
            return
        if not self.volume:
            raise InvalidEventError(f"{self.kind} event without a volume name")
        if not self.session:
            raise InvalidEventError(f"{self._where()}: {self.kind} event without a session id")
        if self.sequence < 0 or (self.kind is EventKind.SESSION_START and self.sequence != 0):
            raise InvalidEventError(
                f"{self._where()}: sequence must be >= 0, and 0 for SESSION_START"
            )
        self._check_extent()

    def _check_extent(self) -> None:
        """The rules on offset, length, volume size, data and name."""
        if self.offset < 0 or self.length < 0:
            raise InvalidEventError(
                f"{self._where()}: negative offset or length ({self.offset}, {self.length})"
            )
        if self.volume_size <= 0:
            raise InvalidEventError(f"{self._where()}: volume_size must be positive")
        if self.kind in CHANGE_KINDS:
            if self.length == 0:
                raise InvalidEventError(f"{self._where()}: empty {self.kind}")
            if self.offset + self.length > self.volume_size:
                raise InvalidEventError(
                    f"{self._where()}: {self.kind} [{self.offset}, {self.offset + self.length}) "
                    f"ends past the volume end {self.volume_size}"
                )
        if self.kind in DATA_KINDS:
            if len(self.data) != self.length:
                raise InvalidEventError(
                    f"{self._where()}: length {self.length} but {len(self.data)} data bytes"
                )
        elif self.data or (self.crc32c and self.format_version < 2):
            raise InvalidEventError(f"{self._where()}: {self.kind} must not carry data or a CRC")
        if self.kind is EventKind.BOOKMARK and not self.name:
            raise InvalidEventError(f"{self._where()}: bookmark without a name")

    def _where(self) -> str:
        """Names the event in error messages (built only when raising)."""
        return f"volume {self.volume!r} sequence {self.sequence}"
