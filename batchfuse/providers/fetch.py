"""Fetching images by URL, guarded: reference images given as URLs, and result images an
API answers with as URLs.

- http and https only, on every redirect hop (redirects are followed by hand, at most 5);
- the body is capped (``Content-Length`` checked first, then counted while streaming);
- by default no address that resolves to loopback, private, link-local (169.254.169.254),
  shared, reserved, site-local or multicast ranges, IPv4 and IPv6 forms alike — including IPv6
  forms that embed an IPv4 address (mapped ``::ffff:``, compatible ``::``, NAT64 ``64:ff9b::``,
  6to4 ``2002::``, Teredo) and IPv4 written in decimal, octal or hex (``http://2130706433/``);
  checked for IP literals before connecting and, for names, inside the resolver at connection
  time, so a name that re-resolves to a private address between check and use is still refused;
- the API's own origin (the host *and port* of ``base_url``) is allowed: a relay serving
  results from itself is fine; another port of that host is not (it may be another service);
- ``network.allow_private: true`` in the manifest lifts the address rule (tests on loopback).

A refusal by these rules is a :class:`GuardRefused`: permanent for that URL, never an outage.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from batchfuse.errors import GoneError, GuardRefused, RejectedError, TransientError, scrub, shorten

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 40 * 1024 * 1024
#: How much of a dead link's body is read for its reason ("Request has expired").
_REASON_BYTES = 2048
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
#: How a refusal for the address says what would lift it.
ALLOW_HINT = " (network.allow_private: true in the manifest allows it)"


def address_allowed(address: str) -> bool:
    """Whether ``address`` is a public unicast address, looking through IPv6 forms that embed
    an IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip.is_site_local:
            return False
        if ip in _IPV4_COMPATIBLE:
            return False  # deprecated ::a.b.c.d, and ::, ::1
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


