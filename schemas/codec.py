"""Encode and decode kafka-cdp Avro records.

Two framings, chosen per codec:

* **single-object** (default, no registry): ``C3 01`` + 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema's canonical form + Avro binary body. The reader
  resolves the writer schema by fingerprint among the schemas it knows (the project's own
  plus any added with :meth:`AvroCodec.add_writer_schema`).
* **confluent** (``--schema-registry URL``): ``00`` + 4-byte big-endian schema id + body;
  the schema is registered under subject ``<topic>-value`` and writer schemas are fetched
  by id. ``mock://...`` URLs use confluent-kafka's in-process mock registry.

A codec *encodes* in its own framing but *decodes* both, told apart by the first byte(s),
so one topic may hold both (a registry switched on later, an old producer). Ids are
resolved through the registry once per codec (parsed writer schemas cached by id) and the
registry client is shared by every codec of the process with the same URL and settings
(its own cache, and one ``mock://NAME`` registry per name in the process, as
``memory://NAME`` stores are).

Every failure of the record itself — garbage, truncation, trailing bytes, unknown
fingerprint, an id the registry says it does not know, Confluent framing with no registry
configured — raises :class:`connectors.errors.DecodeError`, never anything else. A
registry that cannot answer (unreachable, timed out, a server error, a refusal of our
credentials) says nothing about the record: that is a
:class:`connectors.errors.RegistryError` (retriable unless refused), raised after the codec
kept retrying for ``registry_wait`` seconds, so a reader fails or retries instead of
treating good records as bad.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from connectors.errors import ConfigError, DecodeError, KcdpError, RegistryError
from schemas import load_schema, schema_json
from schemas.events import WriteEvent
from schemas.registry import registry_client_for, registry_failure

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

log = logging.getLogger("kcdp.codec")


def schema_fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO fingerprint (8 bytes, little-endian) of a parsed schema."""
    canonical = to_parsing_canonical_form(schema)
    # fastavro's hex string already lists the fingerprint's bytes little-endian first
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class AvroCodec:
    """Encoder/decoder for one record type (a reader schema).

    ``registry_url`` (or an existing ``registry_client``) switches to the Confluent wire
    format; ``subject`` names the registry subject (conventionally ``<topic>-value``). A
    ``mock://`` registry lives inside its client: codecs made from the same URL (and
    ``registry_config``) in one process share one client, hence one registry.
    ``registry_wait`` [0 s]: how long a registry that cannot answer is retried (with
    backoff, past the client's own retries) before :class:`RegistryError` is raised.
    """

    def __init__(
        self,
        schema_name: str = "WriteEvent",
        *,
        reader_schema: Any = None,
        registry_url: str | None = None,
        subject: str | None = None,
        registry_config: dict[str, Any] | None = None,
        registry_client: Any = None,
        registry_wait: float = 0.0,
    ) -> None:
        self.schema_name = schema_name
        self.registry_wait = registry_wait
        self.schema = reader_schema if reader_schema is not None else load_schema(schema_name)
        # the text registered for this codec's own schema (Confluent framing)
        self._schema_text = (
            json.dumps(schema_json(schema_name))
            if reader_schema is None
            else to_parsing_canonical_form(reader_schema)
        )
        self._fingerprint = schema_fingerprint(self.schema)
        # the WriteEvent fast path applies to the project's own WriteEvent schema only
        self._fast = schema_name == "WriteEvent" and reader_schema is None
        self._heads: dict[tuple[int, str, str, str, str], bytes] = {}
        self._writers: dict[bytes, Any] = {self._fingerprint: self.schema}
        self._registry: Any = None
        self._schema_id: int | None = None
        self._writers_by_id: dict[int, Any] = {}
        self.subject = subject or f"kcdp.{schema_name}-value"
        if registry_client is not None:
            self._registry = registry_client
        elif registry_url:
            self._registry = registry_client_for(registry_url, registry_config or {})

    @property
    def framing(self) -> str:
        return "confluent" if self._registry is not None else "single-object"

    def add_writer_schema(self, schema: dict[str, Any] | Any) -> None:
        """Let this codec read single-object records written with ``schema``."""
        parsed = fastavro.parse_schema(schema) if isinstance(schema, dict) else schema
        self._writers[schema_fingerprint(parsed)] = parsed

    # -- encoding -----------------------------------------------------------------------
    def encode(self, record: dict[str, Any]) -> bytes:
        """Frame and encode ``record`` with this codec's schema."""
        if self._fast:
            try:
                fast = self._encode_write_event(
                    record["format_version"],
                    record["group"],
                    record["volume"],
                    record["session"],
                    record["host"],
                    record["sequence"],
                    record["kind"],
                    record["offset"],
                    record["length"],
                    record["data"],
                    record["volume_size"],
                    record["timestamp_us"],
                    record["crc32c"],
                    record["name"],
                )
            except KeyError:  # a field left to its schema default: the general path
                fast = None
            if fast is not None:
                return fast
        buf = io.BytesIO()
        buf.write(self._header())
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def encode_event(self, event: WriteEvent) -> bytes:
        """``encode(event.to_record())`` without building the record (WriteEvent codecs)."""
        if self._fast:
            fast = self._encode_write_event(
                event.format_version,
                event.group,
                event.volume,
                event.session,
                event.host,
                event.sequence,
                event.kind,
                event.offset,
                event.length,
                event.data,
                event.volume_size,
                event.timestamp_us,
                event.crc32c,
                event.name,
            )
            if fast is not None:
                return fast
        return self.encode(event.to_record())

    def _header(self) -> bytes:
        if self._registry is None:
            return SINGLE_OBJECT_MAGIC + self._fingerprint
        return CONFLUENT_MAGIC + struct.pack(">I", self._registered_id())

    def _encode_write_event(
        self,
        format_version: Any,
        group: Any,
        volume: Any,
        session: Any,
        host: Any,
        sequence: Any,
        kind: Any,
        offset: Any,
        length: Any,
        data: Any,
        volume_size: Any,
        timestamp_us: Any,
        crc: Any,
        name: Any,
    ) -> bytes | None:
        """The framed WriteEvent, byte-identical to fastavro's; None if a value is unusual.

        Only exact ``int``/``str``/``bytes`` values in range take this path; anything else
        (wrong types, out-of-range numbers, unknown kinds) returns None so the general
        encoder produces its usual result or error.
        """
        if (
            type(sequence) is not int
            or type(offset) is not int
            or type(length) is not int
            or type(volume_size) is not int
            or type(timestamp_us) is not int
            or type(crc) is not int
            or type(data) is not bytes
            or type(name) is not str
            or min(sequence, offset, length, volume_size, timestamp_us, crc) < _LONG_MIN
            or max(sequence, offset, length, volume_size, timestamp_us, crc) > _LONG_MAX
        ):
            return None
        kind_index = _KIND_INDEX.get(kind) if isinstance(kind, str) else None
        if kind_index is None:
            return None
        head = self._heads.get((format_version, group, volume, session, host))
        if head is None:
            head = self._head(format_version, group, volume, session, host)
            if head is None:
                return None
        if name:
            try:
                raw = name.encode("utf-8")
            except UnicodeEncodeError:
                return None
        else:
            raw = b""
        out = bytearray(head)
        _put_longs(out, (sequence, kind_index, offset, length, len(data)))
        tail = bytearray()
        _put_longs(tail, (volume_size, timestamp_us, crc, len(raw)))
        tail += raw
        return b"".join((out, data, tail))

    def _head(
        self, format_version: Any, group: Any, volume: Any, session: Any, host: Any
    ) -> bytes | None:
        """Header plus the per-session fields (cached: they repeat on every event)."""
        if (
            type(format_version) is not int
            or not _INT_MIN <= format_version <= _INT_MAX
            or type(group) is not str
            or type(volume) is not str
            or type(session) is not str
            or type(host) is not str
        ):
            return None
        out = bytearray(self._header())
        _put_longs(out, (format_version,))
        for text in (group, volume, session, host):
            try:
                raw = text.encode("utf-8")
            except UnicodeEncodeError:
                return None
            _put_longs(out, (len(raw),))
            out += raw
        head = bytes(out)
        if len(self._heads) >= _MAX_HEADS:
            self._heads.clear()
        self._heads[(format_version, group, volume, session, host)] = head
        return head

    # -- decoding -----------------------------------------------------------------------
    def decode(self, payload: bytes) -> dict[str, Any]:
        """Decode one framed record into a dict shaped by the reader schema."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise DecodeError(f"expected bytes, got {type(payload).__name__}")
        data = bytes(payload)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError("truncated single-object header")
            writer = self._writers.get(data[2:10])
            if writer is None:
                raise DecodeError(
                    f"unknown writer schema fingerprint {data[2:10].hex()} for {self.schema_name}"
                )
            body = 10
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            writer = self._writer_by_id(struct.unpack(">I", data[1:5])[0])
            body = 5
        else:
            raise DecodeError(
                f"not a kafka-cdp {self.schema_name} record (bad magic {data[:2].hex() or 'empty'})"
            )
        stream = io.BytesIO(data)
        stream.seek(body)
        try:
            record = fastavro.schemaless_reader(stream, writer, self.schema)
        except Exception as exc:  # fastavro raises many types on bad input
            raise DecodeError(
                f"cannot decode {self.schema_name}: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(record, dict):
            raise DecodeError(f"{self.schema_name} record did not decode to a record")
        if stream.tell() != len(data):
            raise DecodeError(
                f"{len(data) - stream.tell()} trailing bytes after a {self.schema_name} record"
            )
        return record

    # -- registry -----------------------------------------------------------------------
    def _registered_id(self) -> int:
        if self._schema_id is None:
            from confluent_kafka.schema_registry import Schema

            schema = Schema(self._schema_text, "AVRO")
            what = f"registering {self.subject}"
            found = self._ask(what, lambda: self._registry.register_schema(self.subject, schema))
            if isinstance(found, KcdpError):  # refused (incompatible, invalid)
                raise ConfigError(f"schema registry refused {self.subject}: {found}")
            self._schema_id = int(found)
            self._writers_by_id[self._schema_id] = self.schema
        return self._schema_id

    def _writer_by_id(self, schema_id: int) -> Any:
        writer = self._writers_by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            raise DecodeError(
                f"record uses the Confluent wire format (schema id {schema_id}) "
                "but no --schema-registry is configured"
            )
        found = self._ask(
            f"resolving schema id {schema_id}", lambda: self._registry.get_schema(schema_id)
        )
        if isinstance(found, KcdpError):
            raise DecodeError(f"unknown schema id {schema_id}: {found}")
        kind = getattr(found, "schema_type", None) or "AVRO"
        try:
            if kind != "AVRO":
                raise ValueError(f"a {kind} schema, not Avro")
            writer = fastavro.parse_schema(json.loads(found.schema_str))
        except Exception as exc:  # what the id names is not an Avro schema we can read
            raise DecodeError(
                f"schema id {schema_id} cannot be read: {type(exc).__name__}: {exc}"
            ) from None
        self._writers_by_id[schema_id] = writer
        return writer

    def _ask(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()``'s answer; a DecodeError-worthy refusal (the registry answered "no")
        is *returned* as an error; a registry that cannot answer is retried for
        :attr:`registry_wait` seconds, then raised as :class:`RegistryError`."""
        deadline = time.monotonic() + self.registry_wait
        pause = 0.25
        while True:
            try:
                return call()
            except Exception as exc:
                failure = registry_failure(exc, what)
            if not isinstance(failure, RegistryError):
                return failure
            left = deadline - time.monotonic()
            if not failure.retriable or left <= 0:
                raise failure
            log.warning("%s; retrying for up to %.0f s", failure, left)
            time.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)


_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
#: Distinct (format_version, group, volume, session, host) heads kept by one codec.
_MAX_HEADS = 256
#: Each WriteEvent kind's enum index (written as a long).
_KIND_INDEX: dict[str, int] = {
    symbol: index
    for index, symbol in enumerate(
        next(f for f in schema_json("WriteEvent")["fields"] if f["name"] == "kind")["type"][
            "symbols"
        ]
    )
}


def _put_longs(out: bytearray, values: tuple[int, ...]) -> None:
    """Append Avro's zig-zag varint of each 64-bit value to ``out``."""
    for n in values:
        n = (n << 1) ^ (n >> 63)
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
