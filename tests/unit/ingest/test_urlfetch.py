"""SSRF guard and fetch limits, against real local HTTP(S) servers.

Public names are simulated honestly: a stub resolver answers for ``*.test`` names with
a public address (93.184.216.34), and the socket layer below Kenning's pinned backend
routes that one address to the local test server, the way NAT would. Everything above
the socket (vetting, pinning, Host header, TLS SNI and certificate checks, redirects,
streaming limits) is the production code path.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from kenning.errors import FetchFailed, TooLarge, UrlNotAllowed
from kenning.ingest.urlfetch import Fetched, check_url_allowed, fetch_url, is_public_address
from kenning.settings import Settings
from tests.fixtures.net import PUBLIC_IP, Net, fake_network, serve_http

BODY = b"\x89PNG\r\n\x1a\n pretend image bytes"


@dataclass
class Server:
    port: int
    hits: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state: Server = self.server.state
        state.hits.append(self.path)
        state.hosts.append(self.headers.get("Host", ""))
        port = state.port
        routes: dict[str, Callable[[], None]] = {
            "/ok": lambda: self._send(
                200, {"Content-Type": "image/png", "Content-Length": str(len(BODY))}, BODY
            ),
            "/redirect-to-ok": lambda: self._send(302, {"Location": "/ok"}),
            "/redirect-loopback": lambda: self._send(
                302, {"Location": f"http://127.0.0.1:{port}/ok"}
            ),
            "/redirect-file": lambda: self._send(302, {"Location": "file:///etc/passwd"}),
            "/loop": lambda: self._send(302, {"Location": "/loop"}),
            "/missing": lambda: self._send(404, {"Content-Length": "0"}),
            "/declared-huge": lambda: self._send(200, {"Content-Length": str(10**12)}),
            "/endless": self._endless,
            "/trickle": self._trickle,
        }
        routes.get(self.path, lambda: self._send(404, {}))()

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        chunk = b"\xff" * 65_536
        deadline = time.monotonic() + 30  # the test's own safety net
        try:
            while time.monotonic() < deadline:
                self.wfile.write(chunk)
        except OSError:
            pass  # the client hung up, as it should

    def _trickle(self) -> None:
        self.send_response(200)
        self.end_headers()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    def state(port: int) -> Server:
        server = Server(port=port)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: server.sni.append(name)
        return server

    yield from serve_http(Handler, state, tls)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    return fake_network(monkeypatch)


# ------------------------------------------------------------------ refused targets


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://localhost:8000/admin",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://127.1/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_",
        "ftp://example.com/file",
        "javascript:alert(1)",
        "http:///no-host",
    ],
)
def test_refused_before_any_connection(url: str, net: Net) -> None:
    with pytest.raises(UrlNotAllowed) as err:
        check_url_allowed(url, Settings())
    assert err.value.code == "url_not_allowed"
    with pytest.raises(UrlNotAllowed):
        fetch_url(url, Settings())
    assert net.connects == []


def test_refused_when_any_resolved_address_is_private(net: Net) -> None:
    net.answers["mixed.test"] = [[PUBLIC_IP, "10.0.0.1"]]
    with pytest.raises(UrlNotAllowed, match=r"10\.0\.0\.1"):
        fetch_url("http://mixed.test/", Settings())
    assert net.connects == []


def test_public_name_passes_the_check(net: Net) -> None:
    net.answers["public.test"] = [[PUBLIC_IP]]
    check_url_allowed("https://public.test/hook", Settings())  # does not raise
    assert net.lookups == ["public.test"]


def test_unresolvable_host_fails_to_fetch(net: Net) -> None:
    with pytest.raises(FetchFailed, match="cannot resolve"):
        check_url_allowed("http://nowhere.test/", Settings())


# ------------------------------------------------------------------ hops and pinning


def test_redirect_from_public_server_to_loopback_is_refused(server: Server, net: Net) -> None:
    net.answers["public.test"] = [[PUBLIC_IP]]
    with pytest.raises(UrlNotAllowed, match=r"127\.0\.0\.1"):
        fetch_url(f"http://public.test:{server.port}/redirect-loopback", Settings())
    assert server.hits == ["/redirect-loopback"]  # the loopback hop never happened
    assert net.connects == [(PUBLIC_IP, server.port)]


def test_redirect_to_a_non_http_scheme_is_refused(server: Server, net: Net) -> None:
    net.answers["public.test"] = [[PUBLIC_IP]]
    with pytest.raises(UrlNotAllowed, match="file"):
        fetch_url(f"http://public.test:{server.port}/redirect-file", Settings())


def test_public_redirect_is_followed_and_rechecked(server: Server, net: Net) -> None:
    net.answers["public.test"] = [[PUBLIC_IP]]
    got = fetch_url(f"http://public.test:{server.port}/redirect-to-ok", Settings())
    assert got == Fetched(BODY, f"http://public.test:{server.port}/ok", "image/png")
    assert server.hits == ["/redirect-to-ok", "/ok"]
    assert server.hosts == [f"public.test:{server.port}"] * 2  # Host header kept
    assert net.lookups == ["public.test", "public.test"]  # vetted on every hop


def test_dns_rebinding_is_defeated_by_pinning(server: Server, net: Net) -> None:
    # First answer public, every later answer loopback: a classic rebinding attack.
    net.answers["rebind.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    got = fetch_url(f"http://rebind.test:{server.port}/ok", Settings())
    assert got.data == BODY
    assert net.lookups == ["rebind.test"]  # resolved once, then connected to that address
    assert net.connects == [(PUBLIC_IP, server.port)]


# ------------------------------------------------------------------ TLS keeps the name


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=public.test",
            "-addext",
            "subjectAltName=DNS:public.test",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for state in _serve(ctx):
        yield state, cert


def test_https_keeps_sni_and_verifies_the_name_while_pinned(
    tls_server: tuple[Server, Path], net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = tls_server
    net.answers["public.test"] = [[PUBLIC_IP]]
    # Trust the test certificate (and nothing else); verification stays on.
    monkeypatch.setattr(
        httpx, "create_ssl_context", lambda **kw: ssl.create_default_context(cafile=str(cert))
    )
    got = fetch_url(f"https://public.test:{server.port}/ok", Settings())
    assert got.data == BODY
    assert server.sni == ["public.test"]
    assert net.connects == [(PUBLIC_IP, server.port)]


def test_https_with_an_untrusted_certificate_fails(
    tls_server: tuple[Server, Path], net: Net
) -> None:
    server, _ = tls_server
    net.answers["public.test"] = [[PUBLIC_IP]]
    with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_url(f"https://public.test:{server.port}/ok", Settings())
    assert server.sni == ["public.test"]


# ------------------------------------------------------------------ private allowed (tests)


@pytest.fixture
def private_ok() -> Settings:
    return Settings(allow_private_urls=True, url_fetch_timeout_s=10.0)


def test_success_with_private_urls_allowed(server: Server, private_ok: Settings) -> None:
    got = fetch_url(f"http://127.0.0.1:{server.port}/ok", private_ok)
    assert got == Fetched(BODY, f"http://127.0.0.1:{server.port}/ok", "image/png")


def test_every_vetted_address_is_tried_in_order(
    server: Server, net: Net, private_ok: Settings
) -> None:
    # The server listens on 127.0.0.1 only: the first address refuses, the second answers.
    net.answers["dual.test"] = [["::1", "127.0.0.1"]]
    got = fetch_url(f"http://dual.test:{server.port}/ok", private_ok)
    assert got.data == BODY
    assert net.connects == [("::1", server.port), ("127.0.0.1", server.port)]
    assert net.lookups == ["dual.test"]


def test_schemes_are_checked_even_when_private_urls_are_allowed(private_ok: Settings) -> None:
    with pytest.raises(UrlNotAllowed):
        fetch_url("file:///etc/passwd", private_ok)


def test_redirect_limit(server: Server) -> None:
    settings = Settings(allow_private_urls=True, url_max_redirects=3)
    with pytest.raises(FetchFailed) as err:
        fetch_url(f"http://127.0.0.1:{server.port}/loop", settings)
    assert err.value.code == "too_many_redirects"
    assert len(server.hits) == 4  # the first request and 3 redirects


def test_non_2xx_fails(server: Server, private_ok: Settings) -> None:
    with pytest.raises(FetchFailed) as err:
        fetch_url(f"http://127.0.0.1:{server.port}/missing", private_ok)
    assert err.value.details == {"status": 404}
    assert err.value.code == "fetch_failed"


def test_connection_refused_fails(private_ok: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: nothing answers
        with pytest.raises(FetchFailed):
            fetch_url(f"http://127.0.0.1:{port}/", private_ok)


@pytest.mark.timeout(30)
def test_endless_stream_stops_at_the_byte_limit(server: Server) -> None:
    settings = Settings(allow_private_urls=True, max_upload_bytes=256 * 1024)
    started = time.monotonic()
    with pytest.raises(TooLarge) as err:
        fetch_url(f"http://127.0.0.1:{server.port}/endless", settings)
    assert err.value.code == "file_too_large"
    assert time.monotonic() - started < 5


def test_declared_length_over_the_limit_stops_at_once(server: Server) -> None:
    settings = Settings(allow_private_urls=True, max_upload_bytes=1024)
    with pytest.raises(TooLarge):
        fetch_url(f"http://127.0.0.1:{server.port}/declared-huge", settings)


@pytest.mark.timeout(30)
def test_trickling_stream_hits_the_total_timeout(server: Server) -> None:
    settings = Settings(allow_private_urls=True, url_fetch_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(FetchFailed) as err:
        fetch_url(f"http://127.0.0.1:{server.port}/trickle", settings)
    assert err.value.code == "fetch_timeout"
    assert time.monotonic() - started < 2.5


# ------------------------------------------------------------------ address classes


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("239.1.1.1", False),
        ("240.0.0.1", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("2002:a00:1::", False),  # 6to4 wrapping 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 wrapping 169.254.169.254
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
