"""docs/OPERATIONS.md "Least privileges" names every ``kcdp`` command in both tables (the
Kafka ACLs and the S3 actions), and only commands that exist; its example policy is JSON."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import orjson

from connectors.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_commands() -> dict[str, set[str]]:
    """Each ``kcdp`` command and its actions (``topics`` -> {"create", "describe"})."""
    return {name: set(_subcommands(sub)) for name, sub in _subcommands(build_parser()).items()}


def table_commands(heading: str) -> set[str]:
    """The backticked names in the first column of the table under ``heading``."""
    text = DOC.read_text("utf-8")
    section = text.split(heading + "\n", 1)[1].split("\n#", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([a-z][a-z -]*)`", first))
    return names


def _covered(names: set[str], command: str, actions: set[str]) -> bool:
    return command in names or (bool(actions) and {f"{command} {a}" for a in actions} <= names)


def test_every_command_has_its_kafka_acls_and_s3_actions() -> None:
    commands = cli_commands()
    assert {"worker", "restore", "topics", "broker"} <= set(commands)
    for heading in ("### Kafka ACLs", "### S3 actions"):
        names = table_commands(heading)
        missing = [c for c, actions in commands.items() if not _covered(names, c, actions)]
        assert not missing, f"{heading} lacks {missing}"
        known = set(commands) | {f"{c} {a}" for c, actions in commands.items() for a in actions}
        assert names <= known, f"{heading} names no command {sorted(names - known)}"


def test_the_example_policy_is_json() -> None:
    text = DOC.read_text("utf-8")
    [policy] = re.findall(r"```json\n(.*?)```", text, re.S)
    doc = orjson.loads(policy)
    actions = {
        a
        for s in doc["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= actions
    assert "s3:DeleteObject" not in actions  # neither role deletes
