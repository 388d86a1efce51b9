"""The ``make bench`` report: figure rows, goals, the README block and the SVG plot."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.bench import __main__ as harness
from tests.bench.common import Figure
from tests.bench.plot import render_svg

FIGS = [
    Figure("storage", "stored ÷ restic", 0.15, goal=("<=", 0.1), detail="154 vs 1024 MiB"),
    Figure("rpo", "RPO p99", 1.9, "s", goal=("<=", 2.0)),
    Figure("agent", "MB/s", 51.0, "MB/s", goal=(">=", 100.0)),
    Figure("capture", "API ÷ raw", 0.5),
]


def test_goals_and_json_round_trip() -> None:
    assert [f.met for f in FIGS] == [False, True, False, None]
    assert FIGS[0].goal_text() == "≤ 0.1x" and FIGS[2].goal_text() == "≥ 100 MB/s"
    assert [Figure.from_json(f.to_json()) for f in FIGS] == FIGS


def test_markdown_block_and_readme_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = [
        harness.Result("bench_a", figures=FIGS[:2]),
        harness.Result("bench_b", error="exit 1: boom | bang"),
        harness.Result("bench_c", raw="| case | ratio |"),
    ]
    block = harness.markdown(results, quick=False)
    assert "| bench_a | stored ÷ restic | 0.15x | ≤ 0.1x | **no** | 154 vs 1024 MiB |" in block
    assert "| bench_a | RPO p99 | 1.9 s | ≤ 2 s | yes |  |" in block
    assert "| bench_b | (failed) |" in block and "boom / bang" in block
    assert "<summary>bench_c (printed table)</summary>" in block
    assert "Machine: CPU " in block and "faust-streaming" in block
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n\n{harness.START}\nold\n{harness.END}\n\n## Next\n")
    monkeypatch.setattr(harness, "README", readme)
    harness.write_readme(block)
    text = readme.read_text()
    assert "old" not in text and block in text
    assert text.startswith("# x\n") and text.endswith(f"{harness.END}\n\n## Next\n")
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        harness.write_readme(block)


def test_svg_plot_is_valid_and_colours_goals() -> None:
    svg = render_svg(FIGS, "bench & co")
    root = ET.fromstring(svg)
    bars = [el for el in root if el.tag.endswith("rect") and el.get("y")]
    assert [b.get("fill") for b in bars] == ["#c8453a", "#3c9a5f", "#c8453a", "#8a8a8a"]
    assert "bench &amp; co" in svg


def test_every_bench_module_exposes_figures() -> None:
    names = harness.bench_modules()
    assert {"bench_rpo", "bench_storage", "bench_store"} <= set(names)
    assert all(harness.has_figures(n) for n in names)
