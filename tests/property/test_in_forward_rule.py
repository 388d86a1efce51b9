"""Property: the writer's reverse sweep marks a write-log record ``in_forward`` iff no later
change event of the window overlaps it, and then the forward increment holds exactly its
bytes, so a log of such records replays every point of the window exactly."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import CHANGE_KINDS, DATA_KINDS, EventKind, WriteEvent
from schemas.image import Image
from schemas.writelog import ForwardBytes, LogRecord, apply_records, read_log, write_log
from tests.assemble_reference import assemble, in_forward_flags
from tests.event_factory import make_event

SIZE = 256
KINDS = [EventKind.WRITE, EventKind.BASELINE, EventKind.ZERO, EventKind.TRIM, EventKind.BOOKMARK]


@st.composite
def events(draw: st.DrawFn) -> list[WriteEvent]:
    out = []
    for seq in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(KINDS))
        if kind in CHANGE_KINDS:
            offset = draw(st.integers(0, SIZE - 1))
            length = draw(st.integers(1, min(48, SIZE - offset)))
        else:
            offset = length = 0
        data = draw(st.binary(min_size=length, max_size=length)) if kind in DATA_KINDS else b""
        out.append(
            make_event(
                kind,
                offset,
                data,
                length=length,
                sequence=seq,
                timestamp_us=seq,
                volume_size=SIZE,
                session="s",
            )
        )
    return out


def _naive(changes: list[WriteEvent]) -> list[bool]:
    return [
        e.kind in DATA_KINDS
        and not any(
            f.offset < e.offset + e.length and e.offset < f.offset + f.length
            for f in changes[k + 1 :]
        )
        for k, e in enumerate(changes)
    ]


@settings(max_examples=300)
@given(evs=events())
def test_reverse_sweep_equals_the_rule(evs: list[WriteEvent]) -> None:
    changes = [e for e in evs if e.kind in CHANGE_KINDS]
    assert in_forward_flags(changes) == _naive(changes)


@settings(max_examples=60, deadline=None)
@given(evs=events(), before=st.binary(min_size=SIZE, max_size=SIZE))
def test_in_forward_log_replays_every_point(evs: list[WriteEvent], before: bytes) -> None:
    changes = [e for e in evs if e.kind in CHANGE_KINDS]
    forward, _, _ = assemble(changes, lambda o, n: before[o : o + n])
    fwd = ForwardBytes(forward)
    flags = iter(in_forward_flags(changes))
    recs = [
        LogRecord.from_event(e, 10 + i, in_forward=e.kind in CHANGE_KINDS and next(flags))
        for i, e in enumerate(evs)
    ]
    for rec, ev in zip(recs, evs, strict=True):
        if rec.in_forward:  # the forward holds exactly this event's bytes
            assert rec.data == b"" and fwd.read(ev.offset, ev.length) == ev.data
    buf = io.BytesIO()
    write_log(buf, recs, volume="v", first_offset=10, last_offset=10 + len(recs))
    back = list(read_log(buf.getvalue()))
    model = bytearray(before)
    with tempfile.TemporaryDirectory() as tmp:
        for upto, ev in enumerate(evs, start=10):
            if ev.kind in CHANGE_KINDS:
                model[ev.offset : ev.offset + ev.length] = ev.data or bytes(ev.length)
            with Image(Path(tmp) / f"{upto}.img", SIZE) as img:
                img.pwrite(0, before)
                apply_records(img, back, upto_offset=upto, forward=forward)
                assert img.pread(0, SIZE) == bytes(model)
