"""A self-contained HTML page (inline SVG, no scripts) picturing a volume's history:
windows as bars sized by bytes, restore points and bookmarks as markers, RPO over time."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowBar:
    first_offset: int
    last_offset: int
    start_s: float  # seconds since the story began (first event time)
    end_s: float
    forward_bytes: int
    close_reason: str


@dataclass(frozen=True, slots=True)
class Marker:
    label: str
    time_s: float
    offset: int
    proven: bool


@dataclass(frozen=True, slots=True)
class RpoSample:
    time_s: float
    rpo_s: float


def _scale(value: float, lo: float, hi: float, out_lo: float, out_hi: float) -> float:
    if hi <= lo:
        return out_lo
    return out_lo + (value - lo) / (hi - lo) * (out_hi - out_lo)


def render_timeline(
    title: str,
    windows: Sequence[WindowBar],
    markers: Sequence[Marker],
    rpo: Sequence[RpoSample],
    *,
    width: int = 960,
) -> str:
    """The HTML page as a string; empty inputs give an empty but valid chart."""
    left, right, top = 70, width - 20, 30
    bar_h, rpo_h, gap = 180, 120, 50
    t_max = max(
        [w.end_s for w in windows] + [m.time_s for m in markers] + [s.time_s for s in rpo] + [1.0]
    )
    b_max = max([w.forward_bytes for w in windows] + [1])
    r_max = max([s.rpo_s for s in rpo] + [1.0])

    def x(t: float) -> float:
        return _scale(t, 0.0, t_max, left, right)

    parts: list[str] = []
    base = top + bar_h
    parts.append(f'<text x="{left}" y="{top - 10}" class="h">window size (forward bytes)</text>')
    for w in windows:
        x0, x1 = x(w.start_s), max(x(w.end_s), x(w.start_s) + 1.5)
        h = _scale(w.forward_bytes, 0, b_max, 2, bar_h)
        tip = html.escape(
            f"offsets {w.first_offset}-{w.last_offset}, {w.forward_bytes} bytes, "
            f"closed by {w.close_reason}"
        )
        parts.append(
            f'<rect x="{x0:.1f}" y="{base - h:.1f}" width="{x1 - x0:.1f}" height="{h:.1f}" '
            f'class="win"><title>{tip}</title></rect>'
        )
    for m in markers:
        mx = x(m.time_s)
        cls = "ok" if m.proven else "bad"
        parts.append(
            f'<line x1="{mx:.1f}" y1="{top}" x2="{mx:.1f}" y2="{base}" class="{cls}"/>'
            f'<text x="{mx + 3:.1f}" y="{top + 12}" class="{cls}">'
            f"{html.escape(m.label)} @{m.offset}</text>"
        )
    rtop = base + gap
    rbase = rtop + rpo_h
    parts.append(f'<text x="{left}" y="{rtop - 10}" class="h">RPO (seconds)</text>')
    if rpo:
        pts = " ".join(
            f"{x(s.time_s):.1f},{_scale(s.rpo_s, 0, r_max, rbase, rtop):.1f}" for s in rpo
        )
        parts.append(f'<polyline points="{pts}" class="rpo"/>')
    parts.append(f'<text x="5" y="{rtop + 10}" class="ax">{r_max:.2f}s</text>')
    parts.append(f'<text x="5" y="{rbase}" class="ax">0</text>')
    parts.append(
        f'<line x1="{left}" y1="{rbase}" x2="{right}" y2="{rbase}" class="axis"/>'
        f'<text x="{right - 60}" y="{rbase + 15}" class="ax">{t_max:.1f}s</text>'
    )
    height = rbase + 30
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        + "".join(parts)
        + "</svg>"
    )
    style = (
        "body{font-family:sans-serif}.win{fill:#4a7bd0}.ok{stroke:#1a8a3a;fill:#1a8a3a}"
        ".bad{stroke:#c0392b;fill:#c0392b}.rpo{fill:none;stroke:#e67e22;stroke-width:2}"
        ".axis{stroke:#555}.h{font-weight:bold;font-size:13px}.ax{font-size:11px}"
        "text{font-size:11px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{svg}</body></html>"
    )
