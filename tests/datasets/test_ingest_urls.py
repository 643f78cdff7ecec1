"""Imports from URLs against a real HTTP server on loopback (http.server in a thread)."""
from __future__ import annotations

import socket

import pytest

from datasets.models import Image
from datasets.services import ingest_fetch
from datasets.services.ingest import images_import, report_message
from datasets.services.ingest_sources import source_urls
from tests.datasets.conftest import answer_slowly, entry_for, image_bytes, jpeg_bytes, stream_forever
from tests.services import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_matrix]


def run_urls(project, urls):
    return images_import(project=project, source=source_urls(urls))


def failure(result, url) -> str:
    entry = entry_for(result.report, url)
    assert entry["status"] == "failed", entry
    message = report_message(entry)
    assert message.startswith(f"{url}: ")
    return message


def imported(result, url) -> Image:
    entry = entry_for(result.report, url)
    assert entry["status"] == "imported", entry
    return Image.objects.get(pk=entry["image"])


@pytest.fixture
def loopback_counts_as_public(monkeypatch):
    """Our test server stands in for a public host: only 127.0.0.1 is waved through, every other
    address is judged by the real rules (so a redirect to 169.254.169.254 is still refused)."""
    real = ingest_fetch._address_kind

    def kind(ip):
        return None if str(ip) == "127.0.0.1" else real(ip)

    monkeypatch.setattr(ingest_fetch, "_address_kind", kind)


def test_url_import_from_a_real_server(project, http_server, settings):
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    data = jpeg_bytes(seed=1)
    http_server.routes["/photos/cat%20one.jpg"] = (200, {"Content-Type": "image/jpeg"}, data)
    http_server.routes["/photos/dog.webp"] = (200, {"Content-Type": "image/webp"}, image_bytes("WEBP", seed=2))
    http_server.routes["/notes.jpg"] = (200, {"Content-Type": "image/jpeg"}, b"<html>not a photo</html>")
    good, webp, bad, missing = (http_server.url(p) for p in ("/photos/cat%20one.jpg", "/photos/dog.webp", "/notes.jpg", "/gone.jpg"))
    result = run_urls(project, [good, webp, bad, missing])
    image = imported(result, good)
    assert (image.original_name, image.source_url, image.format) == ("cat one.jpg", good, "JPEG")
    with image.file.open("rb") as f:
        assert f.read() == data
    assert imported(result, webp).format == "WEBP"
    assert failure(result, bad) == f"{bad}: not an image (cannot identify image file)"
    assert failure(result, missing) == f"{missing}: the server answered HTTP 404 Not Found"
    assert (result.imported, result.failed) == (2, 2)


def test_a_url_nobody_answers_is_reported(project, http_server, settings):
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    port = free_port()  # bound and released: nothing listens there
    dead = f"http://127.0.0.1:{port}/photo.jpg"
    http_server.routes["/ok.jpg"] = (200, {}, jpeg_bytes(seed=3))
    result = run_urls(project, [dead, http_server.url("/ok.jpg")])
    assert failure(result, dead) == f"{dead}: the server at 127.0.0.1:{port} refused the connection"
    imported(result, http_server.url("/ok.jpg"))


def test_loopback_is_refused_by_default(project, http_server):
    http_server.routes["/ok.jpg"] = (200, {}, jpeg_bytes(seed=4))
    url = http_server.url("/ok.jpg")
    result = run_urls(project, [url])
    assert failure(result, url) == (
        f"{url}: refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address (private addresses are not allowed)"
    )
    assert http_server.requests == []  # never connected
    assert Image.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
        ("http://10.1.2.3/a.jpg", "a private address"),
        ("http://[::1]:8080/a.jpg", "a loopback address"),
        ("http://[::ffff:192.168.0.1]/a.jpg", "a private address"),
        ("http://0.0.0.0/a.jpg", "an unspecified address"),
        ("http://224.0.0.1/a.jpg", "a multicast address"),
        ("http://localhost/a.jpg", "a loopback address"),
    ],
)
def test_non_public_addresses_are_refused(project, url, reason):
    result = run_urls(project, [url])
    assert reason in failure(result, url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http and https URLs are allowed, not file"),
        ("ftp://example.org/a.jpg", "only http and https URLs are allowed, not ftp"),
        ("http://user:secret@example.org/a.jpg", "URLs with a user name or password are not allowed"),
        ("http://no-such-host.invalid/a.jpg", "the host no-such-host.invalid could not be resolved"),
    ],
)
def test_bad_urls_are_refused(project, url, reason):
    result = run_urls(project, [url])
    assert reason in failure(result, url)


