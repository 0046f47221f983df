"""https:// endpoints: TLS with a given root certificate, against a standalone eye-ingest serving
TLS in front of the fixture's database (its validator and writer store the events)."""

import shutil
import subprocess

import pytest

from eye_client import EyeClient
from helpers import start_ingest


@pytest.fixture(scope="module")
def tls_ingest(eye_server, tmp_path_factory):
    openssl = shutil.which("openssl")
    assert openssl, "the TLS test needs the openssl command to make a certificate"
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    service, port = start_ingest(
        {
            "DATABASE_URL": eye_server.database_url,
            "EYE__TLS__CERT_FILE": str(cert),
            "EYE__TLS__KEY_FILE": str(key),
        },
        eye_server.workdir,
    )
    try:
        yield port, cert
    finally:
        service.stop()


def test_https_endpoint_with_a_root_certificate(eye_server, tls_ingest, marker):
    port, cert = tls_ingest
    with EyeClient(f"https://localhost:{port}", eye_server.api_key, root_certificates=cert) as client:
        for i in range(5):
            client.track("test", "tls", {"m": marker, "i": i})
        assert client.flush(30)
        stats = client.stats()
    assert stats["accepted"] == 5, stats
    # The same as bytes.
    with EyeClient(
        f"https://127.0.0.1:{port}", eye_server.api_key, root_certificates=cert.read_bytes()
    ) as client:
        client.track("test", "tls", {"m": marker, "i": 5})
        assert client.flush(30)
        assert client.stats()["accepted"] == 1
    eye_server.wait_stored(f"data->>'m' = '{marker}'", 6)


def test_https_without_trusting_the_certificate_fails_rather_than_sending(eye_server, tls_ingest):
    port, _ = tls_ingest
    failed = []
    with EyeClient(
        f"https://localhost:{port}",
        eye_server.api_key,
        retry_budget=1.0,
        backoff_base=0.05,
        on_failed=lambda event_id, reason: failed.append(reason),
    ) as client:
        client.track("test", "tls-untrusted", {})
        assert client.flush(15)
        stats = client.stats()
    assert stats["failed"] == 1 and stats["accepted"] == 0, stats
    assert failed[0].startswith("unavailable: "), failed


def test_plaintext_client_against_a_tls_server_fails(eye_server, tls_ingest):
    port, _ = tls_ingest
    with EyeClient(f"http://127.0.0.1:{port}", eye_server.api_key, retry_budget=1.0, backoff_base=0.05) as client:
        client.track("test", "tls-plaintext", {})
        assert client.flush(15)
        stats = client.stats()
    assert stats["failed"] == 1 and stats["accepted"] == 0, stats
