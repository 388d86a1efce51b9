"""Configuration: flags > environment > TOML file > defaults, -X parsing, [kafka], redaction."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from connectors.config import (
    CONFIG_ENV,
    ENV,
    Settings,
    load_settings,
    parse_x_options,
    redact,
    redact_text,
    register_secret,
)
from connectors.errors import ConfigError
from connectors.logs import RedactingFilter


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "kcdp.toml"
    path.write_text(text)
    return str(path)


# -- precedence --------------------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    s = load_settings({}, env={})
    assert s == Settings()
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.topic == "kcdp.writes"
    assert s.store_url == f"file://{s.state_path / 'store'}"
    assert s.kafka_config() == {"bootstrap.servers": "127.0.0.1:9092"}


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'bootstrap_servers = "file:1"\nstore = "file:///from-file"\ntopic = "file.topic"\n'
        'log_level = "ERROR"\n',
    )
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:2", "KCDP_STORE": "s3://env-bucket"}
    s = load_settings({"bootstrap_servers": "flag:3", "config": path}, env=env)
    assert s.bootstrap_servers == "flag:3"  # flag over env over file
    assert s.store == "s3://env-bucket"  # env over file
    assert s.topic == "file.topic"  # file over default
    assert s.log_level == "ERROR"
    assert s.increments_topic == "kcdp.increments"  # default


def test_none_flags_mean_not_given(tmp_path: Path) -> None:
    s = load_settings({"bootstrap_servers": None}, env={"KAFKA_BOOTSTRAP_SERVERS": "env:9"})
    assert s.bootstrap_servers == "env:9"


def test_every_env_variable_is_read() -> None:
    typed = {"planned_workers": ("3", 3), "lag_budget": ("36h", "36h")}  # checked values
    env = {var: typed.get(name, (f"value-of-{name}",))[0] for name, var in ENV.items()}
    s = load_settings({}, env=env)
    for name in ENV:
        assert getattr(s, name) == typed.get(name, (None, f"value-of-{name}"))[1]


def test_empty_env_variable_is_ignored() -> None:
    assert load_settings({}, env={"KCDP_TOPIC": ""}).topic == "kcdp.writes"


def test_config_file_from_env_and_explicit_path_wins(tmp_path: Path) -> None:
    env_file = _toml(tmp_path, 'topic = "from-env-file"\n')
    other = tmp_path / "other.toml"
    other.write_text('topic = "from-flag-file"\n')
    assert load_settings({}, env={CONFIG_ENV: env_file}).topic == "from-env-file"
    assert (
        load_settings({"config": str(other)}, env={CONFIG_ENV: env_file}).topic == "from-flag-file"
    )
    assert load_settings({}, env={}, config_path=str(other)).topic == "from-flag-file"


# -- Kafka properties ----------------------------------------------------------------------


def test_x_options_pass_unchanged() -> None:
    got = parse_x_options(["acks=1", "sasl.jaas.config=a=b c=d", " linger.ms =5", "empty="])
    assert got == {"acks": "1", "sasl.jaas.config": "a=b c=d", "linger.ms": "5", "empty": ""}


@pytest.mark.parametrize("bad", ["novalue", "=value", "  =x", ""])
def test_malformed_x_option_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="-X expects key=value"):
        parse_x_options([bad])


def test_kafka_table_is_merged_under_x_flags(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[kafka]\n"security.protocol" = "SASL_SSL"\n"linger.ms" = 50\n"client.id" = "file"\n',
    )
    s = load_settings(
        {"config": path, "kafka": {"client.id": "flag", "acks": "all"}},
        env={"KAFKA_BOOTSTRAP_SERVERS": "b:1"},
    )
    assert s.kafka == {
        "security.protocol": "SASL_SSL",
        "linger.ms": "50",
        "client.id": "flag",
        "acks": "all",
    }
    conf = s.kafka_config(**{"group.id": "g"})
    assert conf == {"bootstrap.servers": "b:1", **s.kafka, "group.id": "g"}


def test_x_can_override_bootstrap_servers_in_kafka_config() -> None:
    s = load_settings({"kafka": {"bootstrap.servers": "x:1"}}, env={})
    assert s.kafka_config()["bootstrap.servers"] == "x:1"


# -- bad configuration ---------------------------------------------------------------------


def test_unknown_key_in_file_is_a_config_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'bootstrap_servers = "a:1"\nbootstrap_server = "typo"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*bootstrap_server"):
        load_settings({"config": path}, env={})


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, "topic = \n[[[")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"config": path}, env={})


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env={CONFIG_ENV: str(tmp_path / "absent.toml")})


@pytest.mark.parametrize("text", ['topic = ""\n', "topic = 5\n", 'bootstrap_servers = ""\n'])
def test_empty_or_non_string_required_setting_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be a non-empty string"):
        load_settings({"config": _toml(tmp_path, text)}, env={})


# -- secrets -------------------------------------------------------------------------------


def test_secret_kafka_properties_are_registered_and_redacted() -> None:
    load_settings({"kafka": {"sasl.password": "Pw-from-flag-91"}}, env={})
    assert redact_text("login failed with Pw-from-flag-91!") == "login failed with ***!"


def test_secret_environment_variables_are_registered() -> None:
    load_settings(
        {}, env={"AWS_SECRET_ACCESS_KEY": "aws-secret-77", "MINIO_ROOT_PASSWORD": "mp-55"}
    )
    assert redact_text("aws-secret-77 mp-55") == "*** ***"


def test_secrets_in_the_config_file_kafka_table_are_registered(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[kafka]\n"ssl.key.password" = "file-key-pw-3"\n')
    load_settings({"config": path}, env={})
    assert "file-key-pw-3" not in redact_text("bad key file-key-pw-3")


def test_redact_text_removes_url_passwords() -> None:
    assert (
        redact_text("GET s3://alice:topsecret@minio:9000/bucket failed")
        == "GET s3://alice:***@minio:9000/bucket failed"
    )
    assert redact_text("http://u:p@h/x and https://v:q@k") == "http://u:***@h/x and https://v:***@k"
    assert redact_text("plain text, no url") == "plain text, no url"


def test_redact_text_prefers_longest_secret() -> None:
    register_secret("abcd")
    register_secret("abcdefgh")
    assert redact_text("xxabcdefghyy") == "xx***yy"


def test_short_values_are_not_registered() -> None:
    register_secret("ab")
    assert redact_text("tab") == "tab"


def test_redact_mapping() -> None:
    conf = {
        "sasl.password": "pw",
        "sasl.username": "bob",
        "ssl.key.password": "kp",
        "oauthbearer.token.endpoint.url": "https://id.example/token",
        "sasl.oauthbearer.client.secret": "cs",
        "bootstrap.servers": "k:9092",
        "proxy": "http://u:hidden@proxy:3128",
    }
    out = redact(conf)
    assert out["sasl.password"] == out["ssl.key.password"] == "***"
    assert out["sasl.oauthbearer.client.secret"] == "***"
    assert out["oauthbearer.token.endpoint.url"] == "***"  # "token" marks it secret
    assert out["sasl.username"] == "bob"
    assert out["bootstrap.servers"] == "k:9092"
    assert out["proxy"] == "http://u:***@proxy:3128"
    assert conf["sasl.password"] == "pw", "redact must not change its input"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("failed with Log-Secret-42 at s3://k:urlpw@h/b")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("kcdp.test", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_logging_filter_scrubs_message_args_and_tracebacks() -> None:
    register_secret("Log-Secret-42")
    formatter = logging.Formatter("%(message)s")
    rec = _record("connect %s with %r", "s3://k:urlpw@h/b", "Log-Secret-42", exc=True)
    assert RedactingFilter().filter(rec) is True
    text = formatter.format(rec)
    assert "Log-Secret-42" not in text
    assert "urlpw" not in text
    assert "Traceback" in text and "RuntimeError" in text
    assert "connect s3://k:***@h/b with '***'" in text


def test_logging_filter_keeps_clean_messages() -> None:
    rec = _record("nothing secret %d", 5)
    RedactingFilter().filter(rec)
    assert rec.getMessage() == "nothing secret 5"


def test_x_option_error_never_echoes_a_secret() -> None:
    with pytest.raises(ConfigError) as info:
        parse_x_options(["broken-XPw-4471", "sasl.password=XPw-4471"])
    assert "XPw-4471" not in info.value.message
    with pytest.raises(ConfigError, match="naming a secret property") as info:
        parse_x_options(["sasl.password:Colon-Pw-93"])
    assert "Colon-Pw-93" not in info.value.message
