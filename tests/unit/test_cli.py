"""Argument parsing of the options every ``kcdp`` command shares, and of ``kcdp broker``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from connectors.cli import COMMANDS, build_parser, settings_from_args
from connectors.cli.broker import storage_url
from connectors.errors import ConfigError, UsageError

COMMON = [
    "--bootstrap-servers",
    "k1:9092,k2:9092",
    "--store",
    "s3://bucket/prefix?endpoint=minio:9000",
    "--schema-registry",
    "http://registry:8081",
    "--topic",
    "my.writes",
    "--state-dir",
    "/var/lib/kcdp",
    "--log-level",
    "DEBUG",
    "-X",
    "acks=all",
    "-X",
    "client.id=c1",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KCDP_CONFIG", "KAFKA_BOOTSTRAP_SERVERS", "KCDP_STORE", "KCDP_TOPIC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("KCDP_LOG_LEVEL", raising=False)
    monkeypatch.delenv("KCDP_STATE_DIR", raising=False)
    monkeypatch.delenv("KCDP_SCHEMA_REGISTRY", raising=False)


def _check_common(argv: list[str]) -> None:
    s = settings_from_args(build_parser().parse_args(argv))
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.store == "s3://bucket/prefix?endpoint=minio:9000"
    assert s.schema_registry == "http://registry:8081"
    assert s.topic == "my.writes"
    assert s.state_dir == "/var/lib/kcdp"
    assert s.log_level == "DEBUG"
    assert dict(s.kafka) == {"acks": "all", "client.id": "c1"}


def test_common_options_after_the_command() -> None:
    _check_common(["broker", *COMMON])


def test_common_options_before_the_command_are_kept() -> None:
    _check_common([*COMMON, "broker"])


def test_absent_common_options_fall_back_to_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:1")
    monkeypatch.setenv("KCDP_TOPIC", "env.topic")
    s = settings_from_args(build_parser().parse_args(["broker", "--topic", "flag.topic"]))
    assert s.bootstrap_servers == "env:1"
    assert s.topic == "flag.topic"
    assert dict(s.kafka) == {}


def test_config_option_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('topic = "from.file"\n[kafka]\n"acks" = "1"\n')
    args = build_parser().parse_args(["broker", "--config", str(path), "-X", "acks=all"])
    s = settings_from_args(args)
    assert s.topic == "from.file"
    assert s.kafka["acks"] == "all"


def test_bad_x_option_raises_config_error() -> None:
    with pytest.raises(ConfigError):
        settings_from_args(build_parser().parse_args(["broker", "-X", "nokey"]))


def test_foundation_commands_are_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"broker", "check"} <= set(sub.choices)
    assert {"broker", "check"} <= set(COMMANDS)


def test_unknown_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["broker", "--no-such-option"])
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_broker_defaults() -> None:
    args = build_parser().parse_args(["broker"])
    assert (args.port, args.host, args.storage) == (9092, "127.0.0.1", "memory")
    assert (args.create_topics, args.partitions, args.start_timeout) == (False, 4, 30.0)


def test_broker_options() -> None:
    args = build_parser().parse_args(
        [
            "broker",
            "--port",
            "0",
            "--storage",
            "s3://tansu/",
            "--create-topics",
            "--partitions",
            "8",
        ]
    )
    assert (args.port, args.storage, args.create_topics, args.partitions) == (
        0,
        "s3://tansu/",
        True,
        8,
    )


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("memory", "memory://tansu/"),
        ("memory://other/", "memory://other/"),
        ("s3://tansu/", "s3://tansu/"),
    ],
)
def test_storage_url(given: str, url: str) -> None:
    assert storage_url(given) == url


@pytest.mark.parametrize("bad", ["disk", "file:///tmp/x", "", "s3:/x"])
def test_bad_storage_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="--storage must be"):
        storage_url(bad)


def test_each_command_is_registered_by_the_module_the_map_names() -> None:
    """COMMAND_MODULES is exactly what the modules register, so a command line that names
    a command builds a parser from its module alone."""
    import importlib

    from connectors.cli import COMMAND_MODULES, common_parser

    found: dict[str, str] = {}
    for name in COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"connectors.cli.{name}").register(sub, [common_parser()])
        found.update({command: name for command in sub.choices})
    assert found == COMMAND_MODULES


def test_the_command_word_is_found_after_common_options() -> None:
    from connectors.cli import command_named

    assert command_named([*COMMON, "restore", "va", "--latest"]) == "restore"
    assert command_named(["-X", "a=b", "export", "--store", "file:///s"]) == "export"
    assert command_named(["--version"]) is None and command_named([]) is None
    args = build_parser("points").parse_args(["points", "va", *COMMON])
    assert args.command == "points" and args.store.startswith("s3://")


def test_a_named_command_imports_no_other_command_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from connectors.cli import build_parser; build_parser('points');"
        "print(sorted(m for m in sys.modules if m.startswith('connectors.cli.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == "['connectors.cli.points']"
