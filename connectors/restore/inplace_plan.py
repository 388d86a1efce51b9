"""Planning an in-place move: the increments and the write log that take an image from the
point M it holds (its applied state, docs/FORMAT.md "Local state files") to a point T.

Windows are indexed as in :mod:`connectors.restore.planner`; *edge k* is the image at the
end of window *k* (edge -1: the empty image, or after a prune the base). An image at a
point P with ``first_i <= P <= last_i`` is *in window i*: it differs from edge *i-1* only
over ranges window *i* wrote. Hence window *i*'s forward increment applied to it yields
edge *i*, its backward increment yields edge *i-1*, and replaying its write log up to
``T >= P`` yields T (every change record is an overwrite with bytes of its own).

A move from M (in window *s* if mid-window, else at edge *a*) to T (edge *e*, then a replay
of window *e+1* up to T when T is mid-window):

* M mid-window in *s* and T in *s* with ``T >= M``: replay window *s* up to T only;
* else M mid-window: window *s*'s forward increment (when ``e >= s``) or backward
  increment (else) brings it to an edge *a*;
* from edge *a*: forward increments *a+1..e* (``e > a``) or backward increments
  *a..e+1*, newest first (``e < a``); then the replay of window *e+1* up to T, if any.

Checks, as :mod:`connectors.restore.materialize` makes them: the image is first checked
at M (``check``: at an edge, the window's ``ranges_sha256`` over its ranges, made by the
first rollback's own check when there is one; mid-window, the bytes over window *s*'s
ranges against edge *s-1* from its backward increment with its log replayed up to M);
every rollback after the first is checked before it, every forward increment after it,
and after the last rollback the edge window's ranges (``final``). Every object is
checked against its manifest's digest. The path must stand on an unbroken chain from the
lower edge's window to the higher point (:func:`planner._check_chain`), may cross gaps
only as the planner allows, and targets only stored points (no Kafka tail).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from connectors.errors import GapError, IntegrityError, NotRestorableError, UsageError
from connectors.restore.catalog import Catalog
from connectors.restore.plan import DEFAULT_THROUGHPUT, Plan, _size
from connectors.restore.planner import _check_chain, _check_healed, _edge, _floor, plan_restore
from schemas.applied_state import AppliedState
from schemas.chain import Predecessor
from schemas.manifest import Manifest, ObjectRef


@dataclass(frozen=True, slots=True)
class Op:
    """One step of a move: ``kind`` forward / backward (an increment of window
    ``first``-``last``), replay (its log ``ref`` up to ``upto``, in_forward bytes from
    ``forward``) or check (the image over ``ref``'s ranges must match ``ranges_sha256``;
    with ``log`` and ``upto``: ``ref`` is the backward increment and the expected bytes
    are edge ``first-1`` with ``log`` replayed up to ``upto``). ``precheck``: a rollback
    whose window's end state is checked first."""

    kind: str
    first: int
    last: int
    ref: ObjectRef
    ranges_sha256: str
    volume: str
    upto: int = -1
    forward: ObjectRef | None = None
    log: ObjectRef | None = None
    precheck: bool = False

    @property
    def refs(self) -> tuple[ObjectRef, ...]:
        return tuple(r for r in (self.ref, self.log, self.forward) if r is not None)

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.refs)


