"""The live replica on the real broker: partition by murmur2, --until-offset, resume after
kill -9, refusal across a sequence gap, and single writes replayed straight from Kafka."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from connectors.errors import GapError, NotRestorableError
from connectors.kafka import ensure_topics, producer_config
from connectors.restore.catalog import Catalog
from connectors.restore.inplace import move_in_place
from connectors.restore.inplace_plan import choose
from connectors.restore.kafka_source import KafkaReplay
from connectors.restore.materialize import restore_point
from connectors.restore.partitioner import group_partition, partition_for
from connectors.restore.planner import plan_restore
from connectors.restore.replica import Replica
from connectors.store import MemoryStore
from schemas.applied_state import load_state
from schemas.codec import AvroCodec
from schemas.events import EventKind, WriteEvent
from tests.event_factory import make_event
from tests.restore_history import POLICIES, History, random_history, write_store

PARTITIONS = 3
KCDP = str(Path(sys.executable).parent / "kcdp")


def _produce(bootstrap: str, topic: str, events: list[WriteEvent]) -> list[tuple[int, int]]:
    codec = AvroCodec()
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    acks: list[tuple[int, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        acks.append((partition, offset))

    for ev in events:
        producer.produce(
            topic,
            key=ev.group.encode(),
            value=codec.encode(ev.to_record()),
            on_delivery=on_delivery,
        )
    assert producer.flush(30) == 0
    return acks


def _topic(bootstrap: str) -> str:
    name = f"rep-{uuid.uuid4().hex[:10]}"
    ensure_topics({"bootstrap.servers": bootstrap}, {name: PARTITIONS})
    return name


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(random.Random("replica"), events=240, group="grp-7")


@pytest.fixture(scope="module")
def produced(bootstrap: str, history: History) -> str:
    topic = _topic(bootstrap)
    acks = _produce(bootstrap, topic, history.events)
    assert {p for p, _ in acks} == {partition_for("grp-7", PARTITIONS)}
    assert [o for _, o in acks] == list(range(len(history.events)))
    return topic


def test_murmur2_matches_the_java_client() -> None:
    from connectors.restore.partitioner import murmur2

    # vectors from Kafka's own UtilsTest (signed ints there)
    for text, want in [
        ("21", -973932308),
        ("foobar", -790332482),
        ("abc", 479470107),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
    ]:
        assert murmur2(text.encode()) == want & 0xFFFFFFFF, text


def test_replica_until_offset_then_catch_up(
    bootstrap: str, produced: str, history: History, tmp_path: Path
) -> None:
    conf = {"bootstrap.servers": bootstrap}
    partition = group_partition(conf, produced, "grp-7")
    out = tmp_path / "va.img"
    point = len(history.events) // 2
    replica = Replica(
        volume="va", output=out, partition=partition, kafka_conf=conf, topic=produced, batch_max=37
    )
    state = replica.run(until_offset=point)
    assert state.applied_offset == point
    assert out.read_bytes() == history.image_at("va", point)
    assert load_state(out) == state
    again = Replica(volume="va", output=out, partition=partition, kafka_conf=conf, topic=produced)
    end = len(history.events) - 1
    assert again.run().applied_offset == end
    assert out.read_bytes() == history.image_at("va", end)


def test_replica_survives_kill_9(bootstrap: str, history: History, tmp_path: Path) -> None:
    topic = _topic(bootstrap)
    half = len(history.events) // 2
    _produce(bootstrap, topic, history.events[:half])
    out = tmp_path / "live.img"
    base = [
        KCDP,
        "replica",
        "va",
        "-o",
        str(out),
        "--group",
        "grp-7",
        "--topic",
        topic,
        "--bootstrap-servers",
        bootstrap,
    ]
    proc = subprocess.Popen([*base, "--follow"], stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (s := load_state(out)) is not None and s.applied_offset >= half - 1)
        _produce(bootstrap, topic, history.events[half:])
        _wait_for(lambda: (s := load_state(out)) is not None and s.applied_offset > half)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    killed_at = load_state(out)
    assert killed_at is not None and killed_at.applied_offset >= half
    end = len(history.events) - 1
    target = min(end, killed_at.applied_offset + 17)
    subprocess.run([*base, "--until-offset", str(target)], check=True, timeout=60)
    state = load_state(out)
    assert state is not None and state.applied_offset == target
    assert out.read_bytes() == history.image_at("va", target)
    subprocess.run(base, check=True, timeout=60)
    state = load_state(out)
    assert state is not None and state.applied_offset == end
    assert out.read_bytes() == history.image_at("va", end)


def _wait_for(cond, timeout: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_replica_refuses_to_cross_a_sequence_gap(bootstrap: str, tmp_path: Path) -> None:
    topic = _topic(bootstrap)

    def ev(seq: int, kind: EventKind, offset: int = 0, data: bytes = b"") -> WriteEvent:
        return make_event(
            kind,
            offset,
            data,
            volume="vg",
            group="gg",
            sequence=seq,
            timestamp_us=1,
            volume_size=4096,
            session="s1",
            sealed=False,  # format 1, as the events of this test always were
        )

    data = b"x" * 10
    events = [
        ev(0, EventKind.SESSION_START),
        ev(1, EventKind.WRITE, 5, data),
        ev(4, EventKind.WRITE, 0, data),
    ]
    acks = _produce(bootstrap, topic, events)
    conf = {"bootstrap.servers": bootstrap}
    replica = Replica(
        volume="vg", output=tmp_path / "g.img", partition=acks[0][0], kafka_conf=conf, topic=topic
    )
    with pytest.raises(GapError, match="expected 2, got 4"):
        replica.run()
    state = load_state(tmp_path / "g.img")
    assert state is not None and state.applied_offset == 1
    assert (tmp_path / "g.img").read_bytes() == bytes(5) + data + bytes(4096 - 15)


def test_single_writes_replayed_from_kafka(
    bootstrap: str, produced: str, history: History, tmp_path: Path
) -> None:
    partition = partition_for("grp-7", PARTITIONS)
    store = MemoryStore()
    write_store(store, history, POLICIES["count7"], topic=produced, partition=partition)
    catalog = Catalog(store, "vb")
    window = catalog.windows[len(catalog.windows) // 2]
    point = window.last - 1
    kafka = KafkaReplay(
        kafka_conf={"bootstrap.servers": bootstrap}, topic=produced, partition=partition
    )
    out = tmp_path / "vb.img"
    result = restore_point(store, catalog, point, out, kafka=kafka, progress=False)
    assert result.plan.path.replay is not None and result.replay_source == "kafka"
    assert out.read_bytes() == history.image_at("vb", point)


def test_points_after_the_newest_window_come_from_kafka(
    bootstrap: str, produced: str, history: History, tmp_path: Path
) -> None:
    partition = partition_for("grp-7", PARTITIONS)
    stored = History(history.group, history.sizes, history.events[: len(history.events) // 2])
    store = MemoryStore()
    write_store(store, stored, POLICIES["count7"], topic=produced, partition=partition)
    catalog = Catalog(store, "va")
    newest = catalog.windows[-1].last
    later = [o for o, _ in history.of("va") if o > newest + 5]
    kafka = KafkaReplay(
        kafka_conf={"bootstrap.servers": bootstrap}, topic=produced, partition=partition
    )
    out = tmp_path / "tail.img"
    for point in (later[0], later[len(later) // 2], len(history.events) - 1):
        result = restore_point(store, catalog, point, out, kafka=kafka, progress=False)
        assert result.replay_source == "kafka" and result.plan.path.replay is not None
        assert result.plan.path.replay.ref is None
        assert out.read_bytes() == history.image_at("va", point)
    with pytest.raises(NotRestorableError, match="cannot be read from Kafka"):
        restore_point(store, catalog, len(history.events) + 50, out, kafka=kafka, progress=False)


def test_replica_until_an_offset_not_yet_produced_fails_clearly(
    bootstrap: str, produced: str, history: History, tmp_path: Path
) -> None:
    out = tmp_path / "short.img"
    replica = Replica(
        volume="vb",
        output=out,
        partition=partition_for("grp-7", PARTITIONS),
        kafka_conf={"bootstrap.servers": bootstrap},
        topic=produced,
    )
    end = len(history.events) - 1
    with pytest.raises(NotRestorableError, match=f"offset {end + 10} is not in"):
        replica.run(until_offset=end + 10)
    state = load_state(out)
    assert state is not None and state.applied_offset == end
    assert out.read_bytes() == history.image_at("vb", end)


def _only_after(history: History, volume: str, point: int) -> list[WriteEvent]:
    """``history`` with every event of ``volume`` up to ``point`` replaced by an event of
    another volume of the group at the same offset: the topic then holds ``volume`` only
    after ``point``, as if retention had deleted the rest (Tansu has no DeleteRecords)."""
    return [
        make_event(EventKind.WRITE, 0, b"x", volume="vx", group=history.group, sequence=i)
        if e.volume == volume and o <= point
        else e
        for i, (o, e) in enumerate(enumerate(history.events))
    ]


def test_empty_replica_seeds_from_the_store_then_follows(
    bootstrap: str, history: History, tmp_path: Path
) -> None:
    """No image, no state: the replica starts from the store's newest point and follows
    the topic from the offset after it; from Kafka alone it could not (the first event of
    the volume in the topic is mid-session), so an exact image proves the seed."""
    topic = _topic(bootstrap)
    partition = partition_for("grp-7", PARTITIONS)
    stored = History(history.group, history.sizes, history.events[: len(history.events) // 2])
    store = MemoryStore()
    write_store(store, stored, POLICIES["count7"], topic=topic, partition=partition)
    newest = Catalog(store, "va").latest()
    _produce(bootstrap, topic, _only_after(history, "va", newest))
    conf = {"bootstrap.servers": bootstrap}
    out = tmp_path / "standby" / "va.img"
    out.parent.mkdir()
    with pytest.raises(GapError, match="no SESSION_START"):
        Replica(volume="va", output=out, partition=partition, kafka_conf=conf, topic=topic).run()
    os.unlink(f"{out}.kcdp-replica.json")
    if out.exists():
        out.unlink()
    seeded = Replica(
        volume="va", output=out, partition=partition, kafka_conf=conf, topic=topic, store=store
    )
    assert seeded.run(until_offset=newest).applied_offset == newest
    assert out.read_bytes() == history.image_at("va", newest)
    end = len(history.events) - 1
    state = Replica(
        volume="va", output=out, partition=partition, kafka_conf=conf, topic=topic, store=store
    ).run()
    assert state.applied_offset == end
    assert out.read_bytes() == history.image_at("va", end)
    assert load_state(out) == state


def test_replica_cli_seeds_an_empty_image_from_the_store(
    bootstrap: str, history: History, tmp_path: Path
) -> None:
    """``kcdp replica`` on a missing image with the store of the volume: seeded, then
    followed to the end; ``--no-seed`` keeps to the topic and stops at the gap (exit 6)."""
    from connectors.store import open_store

    topic = _topic(bootstrap)
    partition = partition_for("grp-7", PARTITIONS)
    stored = History(history.group, history.sizes, history.events[: len(history.events) // 3])
    url = f"file://{tmp_path / 'store'}"
    write_store(open_store(url), stored, POLICIES["count7"], topic=topic, partition=partition)
    newest = Catalog(open_store(url), "vb").latest()
    _produce(bootstrap, topic, _only_after(history, "vb", newest))
    args = ["--group", "grp-7", "--topic", topic, "--bootstrap-servers", bootstrap]
    args += ["--store", url, "--json"]
    out = tmp_path / "vb.img"
    no_seed = subprocess.run(
        [KCDP, "replica", "vb", "-o", str(out), *args, "--no-seed"], capture_output=True, text=True
    )
    assert no_seed.returncode == GapError.exit_code, no_seed.stderr
    os.unlink(f"{out}.kcdp-replica.json")
    if out.exists():
        out.unlink()
    res = subprocess.run([KCDP, "replica", "vb", "-o", str(out), *args], capture_output=True)
    assert res.returncode == 0, res.stderr
    end = len(history.events) - 1
    assert out.read_bytes() == history.image_at("vb", end)
    assert load_state(out) is not None and load_state(out).applied_offset == end  # type: ignore[union-attr]


def test_a_standby_rolls_back_in_place_after_the_newest_checkpoint_and_follows_on(
    bootstrap: str, produced: str, history: History, tmp_path: Path
) -> None:
    partition = partition_for("grp-7", PARTITIONS)
    store = MemoryStore()
    write_store(
        store,
        history,
        POLICIES["count7"],
        topic=produced,
        partition=partition,
        checkpoint_every=7,
        checkpoint_last=False,
    )
    catalog = Catalog(store, "va")
    newest = catalog.windows[-1].last
    out = tmp_path / "standby.img"
    conf = {"bootstrap.servers": bootstrap}
    Replica(volume="va", output=out, partition=partition, kafka_conf=conf, topic=produced).run(
        until_offset=newest
    )
    after_cp = [w for w in catalog.windows if w.last > catalog.checkpoints[-1]]
    assert len(after_cp) >= 2, (len(catalog.windows), catalog.checkpoints)
    for target in (after_cp[0].last, (after_cp[1].first + after_cp[1].last) // 2):
        with pytest.raises(NotRestorableError, match="to roll back from"):
            plan_restore(catalog, target, direction="backward")
        state = load_state(out)
        assert state is not None
        choice = choose(catalog, state, target, direction="backward")
        assert choice.chosen == "in-place" and choice.move is not None
        assert choice.move.direction == "backward"
        move_in_place(store, catalog, out, target, plan=choice.move)
        assert out.read_bytes() == history.image_at("va", target)
        moved = load_state(out)
        assert moved is not None and moved.complete and moved.applied_offset == target
        assert (moved.topic, moved.partition) == (produced, partition)
        # the standby follows the topic on from the point it was moved to
        Replica(volume="va", output=out, partition=partition, kafka_conf=conf, topic=produced).run(
            until_offset=newest
        )
        assert out.read_bytes() == history.image_at("va", newest)
