"""SSRF-safe fetching for URL ingest, and the same guard for webhook deliveries.

Every hop (the first URL and each redirect) is vetted the same way: the scheme must be
http or https; the host is resolved and *every* address it resolves to must be public
(not private, loopback, link-local, multicast, reserved, unspecified, shared/CGNAT, nor
an IPv6 form that embeds such an IPv4 address: mapped, 6to4, Teredo, NAT64).

DNS rebinding is defeated by pinning: the connection goes to the address that was
vetted, never to a second lookup. The pin sits in the socket layer (an httpcore network
backend), so the URL, the ``Host`` header, TLS SNI and certificate verification all keep
the real host name. When a name has several (vetted) addresses they are tried in order.
Proxies from the environment are ignored (a proxy would resolve the name itself).
:func:`fetch_url` (URL ingest) and :func:`post_url` (webhooks) share all of this.

The body is streamed and abandoned past ``max_upload_bytes``; ``url_fetch_timeout_s``
bounds the whole fetch, redirects included. A stalled read is noticed after at most one
more read timeout, so the worst case is just under twice the configured total.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import typing
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpcore
import httpx

from kenning.errors import FetchFailed, TooLarge, UrlNotAllowed
from kenning.settings import Settings

__all__ = ["Fetched", "check_url_allowed", "fetch_url", "is_public_address", "post_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = "Kenning/0.1 (+url-ingest)"
_SCHEMES = frozenset({"http", "https"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo has no timeout of its own; it runs here so a hung lookup cannot hang us.
_dns_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kenning-dns")


@dataclass(frozen=True)
class Fetched:
    """A fetched body, the URL it finally came from and its declared Content-Type."""

    data: bytes
    final_url: str
    content_type: str | None


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str
    ips: tuple[str, ...]


def is_public_address(ip: IPAddress) -> bool:
    """True when ``ip`` is globally routable unicast and embeds no non-public IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(not is_public_address(v4) for v4 in embedded):
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url_allowed(url: str, settings: Settings) -> None:
    """Raise :class:`UrlNotAllowed` unless ``url`` is http(s) to public addresses only.

    Used for URL ingest and webhook callback URLs. Unresolvable hosts raise
    :class:`FetchFailed`. With ``settings.allow_private_urls`` only the scheme is checked.
    """
    _vet(_parse(url), settings, time.monotonic() + settings.url_fetch_timeout_s)


def fetch_url(url: str, settings: Settings) -> Fetched:
    """GET ``url`` with the SSRF guard on every hop, a byte cap and a total time limit.

    Raises :class:`UrlNotAllowed`, :class:`FetchFailed` (network error, non-2xx status,
    too many redirects, timeout) or :class:`TooLarge` (code ``file_too_large``).
    """
    deadline = time.monotonic() + settings.url_fetch_timeout_s
    current = _parse(url)
    for _hop in range(settings.url_max_redirects + 1):
        result = _get(_vet(current, settings, deadline), settings, deadline)
        if isinstance(result, Fetched):
            return result
        current = result
    raise FetchFailed(
        f"more than {settings.url_max_redirects} redirects", code="too_many_redirects"
    )


def post_url(
    url: str, body: bytes, headers: Mapping[str, str], settings: Settings, *, timeout_s: float
) -> int:
    """POST ``body`` to ``url`` under the same guard as :func:`fetch_url`; returns the status.

    The host is vetted and the connection pinned to the vetted address; redirects are
    not followed (a 3xx status is returned as it is) and the response body is never read.
    ``timeout_s`` bounds the lookup and the exchange. Raises :class:`UrlNotAllowed` or
    :class:`FetchFailed` (network error, timeout).
    """
    deadline = time.monotonic() + timeout_s
    target = _vet(_parse(url), settings, deadline)
    try:
        with (
            _pinned_client(target, deadline, headers) as client,
            client.stream("POST", target.url, content=body) as response,
        ):
            return response.status_code
    except httpx.TimeoutException as exc:
        raise FetchFailed("request timed out", code="fetch_timeout") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"request failed: {exc}") from exc


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UrlNotAllowed(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in _SCHEMES:
        raise UrlNotAllowed(f"URL scheme {parsed.scheme!r} is not allowed; use http or https")
    if not parsed.raw_host:
        raise UrlNotAllowed("URL has no host")
    return parsed


def _vet(url: httpx.URL, settings: Settings, deadline: float) -> _Target:
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = _resolve(host, port, deadline)
    if not settings.allow_private_urls:
        for ip in addresses:
            if not is_public_address(ip):
                raise UrlNotAllowed(f"{host} resolves to a non-public address ({ip})")
    return _Target(url=url, host=host, ips=tuple(str(ip) for ip in addresses))


def _resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    lookup = _dns_pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=max(deadline - time.monotonic(), 0.01))
    except FutureTimeout as exc:
        raise FetchFailed(f"resolving {host} timed out", code="fetch_timeout") from exc
    except OSError as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise FetchFailed(f"{host} has no addresses")
    return addresses


def _get(target: _Target, settings: Settings, deadline: float) -> Fetched | httpx.URL:
    """One request: a :class:`Fetched` body, or the next URL when redirected."""
    limit = settings.max_upload_bytes
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    try:
        with (
            _pinned_client(target, deadline, headers) as client,
            client.stream("GET", target.url) as response,
        ):
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise FetchFailed(f"HTTP {response.status_code} redirect without Location")
                try:
                    return _parse(target.url.join(location))
                except httpx.InvalidURL as exc:
                    raise UrlNotAllowed(f"invalid redirect target: {exc}") from exc
            if not response.is_success:
                raise FetchFailed(
                    f"remote answered HTTP {response.status_code}", status=response.status_code
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
                if time.monotonic() > deadline:
                    raise FetchFailed("fetch timed out", code="fetch_timeout")
            content_type = response.headers.get("content-type")
            return Fetched(bytes(body), str(target.url), content_type)
    except httpx.TimeoutException as exc:
        raise FetchFailed("fetch timed out", code="fetch_timeout") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"fetch failed: {exc}") from exc


def _pinned_client(
    target: _Target, deadline: float, headers: Mapping[str, str]
) -> httpx.Client:
    """A client that only reaches ``target``'s vetted addresses: no proxy, no redirects."""
    return httpx.Client(
        transport=_PinnedTransport(target.host, target.ips),
        timeout=httpx.Timeout(max(deadline - time.monotonic(), 0.01)),
        follow_redirects=False,
        trust_env=False,
        headers=dict(headers),
    )


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"remote body exceeds {limit} bytes", code="file_too_large", limit=limit)


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens TCP connections to the vetted addresses only, whatever DNS says now."""

    def __init__(self, host: str, ips: tuple[str, ...]) -> None:
        self._host = host
        self._ips = ips
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host != self._host:
            raise httpcore.ConnectError(f"connection to unvetted host {host!r} refused")
        failure: Exception = httpcore.ConnectError(f"{host} has no vetted address")
        for ip in self._ips:
            try:
                return self._inner.connect_tcp(
                    ip,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _PinnedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool dialling through :class:`_PinnedBackend`."""

    def __init__(self, host: str, ips: tuple[str, ...]) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=1,
            network_backend=_PinnedBackend(host, ips),
        )
