"""InterceptedVolume against the real broker: offsets, sequences, splits, groups, baselines,
restarts, bad input, a broker that goes away, and bookmarks through the control socket."""

from __future__ import annotations

import filecmp
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.cli import main as kcdp
from connectors.errors import ConfigError, DeliveryError, InvalidEventError, VolumeError
from connectors.intercept import InterceptedVolume
from connectors.intercept.replay import apply_events, read_events, since_last_baseline
from connectors.intercept.state import load_state
from infra.broker import EmbeddedBroker
from schemas.events import EventKind

MiB = 1024 * 1024


def new_topic() -> str:
    return f"test.capture.{uuid.uuid4().hex[:10]}"


def kinds(records: list) -> list[str]:  # type: ignore[type-arg]
    return [str(r.event.kind) for r in records]


def test_new_volume_offsets_sequences_and_replay(bootstrap: str, tmp_path: Path) -> None:
    topic, backing = new_topic(), tmp_path / "vol.img"
    with InterceptedVolume(backing, "vol", 2 * MiB, bootstrap_servers=bootstrap, topic=topic) as v:
        returned = {
            v.write(5, b"hello"): ("WRITE", 5, 5),
            v.write(MiB - 3, b"\x01" * 9): ("WRITE", MiB - 3, 9),
            v.zero(7, 100): ("ZERO", 7, 100),
            v.trim(MiB, 4096): ("TRIM", MiB, 4096),
            v.bookmark("before-upgrade"): ("BOOKMARK", 0, 0),
        }
        last = v.flush()
    assert backing.stat().st_size == 2 * MiB
    records = read_events(bootstrap, topic, volume="vol")
    assert kinds(records)[:3] == ["SESSION_START", "BASELINE_START", "BASELINE_END"]
    assert kinds(records)[-1] == "SESSION_END"
    assert [r.event.sequence for r in records] == list(range(len(records)))
    assert len({r.event.session for r in records}) == 1
    by_offset = {r.offset: r.event for r in records}
    for offset, (kind, at, length) in returned.items():
        assert (str(by_offset[offset].kind), by_offset[offset].offset) == (kind, at)
        assert by_offset[offset].length == length
    assert by_offset[max(returned)].name == "before-upgrade"
    assert last == max(returned)
    assert all(r.key == b"vol" for r in records)
    apply_events(records, tmp_path / "replayed.img", 2 * MiB)
    assert filecmp.cmp(backing, tmp_path / "replayed.img", shallow=False)
    state = load_state(backing)
    assert state is not None and state.clean and state.sequence == records[-1].event.sequence


def test_split_write_is_consecutive_and_exact(bootstrap: str, tmp_path: Path) -> None:
    topic, backing = new_topic(), tmp_path / "vol.img"
    data = os.urandom(10_001)
    with InterceptedVolume(
        backing, "split", 64 * 1024, bootstrap_servers=bootstrap, topic=topic, max_event_data=4096
    ) as v:
        offset = v.write(333, data)
    records = read_events(bootstrap, topic, volume="split")
    writes = [r for r in records if r.event.kind is EventKind.WRITE]
    assert [(w.event.offset, w.event.length) for w in writes] == [
        (333, 4096),
        (333 + 4096, 4096),
        (333 + 8192, 10_001 - 8192),
    ]
    assert [w.offset for w in writes] == list(range(writes[0].offset, writes[0].offset + 3))
    assert offset == writes[-1].offset
    assert b"".join(w.event.data for w in writes) == data
    apply_events(records, tmp_path / "r.img", 64 * 1024)
    assert filecmp.cmp(backing, tmp_path / "r.img", shallow=False)


def test_group_volumes_interleave_in_one_partition(bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic()
    from connectors.kafka import ensure_topics

    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 4})
    common = {"bootstrap_servers": bootstrap, "topic": topic, "group": "g1"}
    with (
        InterceptedVolume(tmp_path / "a.img", "vol-a", 65536, **common) as a,  # type: ignore[arg-type]
        InterceptedVolume(tmp_path / "b.img", "vol-b", 65536, **common) as b,  # type: ignore[arg-type]
    ):
        calls = []
        for i in range(6):
            vol = a if i % 2 == 0 else b
            calls.append((vol.volume, vol.write(i * 100, bytes([i + 1]) * 10)))
    records = read_events(bootstrap, topic)
    assert len({r.partition for r in records}) == 1
    assert all(r.key == b"g1" for r in records)
    writes = [(r.event.volume, r.offset) for r in records if r.event.kind is EventKind.WRITE]
    assert writes == calls
    for name in ("vol-a", "vol-b"):
        seqs = [r.event.sequence for r in records if r.event.volume == name]
        assert seqs == list(range(len(seqs)))


