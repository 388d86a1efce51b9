"""README.md stays true: the two commands first, the exit-code table equal to EXIT_CODES."""

from __future__ import annotations

import re
from pathlib import Path

from connectors.config import ENV
from connectors.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def exit_code_table() -> str:
    """The README's exit-code table, rendered from :data:`EXIT_CODES`."""
    rows = [f"| {code} | {meaning} |" for code, meaning in sorted(EXIT_CODES.items())]
    return "\n".join(["| code | meaning |", "|---|---|", *rows])


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    assert README.index("```sh") < README.index("\n## "), "the commands must come first"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


def test_exit_code_table_matches_exit_codes_exactly() -> None:
    section = _section("Exit codes")
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M)
    assert {int(code): meaning for code, meaning in rows} == EXIT_CODES
    assert len(rows) == len(EXIT_CODES), "a code is listed twice"
    assert exit_code_table() in section


def test_configuration_names_every_environment_variable() -> None:
    section = _section("Configuration")
    for name, var in ENV.items():
        assert f"`{var}`" in section, var
        assert f"`{name}`" in section, name
    for word in ("KCDP_CONFIG", "-X KEY=VALUE", "[kafka]", "AWS_SECRET_ACCESS_KEY"):
        assert word in section


def test_layout_lists_the_top_level_directories() -> None:
    section = _section("Layout")
    for directory in ("schemas/", "connectors/", "streams/", "infra/", "tests/"):
        assert re.search(rf"^{directory}", section, re.M), directory
        assert (ROOT / directory).is_dir()


def test_links_point_at_existing_files() -> None:
    bench_runner = (ROOT / "tests" / "bench" / "__main__.py").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if target.startswith("docs/bench.") and Path(target).name in bench_runner:
            continue  # written by `make bench`
        assert (ROOT / target).is_file(), target


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), target
