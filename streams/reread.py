"""Reading a range of a partition again for one volume's line (docs/FORMAT.md
"Quarantine": before a break in a line is judged, the records between are read again,
since a broker may expose a record late)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from connectors.errors import DecodeError, InvalidEventError
from schemas.events import WriteEvent
from streams.admission import Candidate, Reread

log = logging.getLogger("kcdp.partition")

#: ``source(lo, hi)``: the raw records ``(offset, key, value)`` at offsets ``lo..hi``.
Source = Callable[[int, int], list[tuple[int, bytes | None, bytes | None]]]


def volume_reread(source: Source, decode: Callable[[bytes], WriteEvent], volume: str) -> Reread:
    """A :data:`~streams.admission.Reread` for ``volume``: the valid events of the volume
    that ``source`` returns (records that do not decode, other volumes' and invalid events
    are left out: the feed judges those)."""

    def reread(lo: int, hi: int) -> list[Candidate]:
        found = []
        for offset, key, value in source(lo, hi):
            try:
                if not value:
                    continue
                ev = decode(value)
                if ev.volume != volume:
                    continue
                ev.validate()
            except (DecodeError, InvalidEventError, ValueError, KeyError, TypeError):
                continue
            found.append(Candidate(offset, key, value, ev))
        log.warning(
            "volume %s: read offsets %d..%d again before judging a break in its line: "
            "%d event(s) of it found",
            volume,
            lo,
            hi,
            len(found),
        )
        return found

    return reread
