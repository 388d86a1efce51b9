"""``make bench`` = ``python -m tests.bench``: run every benchmark, write the README table.

Each ``tests/bench/bench_*.py`` runs in its own process (``python -m tests.bench.common
MODULE``) and returns :class:`tests.bench.common.Figure` rows from its ``figures()``; a
module without ``figures()`` is run as ``python -m MODULE`` and its printed table is kept
verbatim. The result — the machine, one Markdown table (figure, value, goal, met?) and an
SVG plot (``docs/bench.svg``) — replaces the text between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` in README.md. ``--quick`` runs every bench small (a smoke run; its
figures are not representative), ``--only NAME`` selects benches, ``--no-write`` prints
without touching README and docs. Modules without ``figures()`` get no ``--quick``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.common import MARKER, Figure, format_value, print_figures
from tests.bench.plot import render_svg

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
README = ROOT / "README.md"
PLOT = ROOT / "docs" / "bench.svg"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Result:
    """What one bench module produced."""

    name: str
    seconds: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    raw: str = ""
    error: str = ""


def bench_modules() -> list[str]:
    """Names (``bench_x``) of every bench module, sorted."""
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def has_figures(name: str) -> bool:
    """Whether the module defines a top-level ``figures`` function (read, not imported)."""
    tree = ast.parse((BENCH_DIR / f"{name}.py").read_text("utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == "figures" for n in tree.body)


def run_bench(name: str, *, quick: bool, timeout: float) -> Result:
    module = f"tests.bench.{name}"
    structured = has_figures(name)
    cmd = (
        [sys.executable, "-m", "tests.bench.common", module]
        if structured
        else [
            sys.executable,
            "-m",
            module,
        ]
    )
    if quick and structured:
        cmd.append("--quick")
    result = Result(name)
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        result.error = f"timed out after {timeout:.0f}s"
        return result
    finally:
        result.seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        result.error = f"exit {proc.returncode}: " + " / ".join(tail)
        return result
    if structured:
        _, _, lines = proc.stdout.partition(MARKER)
        result.figures = [Figure.from_json(line) for line in lines.splitlines() if line.strip()]
    else:
        result.raw = proc.stdout.strip()
    return result


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tansu_version() -> str:
    from infra.broker import tansu_binary

    try:
        out = subprocess.run(
            [tansu_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip().split()[-1] if out.stdout.strip() else "unknown"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def machine() -> list[tuple[str, str]]:
    """The machine and the versions that matter, as (what, value) pairs."""
    cpu = platform.processor() or "unknown"
    mem = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    with open("/proc/meminfo", encoding="utf-8") as fh:
        kib = next((int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal")), 0)
        mem = f"{kib / (1 << 20):.1f} GiB" if kib else mem
    import confluent_kafka

    return [
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores"),
        ("RAM", mem),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("Tansu", _tansu_version()),
        (
            "confluent-kafka",
            f"{_version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})",
        ),
        ("faust-streaming", _version("faust-streaming")),
    ]


def markdown(results: list[Result], *, quick: bool) -> str:
    """The README block between the markers."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {when} with `make bench`"
        + (" (`--quick`: smoke-sized, not representative)" if quick else "")
        + ". Ratios compare with a baseline measured in the same run; MB/s, events/s and "
        "seconds are measured in this run on the machine below.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine()) + ".",
        "",
        "| bench | figure | value | goal | met? | detail |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for f in r.figures:
            met = "" if f.met is None else ("yes" if f.met else "**no**")
            lines.append(
                f"| {r.name} | {f.name} | {format_value(f.value, f.unit)} | {f.goal_text()} "
                f"| {met} | {f.detail} |"
            )
        if r.error:
            lines.append(f"| {r.name} | (failed) | | | | {r.error.replace('|', '/')} |")
        elif not r.figures and not r.raw:
            lines.append(f"| {r.name} | (no figures) | | | | |")
    lines += ["", f"![benchmark figures](docs/{PLOT.name})"]
    for r in results:
        if r.raw:
            lines += [
                "",
                f"<details><summary>{r.name} (printed table)</summary>",
                "",
                "```",
                r.raw,
                "```",
                "</details>",
            ]
    return "\n".join(lines)


def write_readme(block: str) -> None:
    text = README.read_text("utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers in its Performance section")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}", "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run every bench small")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="bench modules to run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per bench (default 1800)"
    )
    args = parser.parse_args()
    names = bench_modules()
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = wanted - set(names)
        if unknown:
            raise SystemExit(f"unknown bench(es): {', '.join(sorted(unknown))}; have {names}")
        names = [n for n in names if n in wanted]
    results = [run_bench(n, quick=args.quick, timeout=args.timeout) for n in names]
    figures = [f for r in results for f in r.figures]
    print_figures(figures)
    for r in results:
        state = r.error or (f"{len(r.figures)} figures" if r.figures else "printed table")
        print(f"{r.name}: {r.seconds:.0f}s, {state}", file=sys.stderr)
        if r.raw:
            print(r.raw)
    if args.no_write:
        return
    PLOT.parent.mkdir(exist_ok=True)
    PLOT.write_text(render_svg(figures, "kafka-cdp benchmarks (make bench)"), "utf-8")
    write_readme(markdown(results, quick=args.quick))
    print(f"wrote {README.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
