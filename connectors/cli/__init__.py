"""``kcdp`` — the command line of kafka-cdp.

Each command group lives in its own module of this package, named in :data:`COMMANDS`;
a module exposes ``register(subparsers, parents)`` that adds its parsers and sets
``func`` to a handler ``(args, settings) -> exit code``. Results go to stdout, logs to
stderr. Errors become the exit codes of :data:`connectors.errors.EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import connectors
from connectors.config import Settings, load_settings, parse_x_options, redact_text
from connectors.errors import KcdpError
from connectors.logs import setup_logging

#: modules of this package that register commands, in help order.
COMMANDS: list[str] = [
    "broker",
    "check",
    "topics",
    "prune",
    "key",
    "capture",
    "restore",
    "points",
    "export",
    "mount",
    "demo",
    "status",
    "worker",
]

#: command -> the module of this package that registers it: a command line naming one
#: imports only that module (a command starts without importing every other one).
COMMAND_MODULES: dict[str, str] = {
    "broker": "broker",
    "check": "check",
    "topics": "topics",
    "prune": "prune",
    "key": "key",
    "intercept": "capture",
    "bookmark": "capture",
    "baseline": "capture",
    "restore": "restore",
    "verify": "restore",
    "replica": "restore",
    "points": "points",
    "export": "export",
    "mount": "mount",
    "umount": "mount",
    "demo": "demo",
    "status": "status",
    "worker": "worker",
}

log = logging.getLogger("kcdp")


def common_parser() -> argparse.ArgumentParser:
    """Options every command accepts (flags override environment and config file).

    They are accepted before and after the command name; absent options stay absent
    (``SUPPRESS``) so a subcommand's parser does not reset what was given before it.
    """
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("common options")
    g.add_argument("--config", help="TOML config file (env KCDP_CONFIG)")
    g.add_argument(
        "--bootstrap-servers",
        dest="bootstrap_servers",
        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default 127.0.0.1:9092)",
    )
    g.add_argument(
        "--store",
        help="object store URL: file://DIR, s3://BUCKET/PREFIX?endpoint=HOST:PORT, memory:// "
        "(env KCDP_STORE; default file://<state-dir>/store)",
    )
    g.add_argument(
        "--schema-registry",
        dest="schema_registry",
        help="Confluent schema registry URL; switches events to the Confluent wire format",
    )
    g.add_argument(
        "--encryption-key-file",
        dest="encryption_key_file",
        help="key file that seals the store's objects (env KCDP_ENCRYPTION_KEY_FILE; "
        "default: none, the store is not encrypted; `kcdp key generate FILE` makes one)",
    )
    g.add_argument("--topic", help="write-event topic (env KCDP_TOPIC; default kcdp.writes)")
    g.add_argument("--state-dir", dest="state_dir", help="local state directory")
    g.add_argument(
        "-X",
        dest="kafka_options",
        action="append",
        metavar="KEY=VALUE",
        help="Kafka client property, passed unchanged (repeatable)",
    )
    g.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")
    return p


class _VersionAction(argparse.Action):
    """``--version``: print ``kcdp VERSION`` and exit (the version is looked up only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        sys.stdout.write(f"kcdp {connectors.__version__}\n")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``kcdp`` parser: every command, or only ``command``'s module's when it is one."""
    parents = [common_parser()]
    parser = argparse.ArgumentParser(
        prog="kcdp",
        description="kafka-cdp: continuous data protection for block volumes, built on Kafka.",
        parents=parents,
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else COMMANDS
    for name in modules:
        importlib.import_module(f"connectors.cli.{name}").register(sub, parents)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``: its first word that is not a common option or value."""
    _, rest = common_parser().parse_known_args(list(argv))
    return next((word for word in rest if not word.startswith("-")), None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in (
            "config",
            "bootstrap_servers",
            "store",
            "schema_registry",
            "encryption_key_file",
            "topic",
            "state_dir",
            "log_level",
            "planned_workers",  # flags of the commands that size or check topics
            "lag_budget",
        )
    }
    flags["kafka"] = parse_x_options(getattr(args, "kafka_options", []) or [])
    return load_settings(flags)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(words))
    args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
        setup_logging(settings.log_level)
        code = int(args.func(args, settings) or 0)
    except KcdpError as exc:
        print(f"kcdp: error: {redact_text(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: keep the traceback, scrubbed
        log.exception("unexpected error: %s", redact_text(str(exc)))
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
