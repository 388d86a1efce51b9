"""Secrets never reach kcdp's output: real ``kcdp check`` runs at DEBUG, failing and succeeding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.broker import free_port

KCDP = str(Path(sys.executable).parent / "kcdp")

KAFKA_PASSWORD = "KafkaPw-S3cr3t-71f3"
FILE_PASSWORD = "FilePw-S3cr3t-2c9a"
AWS_SECRET = "AwsKey-S3cr3t-b04e"
MINIO_SECRET = "MinioKey-S3cr3t-88d1"
URL_PASSWORD = "UrlPw-S3cr3t-5e27"
SECRETS = (KAFKA_PASSWORD, FILE_PASSWORD, AWS_SECRET, MINIO_SECRET, URL_PASSWORD)


def _kcdp(args: list[str], *, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCDP_", "KAFKA_"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "kcdp-test-access",
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "MINIO_SECRET_KEY": MINIO_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    env.update(extra_env)
    return subprocess.run(
        [KCDP, "--log-level", "DEBUG", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _assert_clean(run: subprocess.CompletedProcess[str]) -> str:
    output = run.stdout + run.stderr
    for secret in SECRETS:
        assert secret not in output, f"secret {secret} leaked:\n{output}"
        # no fragment long enough to be the secret's tail either
        assert secret[-10:] not in output, f"part of {secret} leaked:\n{output}"
    assert "Traceback" not in output
    return output


SASL = [
    "-X",
    "security.protocol=SASL_PLAINTEXT",
    "-X",
    "sasl.mechanism=PLAIN",
    "-X",
    "sasl.username=kcdp",
    "-X",
    "debug=security,broker,conf",
]


def test_failing_check_with_secret_flags_env_and_url(tmp_path: Path) -> None:
    closed = free_port()
    store = f"s3://kcdp/prefix?endpoint=127.0.0.1:{free_port()}&secure=false"
    run = _kcdp(
        [
            "check",
            "--timeout",
            "3",
            "--bootstrap-servers",
            f"127.0.0.1:{closed}",
            "--store",
            store,
            *SASL,
            "-X",
            f"sasl.password={KAFKA_PASSWORD}",
        ],
        extra_env={},
    )
    output = _assert_clean(run)
    assert run.returncode == 5, output
    assert "kafka  FAILED" in run.stdout and "store  FAILED" in run.stdout
    # the librdkafka debug dump went through kcdp's logger and named the property
    assert "kcdp.kafka" in run.stderr and "sasl.password" in run.stderr


def test_failing_check_with_secret_in_config_file_and_store_url(tmp_path: Path) -> None:
    config = tmp_path / "kcdp.toml"
    config.write_text(
        f'bootstrap_servers = "127.0.0.1:{free_port()}"\n'
        f'[kafka]\n"sasl.password" = "{FILE_PASSWORD}"\n'
        '"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanism" = "PLAIN"\n'
        '"sasl.username" = "kcdp"\n"debug" = "conf"\n'
    )
    store = f"s3://admin:{URL_PASSWORD}@kcdp/p?endpoint=127.0.0.1:{free_port()}"
    run = _kcdp(
        ["check", "--timeout", "3", "--store", store],
        extra_env={"KCDP_CONFIG": str(config)},
    )
    output = _assert_clean(run)
    assert run.returncode == 5, output
    assert "admin:***@" in run.stdout, "the store URL's password should show as ***"


def test_bad_x_option_error_does_not_echo_a_secret() -> None:
    run = _kcdp(
        [
            "check",
            "-X",
            f"sasl.password={KAFKA_PASSWORD}",
            "-X",
            f"{KAFKA_PASSWORD}-no-equals",
        ],
        extra_env={},
    )
    output = _assert_clean(run)
    assert run.returncode == 2, output
    assert "kcdp: error: -X expects key=value" in run.stderr


def test_successful_check_against_real_broker_and_s3(bootstrap: str, s3_url: str) -> None:
    run = _kcdp(
        [
            "check",
            "--bootstrap-servers",
            bootstrap,
            "--store",
            s3_url,
            "-X",
            f"sasl.password={KAFKA_PASSWORD}",
            "-X",
            "debug=conf",
        ],
        extra_env={},
    )
    output = _assert_clean(run)
    assert run.returncode == 0, output
    assert "kafka  ok" in run.stdout and "store  ok" in run.stdout


def test_malformed_x_option_naming_a_secret_is_not_echoed() -> None:
    run = _kcdp(["check", "-X", f"sasl.password:{KAFKA_PASSWORD}"], extra_env={})
    output = _assert_clean(run)
    assert run.returncode == 2, output
    assert "naming a secret property" in run.stderr
