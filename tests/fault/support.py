"""Shared helpers of the fault suite (issue 10, "the promise first").

Every fault case ends the same way: the stored history is checked against a byte model
of what was acknowledged (or of what the topic holds), by restoring sampled points with
``kcdp restore`` and comparing bytes. A restore either returns exactly the model's bytes
(exit 0) or refuses with a clear one-line error (exit 7 or 8); a point the case marks as
``must`` (an acknowledged write) has to restore.

Here: :class:`ByteModel` (volume bytes after each Kafka offset), :func:`read_partition`
(a partition read with ``assign()`` to its end, by EOF: Tansu's high watermark counts
batches), :func:`kcdp_restore` / :func:`check_restores`, a worker factory and waits
(:func:`worker`, :func:`wait_durable`, :func:`wait_exit`), the group's committed
offset, and the two ways the suite breaks the object store: :class:`TcpProxy` (an S3
endpoint that becomes unreachable or throttles) and :func:`tmpfs` / :func:`fill` (a tiny
file system that runs full).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.cli import main as kcdp_main
from connectors.errors import DecodeError, InvalidEventError
from connectors.intercept import InterceptedVolume
from connectors.store.base import ObjectStore
from infra.broker import free_port
from schemas.codec import AvroCodec
from schemas.events import CHANGE_KINDS, DATA_KINDS, WriteEvent
from schemas.manifest import Manifest, list_window_keys, load_manifest
from tests.streams_support import check_chain
from tests.worker_process import WorkerProcess

MiB = 1 << 20
#: exit codes a refused restore may end with: a gap (7), a point not restorable (8)
REFUSED = (7, 8)

RawRecord = tuple[int, bytes | None, bytes | None]


# -- byte model ----------------------------------------------------------------------------
@dataclass
class ByteModel:
    """A volume's bytes as a function of the Kafka offset: changes in offset order.

    ``changes`` holds ``(kafka_offset, volume_offset, data, length)``; ``data`` None is a
    run of zeros (ZERO, TRIM). :meth:`images_at` gives point N = every change ≤ N.
    """

    size: int
    changes: list[tuple[int, int, bytes | None, int]] = field(default_factory=list)

    def write(self, at: int, offset: int, data: bytes) -> None:
        self.changes.append((at, offset, data, len(data)))

    def zero(self, at: int, offset: int, length: int) -> None:
        self.changes.append((at, offset, None, length))

    def event(self, at: int, ev: WriteEvent) -> None:
        if ev.kind in DATA_KINDS:
            self.write(at, ev.offset, ev.data)
        elif ev.kind in CHANGE_KINDS:
            self.zero(at, ev.offset, ev.length)

    @classmethod
    def of_events(cls, size: int, events: Iterable[tuple[int, WriteEvent]]) -> ByteModel:
        model = cls(size)
        for at, ev in events:
            model.event(at, ev)
        return model

    def images_at(self, points: Iterable[int]) -> dict[int, bytes]:
        """``{point: bytes after every change with offset <= point}``."""
        changes = sorted(self.changes, key=lambda c: c[0])
        img = bytearray(self.size)
        out: dict[int, bytes] = {}
        i = 0
        for point in sorted(set(points)):
            while i < len(changes) and changes[i][0] <= point:
                _, offset, data, length = changes[i]
                img[offset : offset + length] = data if data is not None else bytes(length)
                i += 1
            out[point] = bytes(img)
        return out

    def image_at(self, point: int) -> bytes:
        return self.images_at([point])[point]


class SyncWriter:
    """Random unaligned writes through a sync-mode :class:`InterceptedVolume`; every write
    returned is acknowledged, so :attr:`model` holds them at their returned offsets."""

    def __init__(self, volume: InterceptedVolume, rng: random.Random) -> None:
        self.volume = volume
        self.rng = rng
        self.model = ByteModel(volume.size)
        self.offsets: list[int] = []

    def burst(self, n: int, *, max_len: int = 16 << 10) -> int:
        """``n`` writes of 1..``max_len`` bytes; the offset of the last."""
        at = -1
        for _ in range(n):
            length = self.rng.randint(1, max_len)
            where = self.rng.randrange(0, self.volume.size - length + 1)
            data = self.rng.randbytes(length)
            at = self.volume.write(where, data)
            assert at >= 0, "a sync write returns its offset"
            self.model.write(at, where, data)
            self.offsets.append(at)
        return at


# -- reading the topic ---------------------------------------------------------------------
def read_partition(
    bootstrap: str, topic: str, partition: int = 0, *, start: int = 0, timeout: float = 30.0
) -> list[RawRecord]:
    """Every record of ``topic[partition]`` from ``start`` to its end (partition EOF)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kcdp-fault-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "max.partition.fetch.bytes": 8 << 20,
        }
    )
    out: list[RawRecord] = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while True:
            msgs = consumer.consume(num_messages=10_000, timeout=0.5)
            if not msgs:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no end of {topic}[{partition}] within {timeout:.0f}s")
                continue
            deadline = time.monotonic() + timeout
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise AssertionError(f"reading {topic}[{partition}]: {err}")
                out.append((int(msg.offset() or 0), msg.key(), msg.value()))
    finally:
        consumer.close()


