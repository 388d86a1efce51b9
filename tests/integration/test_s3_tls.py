"""The S3 store over real TLS (moto behind Python's ``ssl``, tests/fixtures/s3.py).

The endpoint's certificate is signed by the session's test CA (tests/fixtures/tls.py),
trusted explicitly with the URL's ``ca=`` or with ``SSL_CERT_FILE``. An untrusted
certificate and HTTPS to a plaintext endpoint fail at once (exit 4, one line naming the
endpoint and what to check), not after the store's retries; the worker windows a volume
into a store over TLS and a restore from it is exact.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.errors import ConfigError, ObjectNotFoundError, StoreError
from connectors.intercept import InterceptedVolume
from connectors.kafka import ensure_topics
from connectors.restore.catalog import Catalog
from connectors.store import ObjectStore, open_store
from infra.broker import free_port
from tests.fixtures.s3 import BUCKET
from tests.fixtures.secure_broker import KCDP
from tests.fixtures.tls import TlsFiles
from tests.store_fixture_support import STORES, expected_digests, file_sha
from tests.worker_process import WorkerProcess

#: a refused handshake must fail well inside this (a retried one takes seconds per call)
FAST = 10.0
MiB = 1 << 20


def _plain_url(url: str) -> str:
    """``url`` without its ``ca=`` (to trust the CA through ``SSL_CERT_FILE`` instead)."""
    base, query = url.split("?", 1)
    return base + "?" + "&".join(p for p in query.split("&") if not p.startswith("ca="))


def _kcdp(args: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KCDP_", "SSL_CERT"))}
    started = time.monotonic()
    run = subprocess.run(
        [KCDP, *args], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )
    return run, time.monotonic() - started


def _upload_fixture(url: str, name: str) -> None:
    """Put every object of fixture store ``name`` into the store at ``url``."""
    root = STORES / name / "store"
    store = open_store(url)
    try:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                store.put(path.relative_to(root).as_posix(), path.read_bytes())
    finally:
        store.close()


def test_store_basics_over_https_with_ca(s3_tls_url: str) -> None:
    store = open_store(s3_tls_url + "&multipart_threshold=5242880", retry=False)
    try:
        blob = random.Random(1).randbytes(6 * MiB + 123)  # above the threshold: multipart
        store.put("a/big", blob)
        store.put("a/small", b"0123456789")
        store.put("b/one", b"")
        assert store.get("a/big") == blob
        assert store.get("a/small", 3, 4) == b"3456"
        assert store.get("a/small", 8) == b"89"
        assert store.get("a/big", 5 * MiB, 10) == blob[5 * MiB : 5 * MiB + 10]
        assert store.stat("a/small").size == 10
        assert [(i.key, i.size) for i in store.list("a/")] == [
            ("a/big", len(blob)),
            ("a/small", 10),
        ]
        assert [i.key for i in store.list("", start_after="a/small")] == ["b/one"]
        store.delete("a/small")
        with pytest.raises(ObjectNotFoundError):
            store.get("a/small")
        assert [i.key for i in store.list("")] == ["a/big", "b/one"]
    finally:
        store.close()


def test_kcdp_trusts_ssl_cert_file(s3_tls_url: str, tls_files: TlsFiles, tmp_path: Path) -> None:
    """A store written over TLS, restored by ``kcdp`` trusting the CA via SSL_CERT_FILE."""
    _upload_fixture(s3_tls_url, "layout-v2")
    url = _plain_url(s3_tls_url)
    assert "ca=" not in url
    run, _ = _kcdp(["points", "la", "--json", "--store", url], SSL_CERT_FILE=str(tls_files.ca))
    assert run.returncode == 0, run.stderr
    assert orjson.loads(run.stdout)
    expected: Any = expected_digests("layout-v2")["la"]  # {"images": [...], "kept": [...]}
    images, kept = expected["images"], sorted(expected["kept"])
    for point in (kept[-1], kept[len(kept) // 2]):
        out = tmp_path / f"la-{point}.img"
        run, _ = _kcdp(
            ["restore", "la", "--to-offset", str(point), "-o", str(out), "--store", url],
            SSL_CERT_FILE=str(tls_files.ca),
        )
        assert run.returncode == 0, run.stderr
        assert file_sha(out) == images[point], f"la@{point} differs"


def _assert_refused_fast(
    run: subprocess.CompletedProcess[str], took: float, endpoint: str, *words: str
) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == 4, output[-3000:]
    assert took < FAST, f"took {took:.1f}s"
    assert "Traceback" not in output and "retrying" not in output, output[-3000:]
    [error] = [line for line in run.stderr.splitlines() if line.startswith("kcdp: error:")]
    assert endpoint in error, error
    for word in words:
        assert word in error, error


@pytest.mark.parametrize("how", ["ca", "env"])
def test_untrusted_certificate_fails_fast(
    s3_tls_url: str, s3_tls_endpoint: str, tls_files: TlsFiles, how: str
) -> None:
    wrong = str(tls_files.other_ca)
    if how == "ca":
        url, env = s3_tls_url.replace(str(tls_files.ca), wrong), {}
    else:  # SSL_CERT_FILE names the wrong CA
        url, env = _plain_url(s3_tls_url), {"SSL_CERT_FILE": wrong}
    run, took = _kcdp(["--log-level", "DEBUG", "points", "la", "--store", url], **env)
    _assert_refused_fast(run, took, s3_tls_endpoint, "not trusted", "ca=", "SSL_CERT_FILE")


def test_kcdp_check_reports_the_store_over_tls(
    s3_tls_url: str, s3_tls_endpoint: str, tls_files: TlsFiles
) -> None:
    url = _plain_url(s3_tls_url)
    check = ["check", "--part", "store", "--store", url]
    run, _ = _kcdp(check, SSL_CERT_FILE=str(tls_files.ca))
    assert run.returncode == 0 and run.stdout.startswith("store  ok"), run.stdout + run.stderr
    run, took = _kcdp(check, SSL_CERT_FILE=str(tls_files.other_ca))
    assert run.returncode == 4 and took < FAST, run.stdout + run.stderr
    [line] = run.stdout.splitlines()
    assert line.startswith("store  FAILED") and f"{s3_tls_endpoint} is not trusted" in line


def test_untrusted_certificate_is_not_retried(s3_tls_url: str, tls_files: TlsFiles) -> None:
    url = s3_tls_url.replace(str(tls_files.ca), str(tls_files.other_ca))
    store = open_store(url)  # with the retry wrapper
    started = time.monotonic()
    try:
        with pytest.raises(StoreError) as err:
            store.get("anything")
    finally:
        store.close()
    assert not err.value.retriable and err.value.exit_code == 4
    assert time.monotonic() - started < 1.0  # one handshake, no backoff
    assert "not trusted (unable to get local issuer certificate)" in str(err.value)


def test_https_to_a_plaintext_endpoint_fails_fast(s3_endpoint: str) -> None:
    url = f"s3://{BUCKET}/p?endpoint={s3_endpoint}&secure=true&region=us-east-1"
    run, took = _kcdp(["--log-level", "DEBUG", "points", "la", "--store", url])
    _assert_refused_fast(run, took, s3_endpoint, "does not answer TLS", "secure=false")


def test_a_missing_ca_file_is_a_usage_error(s3_tls_endpoint: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    url = f"s3://{BUCKET}/p?endpoint={s3_tls_endpoint}&ca={missing}"
    with pytest.raises(ConfigError, match="cannot read the CA bundle"):
        open_store(url)
    run, _ = _kcdp(["points", "la", "--store", url])
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert str(missing) in run.stderr and "ca=" in run.stderr


def test_worker_windows_over_tls_and_restore_is_exact(
    bootstrap: str, s3_tls_url: str, tls_files: TlsFiles, tmp_path: Path
) -> None:
    topic = f"s3tls-{uuid.uuid4().hex[:8]}"
    volume = "tlsvol"
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: 1, "kcdp.writes.dlq": 1})
    rng = random.Random(14)
    images: dict[int, bytes] = {}
    with InterceptedVolume(
        tmp_path / "vol.img",
        volume,
        MiB,
        bootstrap_servers=bootstrap,
        topic=topic,
        control_socket=False,
    ) as vol:
        for _ in range(20):
            offset = rng.randrange(0, MiB - 70_000)
            last = vol.write(offset, rng.randbytes(rng.randrange(1, 65_536)))
            images[last] = vol.read(0, MiB)
    worker = WorkerProcess(
        bootstrap=bootstrap,
        store_url=s3_tls_url,
        topic=topic,
        workdir=tmp_path / "worker",
        web_port=free_port(),
        extra=["--group-id", f"g-{topic}", "--window-count", "5", "--session-timeout", "6"],
    )
    newest = max(images)
    store = open_store(s3_tls_url)
    try:
        with worker:
            worker.wait_ready(timeout=90)
            deadline = time.monotonic() + 90
            while not _durable_past(store, volume, newest):
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(1)
    finally:
        store.close()
    url = _plain_url(s3_tls_url)
    for offset in [*rng.sample(sorted(images), 3), newest]:
        out = tmp_path / f"restored-{offset}.img"
        run, _ = _kcdp(
            ["restore", volume, "--to-offset", str(offset), "-o", str(out), "--store", url],
            SSL_CERT_FILE=str(tls_files.ca),
        )
        assert run.returncode == 0, run.stderr
        assert out.read_bytes() == images[offset], f"restore at {offset} differs"


def _durable_past(store: ObjectStore, volume: str, offset: int) -> bool:
    windows = Catalog(store, volume).windows
    return bool(windows) and windows[-1].last >= offset