@dataclass(frozen=True, slots=True)
class MovePlan:
    """Move ``volume``'s image from point ``source`` to ``target``: ``check`` (the image at
    the source), ``ops`` in order, ``final`` (after the last rollback)."""

    volume: str
    volume_size: int
    source: int
    target: int
    direction: str  # forward, backward, or none (already there)
    check: Op | None
    ops: tuple[Op, ...]
    final: Op | None
    session: str = ""
    sequence: int = -1
    throughput: int = DEFAULT_THROUGHPUT

    @property
    def bytes(self) -> int:
        """Bytes to read from the store, each object once (an upper bound: in_forward
        bytes are fetched only when a replayed record needs them)."""
        return sum(r.size for r in self._refs().values())

    @property
    def objects(self) -> int:
        return len(self._refs())

    @property
    def all_ops(self) -> tuple[Op, ...]:
        """The source check, the ops, the final check: everything that reads objects."""
        return tuple(o for o in (self.check, *self.ops, self.final) if o is not None)

    def _refs(self) -> dict[str, ObjectRef]:
        return {r.key: r for o in self.all_ops for r in o.refs}

    @property
    def digest(self) -> str:
        """SHA-256 of what the move writes (the ops' object keys and digests, in order):
        a resumed move must find the same."""
        h = hashlib.sha256(f"{self.volume} {self.source} {self.target}".encode())
        for op in self.ops:
            for r in op.refs:
                h.update(f"\n{op.kind} {op.upto} {r.key} {r.sha256}".encode())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "direction": self.direction,
            "steps": [
                {"kind": o.kind, "window": [o.first, o.last], "key": o.ref.key, "bytes": o.bytes}
                | ({"upto": o.upto} if o.kind == "replay" else {})
                for o in self.ops
            ],
            "check": None if self.check is None else self.check.ref.key,
            "final_check": None if self.final is None else self.final.ref.key,
            "objects": self.objects,
            "bytes": self.bytes,
        }

    def to_text(self) -> str:
        incs = [o for o in self.ops if o.kind != "replay"]
        lines = [
            f"  in place    {self.direction} from point {self.source} to {self.target}",
            f"  increments  {len(incs)} ({_size(sum(o.bytes for o in incs))})",
        ]
        lines += [
            f"  replay      window {o.first}-{o.last} up to {o.upto} ({_size(o.bytes)})"
            for o in self.ops
            if o.kind == "replay"
        ]
        checks = [o for o in (self.check, self.final) if o is not None]
        if checks:
            used = {r.key for o in self.ops for r in o.refs}
            more = {r.key: r.size for o in checks for r in o.refs if r.key not in used}
            lines.append(
                f"  checks      {len(checks)} (+{_size(sum(more.values()))} not read by the steps)"
            )
        lines.append(
            f"  total       {self.objects} objects, {_size(self.bytes)}, "
            f"~{self.bytes / self.throughput:.1f} s at {_size(self.throughput)}/s"
        )
        return "\n".join(lines)


def plan_move(catalog: Catalog, source: int, target: int) -> MovePlan:
    """Plan the move of an image at point ``source`` to point ``target`` (both stored,
    consistent points); NotRestorableError/GapError/IntegrityError naming why not."""
    catalog.require_windows()
    newest = catalog.windows[-1].last
    for what, point in (("the image is at point", source), ("target", target)):
        if point > newest:
            raise NotRestorableError(
                f"{what} {point}, after the newest stored window of {catalog.volume} (it "
                f"ends at {newest}): an in-place move needs both points in stored windows"
            )
    sa, s_replay, _ = _edge(catalog, source)
    e, t_replay, tm = _edge(catalog, target)
    s = sa + 1 if s_replay is not None else None  # the window the source is inside
    r = e + 1 if t_replay is not None else None
    low, high = min(sa, e), max(s if s is not None else sa, r if r is not None else e)
    _check_chain(catalog, _before(catalog, low), low + 1, high)
    low_offset = catalog.windows[low].last if low >= 0 else _floor(catalog)
    _check_healed(catalog, low_offset, max(source, target))
    if source == target:
        return MovePlan(catalog.volume, tm.volume_size, source, target, "none", None, (), None)
    ops: list[Op] = []
    check: Op | None = None
    a = sa
    if s is not None:
        ms = catalog.manifest(s)
        check = _op("check", ms, ms.backward, upto=source, log=ms.writelog, forward=ms.forward)
    if s is not None and not (r == s and target >= source):
        ms = catalog.manifest(s)
        if e >= s:
            ops.append(_op("forward", ms, ms.forward))
            a = s
        else:
            ops.append(_op("backward", ms, ms.backward))
            a = s - 1
    rollback = e < a
    if a < e:
        ops += [_op("forward", m, m.forward) for m in catalog.manifests(range(a + 1, e + 1))]
    elif rollback:
        for m in reversed(catalog.manifests(range(e + 1, a + 1))):
            ops.append(_op("backward", m, m.backward, precheck=True))
    if s is None and a >= 0 and not rollback:
        ma = catalog.manifest(a)
        check = _op("check", ma, ma.forward)
    final = None
    if rollback and e >= 0:
        me = catalog.manifest(e)
        final = _op("check", me, me.forward)
    session, sequence = "", -1
    if t_replay is not None:
        assert t_replay.ref is not None
        ops.append(_op("replay", tm, t_replay.ref, upto=target, forward=tm.forward))
        session = tm.session
    elif e >= 0:
        me = catalog.manifest(e)
        session, sequence = me.session, me.last_sequence
    direction = "backward" if target < source else "forward"
    return MovePlan(
        catalog.volume,
        tm.volume_size,
        source,
        target,
        direction,
        check,
        tuple(ops),
        final,
        session,
        sequence,
    )