def volume_events(
    records: Iterable[RawRecord], volume: str, codec: AvroCodec | None = None
) -> list[tuple[int, WriteEvent]]:
    """The valid events of ``volume`` among raw records (undecodable/invalid ones left out)."""
    codec = codec or AvroCodec("WriteEvent")
    out: list[tuple[int, WriteEvent]] = []
    for offset, _key, value in records:
        try:
            ev = WriteEvent.from_record(codec.decode(value or b""))
            if ev.volume == volume:
                ev.validate()
                out.append((offset, ev))
        except (DecodeError, InvalidEventError, KeyError, TypeError, ValueError):
            continue
    return out


# -- restores ------------------------------------------------------------------------------
def kcdp_restore(store_url: str, volume: str, point: int, output: Path) -> tuple[int, str]:
    """``kcdp restore VOLUME --to-offset POINT -o OUTPUT`` from the store's own history
    (write logs, not Kafka), in this process; (exit code, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["restore", volume, "--store", store_url, "--to-offset", str(point)]
    argv += ["-o", str(output), "--replay-from", "log", "--json"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kcdp_main(argv)
    return code, err.getvalue()


@dataclass
class RestoreReport:
    restored: list[int] = field(default_factory=list)
    refused: dict[int, tuple[int, str]] = field(default_factory=dict)


def check_restores(
    store_url: str,
    volume: str,
    expected: dict[int, bytes],
    tmp: Path,
    *,
    must: Iterable[int] = (),
) -> RestoreReport:
    """Restore every point of ``expected``: exit 0 with exactly its bytes, or a clear
    refusal (exit 7/8, one ``kcdp: error:`` line) for a point not in ``must``."""
    must = set(must)
    assert must <= set(expected), "every must-point needs expected bytes"
    report = RestoreReport()
    tmp.mkdir(parents=True, exist_ok=True)
    for point in sorted(expected):
        out = tmp / f"{volume}-{point}.img"
        code, err = kcdp_restore(store_url, volume, point, out)
        if code == 0:
            got = out.read_bytes()
            assert len(got) == len(expected[point]), f"{volume}@{point}: size {len(got)}"
            if got != expected[point]:
                want = expected[point]
                first = next(i for i in range(len(got)) if got[i] != want[i])
                raise AssertionError(
                    f"kcdp restore {volume} --to-offset {point} exited 0 with wrong bytes "
                    f"(first difference at byte {first})"
                )
            report.restored.append(point)
            out.unlink()
        else:
            lines = [ln for ln in err.splitlines() if ln.startswith("kcdp: error:")]
            assert point not in must, (
                f"acknowledged point {volume}@{point} not restorable (exit {code}): {err[-600:]}"
            )
            assert code in REFUSED and lines, f"{volume}@{point}: exit {code}, {err[-600:]}"
            assert not out.exists(), f"a refused restore left {out}"
            report.refused[point] = (code, lines[-1])
    return report


def offered_points(store_url: str, volume: str, offsets: Iterable[int]) -> list[int]:
    """Those of ``offsets`` that ``kcdp points --json`` offers as restorable: from a
    window's ``restorable_from`` on, its last offset only if the window's end is consistent."""
    import orjson

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = kcdp_main(["points", volume, "--store", store_url, "--json"])
    assert code == 0, f"kcdp points {volume} exited {code}"
    spans = [
        (w["restorable_from"], w["last_offset"], w["consistent"])
        for w in orjson.loads(out.getvalue())["windows"]
        if w["restorable_from"] is not None
    ]
    return sorted(
        o
        for o in set(offsets)
        if any(lo <= o < last or (o == last and whole) for lo, last, whole in spans)
    )


def sample(points: Sequence[int], k: int, rng: random.Random, *always: int) -> list[int]:
    """Up to ``k`` of ``points`` at random plus ``always`` (sorted, distinct)."""
    pool = sorted(set(points))
    picked = set(rng.sample(pool, min(k, len(pool)))) | set(always)
    return sorted(picked)


# -- the worker ----------------------------------------------------------------------------
def worker(
    bootstrap: str,
    store_url: str,
    topic: str,
    workdir: Path,
    *,
    window_seconds: float = 1.0,
    extra: Sequence[str] = (),
) -> WorkerProcess:
    """A ``kcdp worker`` (a context manager that starts it) in group ``g-<topic>``, the same
    group on a restart."""
    return WorkerProcess(
        bootstrap=bootstrap,
        store_url=store_url,
        topic=topic,
        workdir=workdir,
        web_port=free_port(),
        window_seconds=window_seconds,
        extra=["--group-id", group_of(topic), "--session-timeout", "6", *extra],
    )


def chain_exact(store: ObjectStore, volume: str, model: ByteModel) -> list[Manifest]:
    """Every window of ``volume`` chained and exact (forward and backward) against ``model``."""
    edges = [last for _, last, _ in list_window_keys(store, volume)]
    states = model.images_at(edges)
    states[-1] = bytes(model.size)
    return check_chain(store, volume, model.size, states)


def assert_history_exact(
    store: ObjectStore,
    store_url: str,
    volume: str,
    model: ByteModel,
    events: Sequence[tuple[int, WriteEvent]],
    tmp: Path,
    *,
    acked: Sequence[int],
    samples: int = 12,
    seed: int = 0,
) -> list[Manifest]:
    """The volume's whole stored history is exact: no gap record, one unbroken chain exact
    against ``model``, every one of its topic ``events`` in exactly one window, and
    ``kcdp restore`` of sampled acknowledged points (and the newest) equal to ``model``."""
    from schemas.gaps import list_gaps

    gaps = list_gaps(store, volume)
    assert gaps == [], f"{volume} has gap records: " + "; ".join(
        f"{g.kind} at {g.at_offset}: {g.detail}" for g in gaps[:3]
    )
    chain = chain_exact(store, volume, model)
    assert sum(m.events for m in chain) == len(events), "an event is missing or stored twice"
    assert chain[-1].last_offset == events[-1][0]
    assert all(m.consistent for m in chain), "a window of a gap-free history is inconsistent"
    points = sample(acked, samples, random.Random(seed), acked[-1], events[-1][0])
    check_restores(store_url, volume, model.images_at(points), tmp, must=points)
    return chain


def group_of(topic: str) -> str:
    return f"g-{topic}"


def manifests(store: ObjectStore, volume: str) -> list[Manifest]:
    return [load_manifest(store, key) for _, _, key in list_window_keys(store, volume)]


def durable_end(store: ObjectStore, volume: str) -> int:
    """Last offset of the volume's newest window (-1: none)."""
    keys = list_window_keys(store, volume)
    return keys[-1][1] if keys else -1