def test_clean_restart_resumes_and_unclean_restart_baselines(
    bootstrap: str, tmp_path: Path
) -> None:
    topic, backing = new_topic(), tmp_path / "vol.img"
    conf = {"bootstrap_servers": bootstrap, "topic": topic}
    with InterceptedVolume(backing, "rs", 3 * MiB, **conf) as v:  # type: ignore[arg-type]
        v.write(MiB + 17, os.urandom(5000))
        first_session = v.session
    with InterceptedVolume(backing, "rs", **conf) as v:  # type: ignore[arg-type]
        assert v.sequence == 0 and v.baseline_complete
        second = v.session_offset
        v.write(0, b"after resume")
    records = read_events(bootstrap, topic, volume="rs")
    start = next(r for r in records if r.offset == second)
    assert start.event.kind is EventKind.SESSION_START and start.event.name == first_session
    assert not any(r.event.kind is EventKind.BASELINE_START for r in records if r.offset > second)

    # A session that never closed leaves the state unclean: the next open baselines.
    crashed = InterceptedVolume(backing, "rs", **conf)  # type: ignore[arg-type]
    crashed.write(2 * MiB, b"unacknowledged by a close")
    state = load_state(backing)
    assert state is not None and not state.clean
    crashed._abandon()  # simulate a crash: no SESSION_END, state stays unclean
    with InterceptedVolume(backing, "rs", **conf) as v:  # type: ignore[arg-type]
        v.wait_baseline()
        third = v.session_offset
    records = read_events(bootstrap, topic, volume="rs", start=third)
    assert records[0].event.name == ""
    assert kinds(records)[1] == "BASELINE_START" and "BASELINE_END" in kinds(records)
    apply_events(records, tmp_path / "from-baseline.img", 3 * MiB)
    assert filecmp.cmp(backing, tmp_path / "from-baseline.img", shallow=False)


def test_baseline_under_concurrent_writes_is_consistent(bootstrap: str, tmp_path: Path) -> None:
    topic, backing = new_topic(), tmp_path / "data.img"
    size = 16 * MiB
    with open(backing, "wb") as f:  # existing data, no state file: a baseline is required
        f.truncate(size)
        for i in range(0, size, 3 * MiB):
            f.seek(i + 12345)
            f.write(os.urandom(700_000))
    with InterceptedVolume(
        backing,
        "busy",
        bootstrap_servers=bootstrap,
        topic=topic,
        baseline_chunk=64 * 1024,  # many chunks: the writers take the lock between them
        baseline="never",  # started below, once both writers are writing
    ) as v:
        stop = threading.Event()
        errors: list[BaseException] = []
        writing = [threading.Event(), threading.Event()]

        def writer(seed: int) -> None:
            n = 0
            try:
                while not stop.is_set() or n < 20:
                    at = (seed * 7_777_777 + n * 1_234_567) % (size - 70_000)
                    v.write(at, os.urandom(1 + (n * 997) % 65_000))
                    if n % 5 == 0:
                        v.zero((at * 3) % (size - 9000), 9000)
                    n += 1
                    if n == 3:
                        writing[seed - 1].set()
            except BaseException as exc:  # surfaced by the assert below
                errors.append(exc)
                writing[seed - 1].set()

        threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for w in writing:
            assert w.wait(60), "a writer never started"
        v.baseline(wait=False)  # the writers go on while it copies
        end = v.wait_baseline(timeout=120)
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors
        start = v.session_offset
    records = read_events(bootstrap, topic, volume="busy", start=start)
    begin = next(r.offset for r in records if r.event.kind is EventKind.BASELINE_START)
    inside = [r for r in records if begin < r.offset < end]
    assert any(r.event.kind is EventKind.WRITE for r in inside), "writes did not interleave"
    assert any(r.event.kind is EventKind.BASELINE for r in inside)
    apply_events(since_last_baseline(records), tmp_path / "replayed.img", size)
    assert filecmp.cmp(backing, tmp_path / "replayed.img", shallow=False)