@dataclass(frozen=True, slots=True)
class Choice:
    """How to bring an image to a point: ``move`` it in place, or a ``full`` restore into
    it; ``chosen`` is ``"in-place"`` or ``"full"``; ``refused`` says why a path is not."""

    volume: str
    offset: int
    chosen: str
    move: MovePlan | None
    full: Plan | None
    refused: dict[str, str]

    @property
    def bytes(self) -> int:
        """Bytes the chosen path reads from the store."""
        if self.chosen == "in-place":
            assert self.move is not None
            return self.move.bytes
        assert self.full is not None
        return self.full.path.bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "offset": self.offset,
            "chosen": self.chosen,
            "bytes": self.bytes,
            "in_place": None if self.move is None else self.move.to_dict(),
            "full": None if self.full is None else self.full.to_dict(),
            "refused": dict(self.refused),
        }

    def to_text(self) -> str:
        move, full = self.move, self.full
        if self.chosen == "full":
            assert full is not None
            lines = [full.to_text()]
            if move is not None:
                lines.append(f"  other       in place: {move.objects} objects, {_size(move.bytes)}")
        else:
            assert move is not None
            lines = [f"restore {self.volume} to offset {self.offset} in place", move.to_text()]
            if full is not None:
                lines.append(
                    f"  other       full {full.path.direction} restore: "
                    f"{full.path.objects} objects, {_size(full.path.bytes)}"
                )
        lines += [f"  refused     {k}: {why}" for k, why in self.refused.items()]
        return "\n".join(lines)


def plan_for(catalog: Catalog, state: AppliedState, target: int) -> MovePlan:
    """The move from the image's point to ``target``; an unfinished move must be the same
    (:class:`UsageError` for another target, :class:`NotRestorableError` for a changed plan)."""
    if state.move is None:
        return plan_move(catalog, state.applied_offset, target)
    if state.move.target != target:
        raise UsageError(
            f"the image is in the middle of a move from {state.move.source} to "
            f"{state.move.target} (a run was interrupted): finish it with the same target, "
            "or restore the image in full"
        )
    plan = plan_move(catalog, state.move.source, target)
    if plan.digest != state.move.plan:
        raise NotRestorableError(
            f"the interrupted move from {state.move.source} to {target} cannot resume: the "
            "store's windows between them changed since it began; restore the image in full"
        )
    return plan


def choose(
    catalog: Catalog,
    state: AppliedState,
    target: int,
    *,
    direction: str = "auto",
    tail: bool = False,
) -> Choice:
    """Price the in-place move of an image (state ``state``) to ``target`` against a full
    restore in ``direction`` and take the one reading fewer bytes (in place on a tie). A
    move counts for a forced direction when it goes that way (or nowhere). The image's own
    problems (:class:`UsageError`, another move under way) are raised, not priced."""
    refused: dict[str, str] = {}
    move: MovePlan | None = None
    full: Plan | None = None
    try:
        move = plan_for(catalog, state, target)
        if direction not in ("auto", move.direction) and move.direction != "none":
            refused["in place"] = f"the move from {move.source} is {move.direction}"
    except (NotRestorableError, GapError, IntegrityError) as exc:
        refused["in place"] = str(exc)
    try:
        full = plan_restore(catalog, target, direction=direction, tail=tail)
    except (NotRestorableError, GapError, IntegrityError) as exc:
        refused["full"] = str(exc)
    usable = move if move is not None and "in place" not in refused else None
    if usable is not None and (full is None or usable.bytes <= full.path.bytes):
        return Choice(catalog.volume, target, "in-place", move, full, refused)
    if full is None:
        reasons = "; ".join(f"{k}: {why}" for k, why in refused.items())
        raise NotRestorableError(f"no way to {catalog.volume}@{target}: {reasons}")
    return Choice(catalog.volume, target, "full", move, full, refused)


def _before(catalog: Catalog, index: int) -> Predecessor:
    """What window ``index + 1`` follows: window ``index``, the base's link, or None."""
    if index >= 0:
        return catalog.manifest(index)
    return catalog.base.link if catalog.base is not None else None


def _op(
    kind: str,
    m: Manifest,
    ref: ObjectRef,
    *,
    upto: int = -1,
    log: ObjectRef | None = None,
    forward: ObjectRef | None = None,
    precheck: bool = False,
) -> Op:
    return Op(
        kind,
        m.first_offset,
        m.last_offset,
        ref,
        m.ranges_sha256,
        m.volume,
        upto,
        forward,
        log,
        precheck,
    )