def wait_durable(
    store: ObjectStore,
    volume: str,
    last_offset: int,
    worker: WorkerProcess,
    timeout: float,
) -> None:
    """Wait until the volume's windows reach ``last_offset``; fail early if the worker died."""
    deadline = time.monotonic() + timeout
    while durable_end(store, volume) < last_offset:
        if worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(
                f"worker exited {worker.proc.returncode} before {volume} was durable up to "
                f"{last_offset} (at {durable_end(store, volume)}):\n{worker.log_tail(40)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{volume} durable up to {durable_end(store, volume)}, not {last_offset}, "
                f"after {timeout:.0f}s:\n{worker.log_tail(20)}"
            )
        time.sleep(0.2)


def wait_consumed(worker: WorkerProcess, records: int, timeout: float) -> None:
    """Wait until the worker consumed ``records`` records (``kcdp_events_total``)."""
    from tests.worker_process import metric_values

    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        if worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited {worker.proc.returncode}:\n{worker.log_tail(30)}")
        with contextlib.suppress(OSError):
            seen = metric_values(worker.metrics_text()).get(("kcdp_events_total", ()), 0.0)
            if seen >= records:
                return
        time.sleep(0.5)
    raise AssertionError(f"worker consumed {seen:.0f} of {records} records in {timeout:.0f}s")