def numeric_ipv4(host: str) -> str | None:
    """The dotted form of a host that a resolver would read as an IPv4 address although it is
    not written as one (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``, ``127.0.0.1.``)."""
    host = host.rstrip(".")
    if not host or any(c not in "0123456789abcdefxABCDEFX." for c in host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


#: What the plan takes for a URL rather than a path: anything with a scheme (only http(s) passes).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def has_scheme(src: str) -> bool:
    """Whether a reference is written as a URL (``scheme://...``) rather than a file path."""
    return _SCHEME.match(src) is not None


def is_url(src: str) -> bool:
    """Whether a reference is an http(s) URL (what the plan lets through and providers fetch)."""
    return src.lower().startswith(("http://", "https://"))


def url_problem(url: str) -> str | None:
    """Why ``url`` can never be fetched (not http(s), not a URL at all), or ``None``.

    Address rules are not checked here (they depend on ``network.allow_private`` and on what a
    name resolves to at download time); this is what a plan can refuse up front.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        return f"not a valid URL ({shorten(str(exc), 120)})"
    if parsed.scheme not in ("http", "https"):
        return f"{parsed.scheme or 'a scheme-less'}: URLs are not accepted; only http(s)"
    if not parsed.host:
        return "not a valid URL (no host)"
    return None


def origin(url: str) -> str:
    """``host:port`` of ``url`` (default port filled in), the unit the guard allows."""
    parsed = URL(url)
    return f"{(parsed.host or '').lower()}:{parsed.port}"


class PrivateAddressRefused(OSError):
    """A name resolved only to addresses the guard refuses."""


class GuardedResolver(ThreadedResolver):
    """Resolves names, keeping only public addresses (except for allowed origins)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        super().__init__()
        self.allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if _is_allowed(self.allowed, host, port):
            return results
        public = [r for r in results if address_allowed(r["host"])]
        if not public:
            raise PrivateAddressRefused(
                f"{shorten(host, 100)} resolves only to private or local addresses; refused{ALLOW_HINT}"
            )
        return public


def _is_allowed(allowed: frozenset[str], host: str, port: int | None) -> bool:
    """Whether ``host:port`` is an allowed origin (an entry without a port allows every port)."""
    host = host.lower().strip("[]")
    return f"{host}:{port}" in allowed or host in allowed


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str
    url: str


class Fetcher:
    """A session of its own for URL downloads, with the guard built into its connector."""

    def __init__(
        self,
        *,
        allow_private: bool,
        allowed_hosts: frozenset[str] = frozenset(),
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = 120.0,
    ) -> None:
        self.allow_private = allow_private
        #: ``host:port`` origins (see :func:`origin`) exempt from the address rule.
        self.allowed_hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = None if self.allow_private else GuardedResolver(self.allowed_hosts)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver, limit=32), trust_env=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check_url(self, url: str) -> URL:
        """Refuse what the rules refuse before any connection is made."""
        problem = url_problem(url)
        if problem is not None:
            raise GuardRefused(f"{shorten(url.split('?', 1)[0], 100)}: {problem}", code="bad_url")
        parsed = URL(url)
        host = (parsed.host or "").lower()
        if self.allow_private or _is_allowed(self.allowed_hosts, host, parsed.port):
            return parsed
        literal = numeric_ipv4(host)
        try:
            address = ipaddress.ip_address(literal or host.strip("[]"))
        except ValueError:
            return parsed  # a name: the resolver checks its addresses at connection time
        if not address_allowed(str(address)):
            shown = f"{shorten(host, 100)}{f' ({literal})' if literal else ''}"
            raise GuardRefused(f"{shown} is a private or local address; refused{ALLOW_HINT}", code="private_address")
        if literal is not None:
            return parsed.with_host(literal)  # what it means, so nothing else reads it differently
        return parsed

    async def get(self, url: str) -> Fetched:
        """Download ``url`` under the rules; errors are ProviderError subclasses."""
        session = self._get_session()
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            target = self.check_url(current)
            try:
                async with session.get(
                    target, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        current = urljoin(current, resp.headers["Location"])
                        continue
                    if resp.status in (403, 404, 410):
                        reason = await _reason(resp)
                        raise GoneError(
                            f"{_short(current)} is expired or gone (HTTP {resp.status}{reason})", status=resp.status
                        )
                    if resp.status >= 400:
                        raise TransientError(f"downloading {_short(current)}: HTTP {resp.status}", status=resp.status)
                    declared = resp.content_length
                    if declared is not None and declared > self.max_bytes:
                        raise RejectedError(self._too_large(current), code="too_large")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        body.extend(chunk)
                        if len(body) > self.max_bytes:
                            raise RejectedError(self._too_large(current), code="too_large")
                    return Fetched(bytes(body), resp.headers.get("Content-Type", ""), current)
            except (asyncio.TimeoutError, TimeoutError):
                raise TransientError(f"downloading {_short(current)} timed out", code="timeout") from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, PrivateAddressRefused):
                    raise GuardRefused(str(exc.os_error), code="private_address") from None
                raise TransientError(f"downloading {_short(current)}: {scrub(str(exc))}", code="connection") from None
            except aiohttp.ClientError as exc:
                raise TransientError(
                    f"downloading {_short(current)}: {scrub(str(exc)) or type(exc).__name__}", code="download"
                ) from None
        raise RejectedError(f"{_short(url)}: more than {MAX_REDIRECTS} redirects", code="redirects")

    def _too_large(self, url: str) -> str:
        return f"{_short(url)} is larger than the {self.max_bytes / 1024 / 1024:g} MB download limit; refused"


def _short(url: str) -> str:
    """A URL for messages: without its query string (which may hold tokens)."""
    return shorten(url.split("?", 1)[0], 200)


async def _reason(resp: aiohttp.ClientResponse) -> str:
    """A short reason from an error body (``Request has expired``), scrubbed, or nothing."""
    try:
        body = await resp.content.read(_REASON_BYTES)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return ""
    text = " ".join(body.decode("utf-8", "replace").split())
    try:
        data = json.loads(text)
        error = data.get("error", data) if isinstance(data, dict) else {}
        text = str(error.get("message") or "") if isinstance(error, dict) else str(error)
    except ValueError:
        if "<Message>" in text:  # S3-style signed URLs: <Error><Message>Request has expired</Message>
            text = text.split("<Message>", 1)[1].split("<", 1)[0]
        elif text.startswith("<"):
            text = ""  # an HTML page: nothing short to say
    return f": {shorten(text, 100)}" if text else ""
