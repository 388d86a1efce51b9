"""docs/ARCHITECTURE.md stays true: every module path and every ``Class.method`` or
function it names in its tables exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
PATHS = sorted(set(re.findall(r"`((?:schemas|streams|connectors|infra)/[\w/]+\.py)`", DOC)))


def _names(path: Path) -> set[str]:
    """Top-level functions and classes of a module, and ``Class.method`` for each method."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        if isinstance(node, ast.ClassDef):
            out |= {
                f"{node.name}.{n.name}"
                for n in node.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return out


def test_the_document_names_modules() -> None:
    assert len(PATHS) > 30


def test_every_module_it_names_exists() -> None:
    missing = [p for p in PATHS if not (ROOT / p).is_file()]
    assert missing == []


def test_every_function_in_the_rules_table_exists_in_its_files() -> None:
    table = DOC[DOC.index("## Where each rule is enforced") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and ".py" in line]
    assert len(rows) >= 15
    for row in rows:
        files = re.findall(r"`([\w/]+\.py)`", row)
        defined = set().union(*(_names(ROOT / f) for f in files))
        cell = row.rstrip(" |").rsplit("|", 1)[-1]
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", cell):
            assert name in defined, f"{name} is not defined in {files}"
