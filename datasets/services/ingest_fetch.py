"""Downloading one image by URL without letting the URL reach inside our network.

The rules (docs/ingestion.md): only ``http`` and ``https``; the host is resolved here and every
address it resolves to must be a public one (no loopback, private, link-local such as the cloud
metadata address 169.254.169.254, multicast, reserved or unspecified address) unless
``settings.INGEST_ALLOW_PRIVATE_URLS`` is on; the connection goes to the address that was checked,
not to a second lookup (so DNS rebinding cannot swap it); redirects are followed by hand, at most
``MAX_REDIRECTS``, and each hop is checked again; the body is streamed and cut at the size limit;
the whole download has a deadline of ``settings.INGEST_URL_TIMEOUT`` seconds.

Every refusal raises ``FetchError`` with a message in plain words; the caller prefixes the URL.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import urllib3
from django.conf import settings

MAX_REDIRECTS = 5
CHUNK = 64 * 1024
USER_AGENT = "Annotator-ingest/1"


class FetchError(Exception):
    """A URL that cannot or may not be downloaded; the message says why."""


@dataclass(frozen=True)
class Fetched:
    final_url: str
    content_type: str
    size: int


def _address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip == ipaddress.ip_address("169.254.169.254"):
        return "the cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def resolve_public(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` and return the addresses to connect to, refusing non-public ones.

    Every address the name resolves to is checked, so a name with one public and one private
    address is refused as a whole.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"the host {host} could not be resolved ({exc.strerror or exc})") from None
    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        address = sockaddr[0].split("%", 1)[0]
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"the host {host} has no address")
    if not allow_private:
        for address in addresses:
            kind = _address_kind(ipaddress.ip_address(address))
            if kind:
                raise FetchError(
                    f"refused: {host} resolves to {address}, {kind} (private addresses are not allowed)"
                )
    return addresses


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are allowed, not {scheme or 'a URL without a scheme'}")
    if not parts.hostname:
        raise FetchError("the URL has no host")
    if parts.username or parts.password:
        raise FetchError("URLs with a user name or password are not allowed")
    port = port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, parts.hostname, port, path


def fetch_to_file(
    url: str, out: BinaryIO, *, max_bytes: int, timeout: float | None = None, allow_private: bool | None = None
) -> Fetched:
    """Download ``url`` into ``out``, following checked redirects; raise FetchError on refusal."""
    timeout = settings.INGEST_URL_TIMEOUT if timeout is None else timeout
    allow_private = settings.INGEST_ALLOW_PRIVATE_URLS if allow_private is None else allow_private
    deadline = time.monotonic() + timeout
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        scheme, host, port, path = _split(current)
        addresses = resolve_public(host, port, allow_private=allow_private)
        host_header = host if port in (80, 443) else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" if port in (80, 443) else f"[{host}]:{port}"
        headers = {"Host": host_header, "User-Agent": USER_AGENT, "Accept": "image/*"}
        # Connect to the addresses just checked, in order, never to a fresh lookup of the name.
        for index, address in enumerate(addresses):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"no answer within {timeout:g} seconds")
            try:
                pool, response = _request(scheme, address, host, port, path, headers, remaining, timeout)
                break
            except _Unreachable as exc:
                if index == len(addresses) - 1:
                    raise FetchError(str(exc)) from None
        with _closing(pool):
            try:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchError(f"a redirect ({response.status}) without a Location header")
                    current = urljoin(current, location)
                    continue
                if response.status != 200:
                    raise FetchError(f"the server answered HTTP {response.status} {response.reason or ''}".rstrip())
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(
                        f"{int(declared):,} bytes is over the limit of {max_bytes:,} bytes"
                    )
                size = 0
                try:
                    for chunk in _chunks_until(response, deadline, timeout):
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchError(f"more than the limit of {max_bytes:,} bytes")
                        out.write(chunk)
                except urllib3.exceptions.TimeoutError:
                    raise FetchError(f"the download took longer than {timeout:g} seconds") from None
                except urllib3.exceptions.ProtocolError as exc:
                    raise FetchError(f"the download broke off ({exc})") from None
                return Fetched(final_url=current, content_type=response.headers.get("Content-Type", ""), size=size)
            finally:
                response.release_conn()
                response.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _chunks_until(response, deadline: float, timeout: float):
    """The body as it arrives, cut at ``deadline``: each read takes what one receive brings
    (``read1``) and may wait only for the time left, so a server that drips a byte at a time
    cannot stretch the download past the deadline."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"the download took longer than {timeout:g} seconds")
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.read1(CHUNK)
        if not chunk:
            return
        yield chunk


class _Unreachable(Exception):
    """This address did not take the connection; another address of the host may."""


class _closing:
    def __init__(self, pool) -> None:
        self.pool = pool

    def __enter__(self):
        return self.pool

    def __exit__(self, *exc) -> None:
        self.pool.close()


def _request(scheme: str, address: str, host: str, port: int, path: str, headers: dict, remaining: float, timeout: float):
    """One GET to ``address``, with the name in Host, SNI and the certificate check."""
    t = urllib3.Timeout(connect=remaining, read=remaining)
    if scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address, port, timeout=t, retries=False, maxsize=1,
            server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=t, retries=False, maxsize=1)
    try:
        response = pool.urlopen(
            "GET", path, headers=headers, redirect=False, preload_content=False, assert_same_host=False,
        )
    except urllib3.exceptions.NewConnectionError as exc:  # a subclass of the timeout error
        pool.close()
        if isinstance(exc.__cause__, ConnectionRefusedError) or "refused" in str(exc):
            raise _Unreachable(f"the server at {host}:{port} refused the connection") from None
        raise _Unreachable(f"the server at {host}:{port} could not be reached ({exc})") from None
    except urllib3.exceptions.TimeoutError:
        pool.close()
        raise FetchError(f"no answer within {timeout:g} seconds") from None
    except urllib3.exceptions.SSLError as exc:
        pool.close()
        raise FetchError(f"the TLS connection failed ({exc})") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        pool.close()
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"the server at {host}:{port} could not be reached ({reason})") from None
    return pool, response
