"""The chain of a volume's windows (docs/FORMAT.md "Chain").

:func:`link_problem` is the one check that a stored window follows the one before it; the
restore planner, ``kcdp verify``, the worker's resume and rebuild and the pruner use it.
What comes before a window is its stored predecessor's manifest (its own identity or,
for a consolidated window, one of its aliases), only the predecessor's offsets when that
manifest cannot be read, the retention base's link (a :class:`WindowId`) after a prune,
or nothing for a volume's first window.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.errors import GapError, IntegrityError
from schemas import keys
from schemas.manifest import Manifest, WindowId

#: What a window may follow: a manifest, a known identity (the base's link), the
#: offsets of an unreadable manifest, or nothing (the volume's first window).
Predecessor = Manifest | WindowId | tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Broken:
    """A broken link of the history: the error it is, and the store key at fault."""

    error: GapError | IntegrityError
    key: str


def link_problem(prev: Predecessor, m: Manifest) -> Broken | None:
    """Whether window ``m`` follows ``prev`` (docs/FORMAT.md "Chain"); None when it does.

    A window missing between them (or before a first window) is a :class:`GapError`
    naming the missing manifest; offsets or digests that contradict each other (a
    manifest altered, replaced or moved) an :class:`IntegrityError`.
    """
    span = f"window {m.first_offset}-{m.last_offset} of {m.volume}"
    if prev is None:
        if m.previous is None:
            return None
        missing = keys.manifest_key(m.volume, *m.previous)
        return Broken(
            GapError(
                f"the history of {m.volume} before window {m.first_offset}-{m.last_offset} "
                f"is not stored (it follows window {m.previous[0]}-{m.previous[1]}, whose "
                f"manifest {missing} is missing)"
            ),
            missing,
        )
    if isinstance(prev, WindowId):
        return _base_problem(prev, m, span)
    if isinstance(prev, Manifest) and m.previous is not None and prev.merged is not None:
        named = WindowId(m.previous[0], m.previous[1], m.previous_digest or "")
        if named in prev.merged.aliases and m.first_offset > prev.last_offset:
            return None
    have = prev if isinstance(prev, tuple) else (prev.first_offset, prev.last_offset)
    if m.previous is None:
        return Broken(
            IntegrityError(
                f"{m.key}: names no previous window, but window {have[0]}-{have[1]} is "
                "stored before it"
            ),
            m.key,
        )
    if m.previous != have:
        if m.previous[0] > have[1]:
            missing = keys.manifest_key(m.volume, *m.previous)
            return Broken(
                GapError(
                    f"window {m.previous[0]}-{m.previous[1]} of {m.volume} is missing (its "
                    f"manifest {missing}; {span} follows it)"
                ),
                missing,
            )
        return Broken(
            IntegrityError(
                f"{m.key}: follows window {m.previous[0]}-{m.previous[1]}, but the store "
                f"holds window {have[0]}-{have[1]} before it (manifests moved or reordered)"
            ),
            m.key,
        )
    if m.first_offset <= have[1]:
        return Broken(IntegrityError(f"{m.key}: overlaps window {have[0]}-{have[1]}"), m.key)
    if isinstance(prev, Manifest) and m.previous_digest not in (None, prev.digest):
        return Broken(
            IntegrityError(
                f"{prev.key}: does not match the digest {span} records for it (the "
                "manifest was altered or replaced)"
            ),
            prev.key,
        )
    return None


def _base_problem(base: WindowId, m: Manifest, span: str) -> Broken | None:
    """``m`` is the oldest stored window after a prune: it must name the base's link."""
    if m.previous == (base.first_offset, base.last_offset) and m.previous_digest in (
        None,
        base.digest,
    ):
        return None
    retention = keys.retention_key(m.volume)
    return Broken(
        IntegrityError(
            f"{span} is the oldest stored window but does not follow the base "
            f"{retention} records (window {base.first_offset}-{base.last_offset})"
        ),
        m.key,
    )


def check_link(prev: Predecessor, m: Manifest) -> None:
    """Raise the error of :func:`link_problem` if ``m`` does not follow ``prev``."""
    broken = link_problem(prev, m)
    if broken is not None:
        raise broken.error