def test_a_redirect_to_a_private_address_is_refused(project, http_server, loopback_counts_as_public):
    http_server.routes["/to-metadata"] = (302, {"Location": "http://169.254.169.254/latest/meta-data/iam"}, b"")
    http_server.routes["/to-private"] = (301, {"Location": "http://192.168.1.10/a.jpg"}, b"")
    http_server.routes["/to-good"] = (302, {"Location": "/real.jpg"}, b"")
    http_server.routes["/real.jpg"] = (200, {}, jpeg_bytes(seed=5))
    to_metadata, to_private, to_good = (http_server.url(p) for p in ("/to-metadata", "/to-private", "/to-good"))
    result = run_urls(project, [to_metadata, to_private, to_good])
    assert failure(result, to_metadata) == (
        f"{to_metadata}: refused: 169.254.169.254 resolves to 169.254.169.254, the cloud metadata address "
        "(private addresses are not allowed)"
    )
    assert "192.168.1.10" in failure(result, to_private) and "a private address" in failure(result, to_private)
    # A redirect to a public place is followed, checked again, and imported.
    imported(result, to_good)
    assert [path for path, _ in http_server.requests] == ["/to-metadata", "/to-private", "/to-good", "/real.jpg"]


def test_too_many_redirects(project, http_server, settings):
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    for i in range(10):
        http_server.routes[f"/r{i}"] = (302, {"Location": f"/r{i + 1}"}, b"")
    url = http_server.url("/r0")
    assert failure(run_urls(project, [url]), url) == f"{url}: more than 5 redirects"


def test_the_connection_goes_to_the_checked_address(project, http_server, settings, monkeypatch):
    """The name is resolved once, checked, and the request goes to that address with the name
    in the Host header: a second lookup (DNS rebinding) never happens."""
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        if host == "images.example.test":
            return real_getaddrinfo("127.0.0.1", *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    http_server.routes["/a.jpg"] = (200, {}, jpeg_bytes(seed=6))
    url = f"http://images.example.test:{http_server.port}/a.jpg"
    imported(run_urls(project, [url]), url)
    # One lookup of the name; urllib3 then connects to the IP literal it was given.
    assert lookups.count("images.example.test") == 1
    assert set(lookups) <= {"images.example.test", "127.0.0.1"}
    assert http_server.requests[0][1]["Host"] == f"images.example.test:{http_server.port}"


def test_a_body_over_the_size_limit_is_cut_off(project, http_server, settings):
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    settings.INGEST_MAX_FILE_BYTES = 100_000
    http_server.routes["/endless.jpg"] = (200, {}, stream_forever)
    http_server.routes["/declared.jpg"] = (200, {}, b"x" * 200_000)
    http_server.routes["/ok.jpg"] = (200, {}, jpeg_bytes(seed=7))
    endless, declared, ok = (http_server.url(p) for p in ("/endless.jpg", "/declared.jpg", "/ok.jpg"))
    result = run_urls(project, [endless, declared, ok])
    assert failure(result, endless) == f"{endless}: more than the limit of 100,000 bytes"
    assert failure(result, declared) == f"{declared}: 200,000 bytes is over the limit of 100,000 bytes"
    imported(result, ok)


def test_a_slow_server_times_out(project, http_server, settings):
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    settings.INGEST_URL_TIMEOUT = 0.5
    http_server.routes["/slow.jpg"] = (200, {}, answer_slowly)
    http_server.routes["/ok.jpg"] = (200, {}, jpeg_bytes(seed=8))
    slow, ok = http_server.url("/slow.jpg"), http_server.url("/ok.jpg")
    result = run_urls(project, [slow, ok])
    assert failure(result, slow) == f"{slow}: no answer within 0.5 seconds"
    imported(result, ok)


@pytest.fixture
def https_server(tmp_path, http_server):
    """The same server behind TLS with a self-signed certificate for the name 'localhost'."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    http_server.httpd.socket = context.wrap_socket(http_server.httpd.socket, server_side=True)
    http_server.cert_path = cert_path
    return http_server


def test_https_checks_the_certificate_against_the_name(project, https_server, settings, monkeypatch):
    """The connection goes to the checked IP, yet TLS still verifies the certificate for the host
    name (SNI and hostname check use the name, not the address)."""
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    https_server.routes["/a.jpg"] = (200, {}, jpeg_bytes(seed=9))
    url = f"https://localhost:{https_server.port}/a.jpg"
    # Not trusted: refused with the reason.
    message = failure(run_urls(project, [url]), url)
    assert message.startswith(f"{url}: the TLS connection failed") and "CERTIFICATE_VERIFY_FAILED" in message
    # Trusted (OpenSSL reads SSL_CERT_FILE): imported.
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.cert_path))
    imported(run_urls(project, [url]), url)