def wait_exit(worker: WorkerProcess, timeout: float) -> int:
    """The worker's exit code; fail if it is still running after ``timeout``."""
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"worker still running {timeout:.0f}s after the fault:\n{worker.log_tail(20)}"
        ) from None


def committed_offset(bootstrap: str, group: str, topic: str, partition: int = 0) -> int | None:
    """The consumer group's committed offset of ``topic[partition]`` (None: none)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(topic, partition)], timeout=15)
        return tp.offset if tp.offset >= 0 else None
    finally:
        c.close()


def assert_committed_within_durable(
    bootstrap: str, topic: str, store: ObjectStore, volume: str, offsets: Sequence[int]
) -> int | None:
    """The worker's commit must not pass the first of the volume's event ``offsets`` that
    no durable window holds (FORMAT.md ordering invariant 5). Returns the commit."""
    committed = committed_offset(bootstrap, group_of(topic), topic)
    end = durable_end(store, volume)
    first_open = min((o for o in offsets if o > end), default=None)
    if committed is not None and first_open is not None:
        assert committed <= first_open, (
            f"committed offset {committed} is past offset {first_open}, the first event of "
            f"{volume} in no durable window (durable up to {end})"
        )
    return committed


# -- object store faults -------------------------------------------------------------------
class TcpProxy:
    """A loopback TCP proxy to ``upstream`` (``host:port``) that can fail on demand.

    ``mode`` ``"open"`` forwards; ``"refuse"`` closes the listener and every connection
    (connections are refused: the endpoint is unreachable); ``"throttle"`` answers every
    request with S3's ``503 SlowDown`` and forwards nothing. :attr:`endpoint` stays the same.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.mode = "open"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if self.mode == "throttle":
                threading.Thread(target=self._slow_down, args=(conn,), daemon=True).start()
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns |= {conn, up}
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._conns -= {src, dst}

    @staticmethod
    def _slow_down(conn: socket.socket) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>"
        )
        head = (
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            conn.settimeout(5)
            buf = b""
            while b"\r\n\r\n" not in buf and (chunk := conn.recv(1 << 16)):
                buf += chunk
            conn.sendall(head + body)
            conn.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):  # drain what the client still sends
                while conn.recv(1 << 16):
                    pass
        except OSError:
            pass
        finally:
            conn.close()

    def _drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def set_mode(self, mode: str) -> None:
        assert mode in ("open", "refuse", "throttle"), mode
        self.mode = mode
        self._drop_connections()
        if mode == "refuse":
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        elif self._listener is None:
            self._listen()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) mounted at ``path`` (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"cannot mount a tmpfs at {path}: {proc.stderr.strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; the filler file."""
    filler = directory / "filler"
    chunk = os.urandom(1 << 16)
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:  # the last partial block
            while f.write(b"x"):
                pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
