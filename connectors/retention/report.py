"""What a prune did or (``--dry-run``) would do, as text and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from schemas import keys
from schemas.retention import TIER_ANY_POINT, TIER_BOOKMARK, TIER_CONSOLIDATED, Base

if TYPE_CHECKING:
    from connectors.retention.collect import Settled
    from connectors.retention.prune import _Windows
    from connectors.retention.select import Selection


@dataclass(slots=True)
class PruneReport:
    """One volume's prune; byte figures are stored (compressed) sizes."""

    volume: str
    dry_run: bool
    windows_before: int = 0
    windows_after: int = 0
    journal_from: int | None = None
    history_seconds: float = 0.0
    shortened: bool = False
    base: int | None = None
    consolidate: list[dict[str, int]] = field(default_factory=list)
    drop_before_base: int = 0
    unlinked_bytes: int = 0
    stored_bytes: dict[str, int] = field(default_factory=dict)
    marked: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    candidates: int = 0
    chunks_deleted: int = 0

    def describe(
        self,
        ws: _Windows,
        sel: Selection | None,
        cut: int,
        ref_us: int,
        sizes: dict[str, int],
    ) -> None:
        """Fill in the plan: journal, runs to consolidate, the base, bytes by tier."""
        n = len(ws)
        self.journal_from = ws.spans[cut][0]
        since = ws[cut - 1].last_time_us if cut > 0 else ws[cut].first_time_us  # the edge before
        self.history_seconds = max(0.0, (ref_us - since) / 1e6)
        self.windows_after = n if sel is None else n - sel.dropped(n)
        volume = self.volume

        def span_bytes(i: int, parts: tuple[str, ...] = ("fwd", "bwd", "log")) -> int:
            first, last, key = ws.spans[i]
            found = (sizes.get(keys.data_key(volume, first, last, p), 0) for p in parts)
            return sum(found) + sizes.get(key, 0)

        tiers = {TIER_ANY_POINT: 0, TIER_CONSOLIDATED: 0, TIER_BOOKMARK: 0}
        for i in range(n):
            tier = TIER_ANY_POINT if i >= cut else TIER_CONSOLIDATED
            if sel is not None and i < cut and i in sel.intact:
                tier = TIER_BOOKMARK
            tiers[tier] += span_bytes(i)
        self.stored_bytes = tiers
        if sel is None:
            return
        for lo, hi in sel.groups:
            self.consolidate.append(
                {
                    "first_offset": ws.spans[lo][0],
                    "last_offset": ws.spans[hi][1],
                    "windows": hi - lo + 1,
                }
            )
            self.unlinked_bytes += sum(span_bytes(i, ("log",)) for i in range(lo, hi + 1))
        if sel.base is not None:
            self.base = ws.spans[sel.base][1]
            self.drop_before_base = sel.base + 1
            self.unlinked_bytes += sum(span_bytes(i) for i in range(sel.base + 1))

    def finish(self, settled: Settled, chunks: Settled, base: Base | None) -> None:
        self.base = None if base is None else base.offset
        self.marked = settled.marked + chunks.marked
        self.deleted = len(settled.deleted) + len(chunks.deleted)
        self.chunks_deleted = len(chunks.deleted)
        self.bytes_freed = settled.bytes_freed + chunks.bytes_freed
        self.candidates = len(settled.candidates) + len(chunks.candidates)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        verb = "would" if self.dry_run else "did"
        lines = [
            f"volume {self.volume}: {self.windows_before} windows -> {self.windows_after}"
            f" ({'dry run: nothing written' if self.dry_run else 'pruned'})",
            f"  any-point journal from offset {self.journal_from} "
            f"({self.history_seconds:.0f} s of history)"
            + ("  [SHORTENED by max_bytes]" if self.shortened else ""),
        ]
        for g in self.consolidate:
            lines.append(
                f"  consolidate  {g['first_offset']}-{g['last_offset']} ({g['windows']} windows)"
            )
        if self.base is not None:
            lines.append(
                f"  base         offset {self.base} (drop {self.drop_before_base} older windows)"
            )
        lines.append(f"  unlinked     {self.unlinked_bytes} bytes ({verb} become candidates)")
        if not self.dry_run:
            lines.append(
                f"  deleted      {self.deleted} objects, {self.bytes_freed} bytes freed; "
                f"{self.candidates} candidates wait out the grace period"
            )
        tiers = ", ".join(f"{k} {v}" for k, v in self.stored_bytes.items())
        lines.append(f"  stored bytes {tiers}")
        return "\n".join(lines)
