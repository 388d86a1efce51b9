"""The error hierarchy: exit codes, retriable flags, and how ``kcdp`` reports errors."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest

from connectors import cli, errors
from connectors.cli import broker as broker_cli
from connectors.config import Settings
from connectors.errors import EXIT_CODES, KcdpError


def _subclasses(cls: type[KcdpError]) -> Iterator[type[KcdpError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


ALL_ERRORS: list[type[KcdpError]] = [KcdpError, *_subclasses(KcdpError)]


def test_every_error_class_of_the_module_is_covered() -> None:
    declared = {
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, KcdpError)
    }
    assert declared == set(ALL_ERRORS)
    assert len(ALL_ERRORS) >= 14


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_has_a_documented_exit_code(cls: type[KcdpError]) -> None:
    assert cls.exit_code in EXIT_CODES
    assert cls.exit_code not in (0, 130)
    assert cls.__doc__, f"{cls.__name__} has no docstring"


def test_exit_codes_of_the_main_classes() -> None:
    expected = {
        errors.KcdpError: 1,
        errors.UsageError: 2,
        errors.ConfigError: 2,
        errors.DecodeError: 3,
        errors.InvalidEventError: 3,
        errors.StoreError: 4,
        errors.ObjectNotFoundError: 4,
        errors.BrokerError: 5,
        errors.DeliveryError: 5,
        errors.IntegrityError: 6,
        errors.GapError: 7,
        errors.NotRestorableError: 8,
        errors.VolumeError: 9,
        errors.ExternalToolError: 10,
    }
    for cls, code in expected.items():
        assert cls.exit_code == code, cls.__name__


def test_every_nonzero_exit_code_but_interrupt_belongs_to_an_error() -> None:
    used = {cls.exit_code for cls in ALL_ERRORS}
    assert set(EXIT_CODES) - used == {0, 130}


def test_retriable_flags() -> None:
    assert errors.BrokerError("x").retriable is True
    assert errors.DeliveryError("x").retriable is True
    for cls in (
        errors.KcdpError,
        errors.UsageError,
        errors.DecodeError,
        errors.StoreError,
        errors.IntegrityError,
        errors.GapError,
    ):
        assert cls("x").retriable is False, cls.__name__
    assert errors.StoreError("timeout", retriable=True).retriable is True
    assert errors.BrokerError("bad config", retriable=False).retriable is False
    # the override is per instance, not per class
    assert errors.StoreError("x").retriable is False


def test_message_property() -> None:
    assert errors.GapError("hole at 7").message == "hole at 7"
    assert str(errors.GapError("hole at 7")) == "hole at 7"


def _run_main_with(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException | None, result: int = 0
) -> int:
    """Run ``kcdp broker`` with its handler replaced by one that raises ``raised``."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        if raised is not None:
            raise raised
        return result

    monkeypatch.setattr(broker_cli, "run", handler)
    monkeypatch.delenv("KCDP_CONFIG", raising=False)
    return cli.main(["broker"])


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_main_maps_each_error_to_its_exit_code(
    cls: type[KcdpError], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run_main_with(monkeypatch, cls(f"{cls.__name__} went wrong"))
    assert code == cls.exit_code
    err = capsys.readouterr().err
    assert err.strip() == f"kcdp: error: {cls.__name__} went wrong"


def test_main_returns_130_on_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run_main_with(monkeypatch, KeyboardInterrupt()) == 130


def test_main_returns_handler_code(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run_main_with(monkeypatch, None, result=7) == 7
    assert _run_main_with(monkeypatch, None, result=0) == 0


def test_main_maps_a_bug_to_1_with_a_logged_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    code = _run_main_with(monkeypatch, RuntimeError("boom"))
    assert code == 1
    assert "unexpected error: boom" in caplog.text
    assert "RuntimeError" in caplog.text


def test_main_without_a_command_prints_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([]) == 2
    assert "usage: kcdp" in capsys.readouterr().err


def test_bad_x_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["broker", "-X", "no-equals-sign"]) == 2
    assert "kcdp: error: -X expects key=value" in capsys.readouterr().err
