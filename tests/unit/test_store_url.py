"""open_store(url): backend choice, URL parameters, and clear errors for bad URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.config import redact_text
from connectors.errors import ConfigError, StoreError
from connectors.store import (
    FileStore,
    MemoryStore,
    RetryingStore,
    StoreRegistry,
    open_store,
)
from connectors.store.s3 import DEFAULT_MULTIPART_THRESHOLD, S3Store, tls_context
from tests.fixtures.s3 import BUCKET
from tests.fixtures.tls import TlsFiles


def test_retry_wrapper_is_default_and_optional(tmp_path: Path) -> None:
    wrapped = open_store(f"file://{tmp_path}")
    assert isinstance(wrapped, RetryingStore)
    assert isinstance(wrapped.inner, FileStore)
    assert wrapped.url == f"file://{tmp_path}"
    assert isinstance(open_store(f"file://{tmp_path}", retry=False), FileStore)


def test_file_url_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "new" / "store"
    store = open_store(f"file://{target}", retry=False)
    assert target.is_dir()
    store.put("k", b"v")
    assert (target / "k").read_bytes() == b"v"
    monkeypatch.chdir(tmp_path)
    rel = open_store("file://rel/dir", retry=False)
    assert isinstance(rel, FileStore) and rel.root == tmp_path / "rel" / "dir"


def test_file_url_on_a_regular_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(StoreError, match="cannot create store directory") as err:
        open_store(f"file://{tmp_path / 'f'}")
    assert not err.value.retriable


def test_memory_names_share_one_store() -> None:
    registry = StoreRegistry()
    a = open_store("memory://shared", memory_stores=registry)
    b = open_store("memory://shared", memory_stores=registry, retry=False)
    other = open_store("memory://other", memory_stores=registry)
    a.put("k", b"v")
    assert b.get("k") == b"v"
    assert list(other.list()) == []
    assert isinstance(b, MemoryStore) and b.url == "memory://shared"
    # The process-wide registry behaves the same across open_store calls.
    open_store("memory://test-store-url-default").put("x", b"1")
    assert open_store("memory://test-store-url-default").get("x") == b"1"


def test_anonymous_memory_stores_are_private() -> None:
    first = open_store("memory://")
    first.put("k", b"v")
    assert list(open_store("memory://").list()) == []


def test_s3_url_parameters(s3_endpoint: str) -> None:
    url = (
        f"s3://{BUCKET}/some/prefix/?endpoint={s3_endpoint}&secure=false&region=us-east-1"
        f"&multipart_threshold={6 * 1024 * 1024}"
    )
    store = open_store(url, retry=False)
    assert isinstance(store, S3Store)
    assert store.bucket == BUCKET and store.prefix == "some/prefix/"
    assert store.endpoint == s3_endpoint and store.secure is False
    assert store.multipart_threshold == 6 * 1024 * 1024
    assert store.url == url
    store.put("k", b"v")
    assert [i.key for i in store.list()] == ["k"]
    whole = open_store(f"s3://{BUCKET}?endpoint={s3_endpoint}&secure=false", retry=False)
    assert whole.get("some/prefix/k") == b"v"


def test_s3_defaults_to_aws_over_tls(s3_endpoint: str) -> None:
    store = open_store("s3://my-bucket/p", retry=False)
    assert isinstance(store, S3Store)
    assert store.endpoint == "s3.amazonaws.com" and store.secure is True
    assert store.multipart_threshold == DEFAULT_MULTIPART_THRESHOLD


def test_s3_create_bucket_flag(s3_endpoint: str) -> None:
    url = f"s3://fresh-bucket-1/p?endpoint={s3_endpoint}&secure=false&create_bucket=true"
    open_store(url).put("k", b"v")
    again = open_store(url)  # an existing bucket is fine
    assert again.get("k") == b"v"


def test_s3_secret_is_registered_for_redaction(s3_endpoint: str) -> None:
    open_store(f"s3://{BUCKET}?endpoint={s3_endpoint}&secure=false")
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert redact_text(f"key={secret}") == "key=***"


def test_s3_without_credentials_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "MINIO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no S3 credentials found"):
        open_store("s3://bucket/p?endpoint=127.0.0.1:1&secure=false")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "invalid store URL"),
        ("/just/a/path", "invalid store URL"),
        ("ftp://host/x", "unknown store URL scheme 'ftp'"),
        ("file://", "file:// needs a directory"),
        ("file:///tmp/x?sync=1", "takes no query"),
        ("memory://a/b", "plain name"),
        ("s3://", "needs a bucket"),
        ("s3:///prefix", "needs a bucket"),
        ("s3://Bad_Bucket/p", "invalid S3 bucket name"),
        ("s3://b/p?endpoint=h:1&colour=blue", "unknown parameter 'colour'"),
        ("s3://b/p?endpoint=h:1&endpoint=h:2", "given twice"),
        ("s3://b/p?secure=maybe", "secure must be true or false"),
        ("s3://b/p?create_bucket=2", "create_bucket must be true or false"),
        ("s3://b/p?endpoint=", "endpoint must be HOST"),
        ("s3://b/p?endpoint=h/x", "endpoint must be HOST"),
        ("s3://b/p?multipart_threshold=lots", "multipart_threshold must be bytes"),
        ("s3://b/p?multipart_threshold=1024", "at least 5242880"),
        ("s3://b/a//c", "empty segment"),
        ("s3://bkt/a/../c", "invalid S3 prefix"),
        ("s3://b/p#frag", "no fragment"),
        ("s3://bkt/p?ca=", "ca must be the path of a PEM CA bundle"),
        ("s3://bkt/p?secure=false&ca=/x.pem", "ca= names a CA bundle for HTTPS, but"),
        ("s3://bkt/p?endpoint=h:1&ca=/no/such/ca.pem", "cannot read the CA bundle /no/such"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str, s3_endpoint: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        open_store(url)


def test_credentials_in_s3_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as err:
        open_store("s3://AKIAEXAMPLE:sup3rsecret@bucket/p")
    assert "sup3rsecret" not in str(err.value)
    assert "credentials must not be in an s3:// URL" in str(err.value)


def test_timeout_bounds_each_s3_request(s3_endpoint: str) -> None:
    url = f"s3://{BUCKET}/t?endpoint={s3_endpoint}&secure=false"
    store = open_store(url, retry=False, timeout=2.5)
    assert isinstance(store, S3Store)
    assert (store.connect_timeout, store.read_timeout) == (2.5, 2.5)
    with pytest.raises(ConfigError, match="timeout must be positive"):
        open_store(url, timeout=0)
    assert isinstance(open_store("memory://", timeout=1.0), RetryingStore)


def _subjects(ctx: object) -> list[str]:
    certs = ctx.get_ca_certs()  # type: ignore[attr-defined]
    return [dict(x[0] for x in cert["subject"]).get("commonName", "") for cert in certs]


def test_tls_trust_order(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """ca= alone, else SSL_CERT_FILE alone, else certifi's and the system's CAs."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.other_ca))
    assert _subjects(tls_context(str(tls_files.ca))) == ["kcdp test CA"]
    assert _subjects(tls_context()) == ["some other CA"]
    monkeypatch.delenv("SSL_CERT_FILE")
    default = tls_context()
    assert len(default.get_ca_certs()) > 50 and "kcdp test CA" not in _subjects(default)
    assert default.check_hostname and default.verify_mode.name == "CERT_REQUIRED"


def test_unusable_ca_bundles_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        tls_context(str(junk))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"cannot read the CA bundle .*\(SSL_CERT_FILE\)"):
        tls_context()
    # a plaintext store does not read it
    open_store(f"s3://{BUCKET}/p?endpoint={s3_endpoint}&secure=false", retry=False).close()
