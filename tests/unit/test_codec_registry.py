"""Both framings through one codec, and what a registry failure means.

The registry here is :class:`tests.registry_server.RegistryServer` (the Confluent REST API
over real HTTP on 127.0.0.1, so the client's requests, cache, retries and errors are its
own) or confluent-kafka's in-process ``mock://`` registry; docs/FORMAT.md "Event encoding".
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connectors.config import Settings
from connectors.errors import ConfigError, DecodeError, KcdpError, RegistryError
from connectors.store.memory import MemoryStore
from schemas.codec import AvroCodec
from schemas.decode import EventDecoder
from schemas.events import EventKind, WriteEvent
from schemas.manifest import list_window_keys
from schemas.registry import registry_failure
from streams.options import BuildOptions, WorkerOptions
from streams.partition import PartitionProcessor
from streams.window import WindowPolicy
from streams.worker import _codec
from tests.registry_server import RegistryServer
from tests.streams_support import Volume, check_chain, states_after

FAST = {"max.retries": 0}  # no client-side retries: outages are seen at once


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def _events() -> tuple[Volume, list[WriteEvent]]:
    v = Volume("reg", 4096)
    return v, [*v.start(), v.write(0, b"one"), v.write(100, b"two"), v.write(2, b"three")]


def test_a_registry_codec_reads_both_framings(registry: RegistryServer) -> None:
    _, events = _events()
    plain = AvroCodec()
    framed = AvroCodec(registry_url=registry.url, subject="t-value")
    mixed = [(plain if i % 2 else framed).encode_event(e) for i, e in enumerate(events)]
    assert {m[:1] for m in mixed} == {b"\x00", b"\xc3"}
    decoder = EventDecoder(AvroCodec(registry_url=registry.url, subject="t-value"))
    assert [decoder.decode(m) for m in mixed] == events
    # ids are resolved once: a second pass asks the registry nothing
    asked = len(registry.requests)
    assert [decoder.decode(m) for m in mixed] == events
    assert len(registry.requests) == asked


def test_mock_registries_are_shared_by_url_within_the_process() -> None:
    _, events = _events()
    writer = AvroCodec(registry_url="mock://shared-by-url", subject="t-value")
    reader = AvroCodec(registry_url="mock://shared-by-url", subject="t-value")
    stranger = AvroCodec(registry_url="mock://another-registry", subject="t-value")
    value = writer.encode_event(events[-1])
    assert WriteEvent.from_record(reader.decode(value)) == events[-1]
    with pytest.raises(DecodeError, match="unknown schema id"):
        stranger.decode(value)


def test_an_id_the_registry_does_not_know_is_a_bad_record(registry: RegistryServer) -> None:
    codec = AvroCodec(registry_url=registry.url, subject="t-value")
    body = codec.encode_event(_events()[1][-1])[5:]
    with pytest.raises(DecodeError, match=r"unknown schema id 77: .*40403"):
        codec.decode(b"\x00" + struct.pack(">I", 77) + body)


def test_an_unreachable_registry_is_retriable_and_not_a_decode_error(
    registry: RegistryServer,
) -> None:
    value = AvroCodec(registry_url=registry.url, subject="t-value").encode_event(_events()[1][0])
    registry.stop()
    reader = AvroCodec(registry_url=registry.url, registry_config=FAST)
    with pytest.raises(RegistryError, match="unreachable while resolving schema id 1") as info:
        reader.decode(value)
    assert info.value.retriable and not isinstance(info.value, DecodeError)
    assert info.value.exit_code == 5


def test_a_codec_waits_for_the_registry_to_come_back(registry: RegistryServer) -> None:
    event = _events()[1][-1]
    value = AvroCodec(registry_url=registry.url, subject="t-value").encode_event(event)
    registry.stop()
    reader = AvroCodec(registry_url=registry.url, registry_config=FAST, registry_wait=20)
    threading.Timer(1.0, registry.start).start()
    assert WriteEvent.from_record(reader.decode(value)) == event


def test_registry_answers_are_classified() -> None:
    def classify(status: int, code: int = -1) -> KcdpError:
        return registry_failure(SchemaRegistryError(status, code, "said no"), "asking")

    for status in (500, 503, 408, 429):
        failure = classify(status)
        assert isinstance(failure, RegistryError) and failure.retriable
    for status in (401, 403):
        failure = classify(status)
        assert isinstance(failure, RegistryError) and not failure.retriable
        assert "credentials" in failure.message
    for status in (404, 409, 422):  # an answer about the request itself
        assert not isinstance(classify(status, status * 100 + 3), RegistryError)
    assert isinstance(registry_failure(OSError("refused"), "asking"), RegistryError)


def test_a_refused_registration_is_a_config_error_and_an_outage_is_not() -> None:
    codec = AvroCodec(registry_url="mock://refusing", subject="refused-value")

    class Refusing:
        status = 409

        def register_schema(self, subject: str, schema: object) -> int:
            raise SchemaRegistryError(self.status, self.status, "no")

    codec._registry = Refusing()
    with pytest.raises(ConfigError, match="refused refused-value"):
        codec.encode_event(_events()[1][0])
    Refusing.status = 503
    with pytest.raises(RegistryError, match="failed registering refused-value") as info:
        codec.encode_event(_events()[1][0])
    assert info.value.retriable


def test_the_processor_does_not_dead_letter_records_during_an_outage(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """A registry outage stops the feed (RegistryError) with no dead letter; a forged id
    is a dead letter; once the registry is back every event is windowed exactly."""
    v, events = _events()
    framed = AvroCodec(registry_url=registry.url, subject="t-value")
    plain = AvroCodec()
    values = [(plain if i % 2 else framed).encode_event(e) for i, e in enumerate(events)]
    forged = b"\x00" + struct.pack(">I", 99) + values[0][5:]
    store = MemoryStore()

    def proc() -> PartitionProcessor:
        opts = BuildOptions(topic="t", partition=0, workdir=tmp_path, policy=WindowPolicy(count=2))
        reader = AvroCodec(registry_url=registry.url, registry_config=FAST)
        p = PartitionProcessor(store, opts, codec=reader)
        p.open(0)
        return p

    registry.stop()
    p = proc()
    with pytest.raises(RegistryError):
        p.feed([(0, None, values[0])])
    p.close()
    registry.start()
    p = proc()
    records = [(o, None, val) for o, val in enumerate(values)]
    records.insert(3, (3, None, forged))
    records = [(o, k, val) for o, (_, k, val) in enumerate(records)]
    out = p.feed(records)
    p.close()
    assert [(d.offset, d.error) for d in out.dead_letters] == [(3, "DecodeError")]
    assert "unknown schema id 99" in out.dead_letters[0].reason
    offsets = [o for o, _, val in records if val != forged]
    states = states_after(events, offsets, v.size)
    manifests = check_chain(store, "reg", v.size, states)
    assert sum(m.events for m in manifests) == len(events)
    assert list_window_keys(store, "reg")[-1][1] == offsets[-1]


def test_the_worker_writes_each_topic_in_the_confluent_format_with_a_registry() -> None:
    opts = WorkerOptions(workdir=Path("/nonexistent"), policy=WindowPolicy(count=1))
    on = Settings(schema_registry="mock://worker-codecs")
    tick = WriteEvent(group="", volume="", sequence=-1, kind=EventKind.TICK, timestamp_us=5)
    for schema, topic in (
        ("WriteEvent", on.topic),
        ("DeadLetter", on.dlq_topic),
        ("WindowCommitted", on.increments_topic),
    ):
        codec = _codec(on, schema, topic, opts)
        assert codec.framing == "confluent" and codec.subject == f"{topic}-value"
        assert codec.registry_wait == opts.registry_wait
        off = _codec(Settings(), schema, topic, opts)
        assert off.framing == "single-object"
    framed = _codec(on, "WriteEvent", on.topic, opts).encode_event(tick)
    assert framed[:1] == b"\x00"
    assert (
        WriteEvent.from_record(AvroCodec(registry_url="mock://worker-codecs").decode(framed))
        == tick
    )
