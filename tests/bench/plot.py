"""A small SVG bar chart of benchmark figures (no plotting library needed).

One horizontal bar per figure on a log-10 axis (ratios span orders of magnitude), the goal
drawn as a mark on its bar, green when met and red when not, grey without a goal. Figures
of different units share the axis; each bar is labelled with its value and unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from tests.bench.common import Figure, format_value

ROW = 26
LABEL_W = 330
PLOT_W = 420
VALUE_W = 110
TOP = 40
BOTTOM = 34


def render_svg(figures: Sequence[Figure], title: str) -> str:
    """SVG text of a log-scale bar chart of the positive-valued ``figures``."""
    shown = [f for f in figures if f.value > 0]
    bounds = [f.value for f in shown] + [f.goal[1] for f in shown if f.goal and f.goal[1] > 0]
    lo = math.floor(math.log10(min(bounds))) if bounds else -1
    hi = math.ceil(math.log10(max(bounds))) if bounds else 1
    if hi <= lo:
        hi = lo + 1
    width = LABEL_W + PLOT_W + VALUE_W
    height = TOP + ROW * max(1, len(shown)) + BOTTOM

    def x(value: float) -> float:
        return LABEL_W + PLOT_W * (math.log10(value) - lo) / (hi - lo)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="8" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    axis_y = TOP + ROW * max(1, len(shown))
    for power in range(lo, hi + 1):
        px = x(10.0**power)
        out.append(
            f'<line x1="{px:.1f}" y1="{TOP - 6}" x2="{px:.1f}" y2="{axis_y}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{px:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#555">'
            f"{10.0**power:g}</text>"
        )
    for i, f in enumerate(shown):
        y = TOP + i * ROW
        color = {None: "#8a8a8a", True: "#3c9a5f", False: "#c8453a"}[f.met]
        label = f.name if len(f.name) <= 48 else f.name[:47] + "…"
        out.append(f'<text x="{LABEL_W - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        start = LABEL_W
        end = max(x(f.value), start + 1)
        out.append(
            f'<rect x="{start}" y="{y + 4}" width="{end - start:.1f}" height="{ROW - 10}" '
            f'fill="{color}"/>'
        )
        if f.goal and f.goal[1] > 0:
            gx = x(f.goal[1])
            out.append(
                f'<line x1="{gx:.1f}" y1="{y + 1}" x2="{gx:.1f}" y2="{y + ROW - 3}" '
                'stroke="black" stroke-width="2"/>'
            )
        out.append(
            f'<text x="{LABEL_W + PLOT_W + 6}" y="{y + 15}">'
            f"{escape(format_value(f.value, f.unit))}</text>"
        )
    out.append(
        f'<text x="{LABEL_W}" y="{height - 4}" fill="#555">log scale; black mark = goal; '
        "green met, red not met, grey no goal</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
