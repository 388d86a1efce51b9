"""infra/docker-compose.yml, checked statically (no Docker engine here).

Kafka runs in KRaft mode, MinIO has a health check and a console, one-shot services create
the topics and the bucket, and the kcdp worker waits for all of them and uses them.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.store import open_store

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "docker-compose.yml"
SERVICES = {"kafka", "kafka-topics", "minio", "minio-init", "kcdp-worker", "prometheus"}
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _interpolate(text: str) -> str:
    """Compose-style ``${VAR:-default}`` with every variable unset, ``$$`` -> ``$``."""
    return _DEFAULT.sub(lambda m: m[2], text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _command(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return _interpolate(" ".join(cmd) if isinstance(cmd, list) else str(cmd))


def test_services_present_and_each_has_an_image_or_build(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) >= SERVICES
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        if "image" in svc:
            assert ":" in svc["image"] and not svc["image"].endswith(":latest"), (
                f"{name}: pin the image tag"
            )


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{node}@kafka:9093"]
    assert "ZOOKEEPER" not in " ".join(env).upper()
    listeners = dict(
        item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(",")
    )  # name -> ":port"
    protocol_map = dict(
        x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocol_map)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == ":9093"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "kafka:9092"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "CLUSTER_ID: base64 UUID"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # single node
    # the host port maps to a listener advertised with that same port
    published = {
        str(p).split(":")[-2]: str(p).split(":")[-1] for p in map(_interpolate, kafka["ports"])
    }
    external = [v for v in advertised.values() if v.startswith("localhost:")]
    assert external, "no listener advertised for clients on the host"
    host_port = external[0].split(":")[1]
    assert host_port in published and f":{published[host_port]}" in listeners.values()
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_minio_has_console_healthcheck_and_published_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio:")
    assert "server" in minio["command"] and "--console-address" in minio["command"]
    ports = {_interpolate(str(p)) for p in minio["ports"]}
    assert {"9000:9000", "9001:9001"} <= ports
    assert minio["healthcheck"]["test"]
    env = _env(minio)
    assert env["MINIO_ROOT_USER"] and env["MINIO_ROOT_PASSWORD"]


def test_one_shot_services_create_bucket_and_topics(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc:")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = _command(init)
    assert "mc alias set local http://minio:9000" in script
    assert 'mc mb --ignore-existing "local/$KCDP_BUCKET"' in script
    assert _env(init)["KCDP_BUCKET"] == "kcdp"
    topics = services["kafka-topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = _command(topics)
    assert "kafka-topics.sh --bootstrap-server kafka:9092 --create" in script
    assert "--if-not-exists" in script
    for topic in ("kcdp.writes", "kcdp.increments", "kcdp.writes.dlq"):
        assert topic in script
    for one_shot in (init, topics):
        assert one_shot.get("restart") == "no"


def test_worker_uses_the_compose_kafka_and_minio(services: dict[str, dict[str, Any]]) -> None:
    worker = services["kcdp-worker"]
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "kafka-topics": {"condition": "service_completed_successfully"},
        "minio-init": {"condition": "service_completed_successfully"},
    }
    command = _command(worker)
    store = "s3://kcdp/?endpoint=minio:9000&secure=false"
    assert f'kcdp worker --bootstrap-servers kafka:9092 --store "{store}"' in command
    env = _env(worker)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["KCDP_STORE"] == store
    minio_env = _env(services["minio"])
    assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert "pip install" in command


def test_worker_store_url_is_accepted_by_open_store(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(services["kcdp-worker"])
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, env[var])
    url = env["KCDP_STORE"]
    store = open_store(url, retry=False)  # parses the URL; connects only when used
    try:
        assert store.url == url
    finally:
        store.close()


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    used = set()
    for svc in compose["services"].values():
        for mount in svc.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == set(compose["volumes"])


def test_compose_file_and_readme_ship_as_package_data() -> None:
    pyproject = tomllib.loads((COMPOSE.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["infra"]
    for name in ("docker-compose.yml", "README.md"):
        assert (COMPOSE.parent / name).is_file()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_prometheus_mounts_the_rules_and_scrapes_the_worker(
    services: dict[str, dict[str, Any]],
) -> None:
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:v")
    mounts = {str(m).split(":")[0]: str(m).split(":")[1] for m in prom["volumes"]}
    config_dir = COMPOSE.parent
    for source in mounts:
        if source.startswith("."):
            assert (config_dir / source).is_file(), source
    assert mounts["./prometheus/kcdp-rules.yml"] == "/etc/prometheus/kcdp-rules.yml"
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    config = yaml.safe_load((config_dir / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["kcdp-rules.yml"]  # next to the config in the container
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"kcdp-worker", "kcdp-intercept"}  # the jobs the rules name
    (target,) = jobs["kcdp-worker"]["static_configs"][0]["targets"]
    port = re.search(r"--web-port (\d+)", _command(services["kcdp-worker"]))
    assert port is not None and target == f"kcdp-worker:{port[1]}"
    assert "--web-host 0.0.0.0" in _command(services["kcdp-worker"])
