"""The shared interface of the benchmarks: a :class:`Figure` row type and its printer.

A bench module ``tests/bench/bench_<name>.py`` exposes ``figures(quick: bool) -> list[Figure]``
(every figure a ratio or a median measured in the same run, ``quick`` = a smaller, faster
run) and a ``main()`` that prints them with :func:`print_figures`. ``python -m tests.bench``
collects the figures of every module into the README.

``python -m tests.bench.common MODULE [--quick]`` runs one module's ``figures`` and prints
them as JSON lines after a :data:`MARKER` line (how the harness runs each module in its own
process).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TextIO

#: Printed before the JSON lines of :func:`emit`, so other output can precede it.
MARKER = "--- kcdp bench figures ---"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure.

    ``unit`` is ``x`` for a ratio, else a base unit (``s``, ``MiB/s``, ...). ``goal`` is
    ``("<=", v)`` or ``(">=", v)`` when the project sets one. ``detail`` names the baseline
    and raw numbers behind a ratio.
    """

    bench: str
    name: str
    value: float
    unit: str = "x"
    goal: tuple[str, float] | None = None
    detail: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the goal is met (None: no goal)."""
        if self.goal is None:
            return None
        op, bound = self.goal
        return self.value <= bound if op == "<=" else self.value >= bound

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        op, bound = self.goal
        return f"{'≤' if op == '<=' else '≥'} {format_value(bound, self.unit)}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Figure:
        d = json.loads(text)
        goal = d.get("goal")
        return cls(
            bench=d["bench"],
            name=d["name"],
            value=float(d["value"]),
            unit=d.get("unit", "x"),
            goal=None if goal is None else (str(goal[0]), float(goal[1])),
            detail=d.get("detail", ""),
        )


def format_value(value: float, unit: str) -> str:
    """``value`` with 3 significant digits and its unit."""
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text}{unit}" if unit == "x" else f"{text} {unit}"


def print_figures(figures: Sequence[Figure], file: TextIO | None = None) -> None:
    """An aligned text table of ``figures`` on stdout (or ``file``)."""
    out = file or sys.stdout
    rows = [("figure", "value", "goal", "met", "detail")]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.name, format_value(f.value, f.unit), f.goal_text(), met, f.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:4], widths, strict=True)]
        print("  ".join([*cells, r[4]]).rstrip(), file=out)


def quick_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--quick`` flag every bench accepts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    return parser


def emit(module: str, *, quick: bool) -> None:
    """Run ``module``'s ``figures`` and print them as JSON lines after :data:`MARKER`."""
    mod = importlib.import_module(module)
    found = mod.figures(quick=quick)
    print(MARKER, flush=True)
    for f in found:
        print(f.to_json(), flush=True)


def main() -> None:
    parser = quick_parser("Run one bench module's figures() and print them as JSON lines.")
    parser.add_argument("module", help="e.g. tests.bench.bench_store")
    args = parser.parse_args()
    emit(args.module, quick=args.quick)


if __name__ == "__main__":
    main()