def test_bad_input_is_refused_and_nothing_published(bootstrap: str, tmp_path: Path) -> None:
    topic, backing = new_topic(), tmp_path / "vol.img"
    with InterceptedVolume(backing, "bad", 4096, bootstrap_servers=bootstrap, topic=topic) as v:
        before = v.sequence
        cases: list[tuple[Callable[..., object], tuple[object, ...]]] = [
            (v.write, (4095, b"ab")),
            (v.write, (-1, b"a")),
            (v.write, (0, b"")),
            (v.write, (0, "text")),
            (v.zero, (0, 0)),
            (v.zero, (10, -5)),
            (v.trim, (4000, 97)),
            (v.bookmark, ("",)),
        ]
        for call, args in cases:
            with pytest.raises(InvalidEventError):
                call(*args)
        assert v.sequence == before
        v.write(4095, b"z")  # the last byte is fine
    assert kinds(read_events(bootstrap, topic, volume="bad")) == [
        "SESSION_START",
        "BASELINE_START",
        "BASELINE_END",
        "WRITE",
        "SESSION_END",
    ]
    with pytest.raises(ConfigError):
        InterceptedVolume(backing, "bad name", bootstrap_servers=bootstrap, topic=topic)
    with pytest.raises(VolumeError, match="holds 4096 bytes"):
        InterceptedVolume(backing, "bad", 8192, bootstrap_servers=bootstrap, topic=topic)


def test_second_intercept_on_same_backing_is_refused(bootstrap: str, tmp_path: Path) -> None:
    topic, backing = new_topic(), tmp_path / "vol.img"
    with (
        InterceptedVolume(backing, "own", 4096, bootstrap_servers=bootstrap, topic=topic),
        pytest.raises(VolumeError, match="already used"),
    ):
        InterceptedVolume(backing, "own", bootstrap_servers=bootstrap, topic=topic)


def test_broker_down_fails_sync_write_within_bound(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    backing, topic = tmp_path / "vol.img", new_topic()
    v = InterceptedVolume(
        backing,
        "down",
        65536,
        bootstrap_servers=fresh_broker.bootstrap_servers,
        topic=topic,
        delivery_timeout=3.0,
    )
    acked = v.write(0, b"acknowledged")
    records = read_events(fresh_broker.bootstrap_servers, topic, volume="down")
    assert records[-1].offset == acked and records[-1].event.data == b"acknowledged"
    fresh_broker.stop()
    with pytest.raises(DeliveryError):
        v.write(100, b"lost broker")
    with pytest.raises(DeliveryError, match="reopen"):
        v.write(200, b"after failure")
    v.close()
    state = load_state(backing)
    assert state is not None and not state.clean


def test_bookmark_cli_through_control_socket(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic, backing, run = new_topic(), tmp_path / "vol.img", tmp_path / "state"
    with InterceptedVolume(
        backing,
        "bm",
        65536,
        bootstrap_servers=bootstrap,
        topic=topic,
        run_dir=run / "run",
    ) as v:
        v.write(0, b"x")
        code = kcdp(["--state-dir", str(run), "bookmark", "bm", "release-1"])
        printed = capsys.readouterr().out.strip()
        assert code == 0
        code = kcdp(["bookmark", "bm", "release-2", "--backing", str(backing)])
        second = capsys.readouterr().out.strip()
        assert code == 0
        assert kcdp(["bookmark", "bm", "x", "--backing", str(backing), "--group", "other"]) == 9
        seq = v.sequence
    records = read_events(bootstrap, topic, volume="bm")
    marks = {r.offset: r.event for r in records if r.event.kind is EventKind.BOOKMARK}
    assert marks[int(printed)].name == "release-1"
    assert marks[int(second)].name == "release-2"
    assert [r.event.sequence for r in records] == list(range(seq + 2))
    # no intercept running: a clear error, exit code of VolumeError
    assert kcdp(["--state-dir", str(run), "bookmark", "bm", "late"]) == 9
    assert "no intercept is running" in capsys.readouterr().err


def test_block_device_backing(bootstrap: str, tmp_path: Path) -> None:
    """A loop block device as the backing: size from the device, zero/trim write zeros."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(4 * MiB)
        f.seek(MiB - 1)
        f.write(os.urandom(2 * MiB))
    proc = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"no loop device available (losetup: {proc.stderr.strip()})")
    dev = proc.stdout.strip()
    topic = new_topic()
    try:
        with InterceptedVolume(dev, "blk", bootstrap_servers=bootstrap, topic=topic) as v:
            assert v.size == 4 * MiB
            v.write(3, b"on the device")
            v.zero(MiB, 70_000)
            v.trim(2 * MiB + 5, 4096)
            v.wait_baseline()
            start = v.session_offset
        records = read_events(bootstrap, topic, volume="blk", start=start)
        apply_events(since_last_baseline(records), tmp_path / "replayed.img", 4 * MiB)
        assert Path(dev).read_bytes() == (tmp_path / "replayed.img").read_bytes()
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        Path(f"{dev}.kcdp-state.json").unlink(missing_ok=True)
