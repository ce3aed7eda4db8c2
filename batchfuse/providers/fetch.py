"""Fetching images by URL, guarded: reference images given as URLs, and result images an
API answers with as URLs.

- http and https only, on every redirect hop (redirects are followed by hand, at most 5);
- the body is capped (``Content-Length`` checked first, then counted while streaming);
- by default no address that resolves to loopback, private, link-local (169.254.169.254),
  shared, reserved or multicast ranges, IPv4 and IPv6 forms alike — checked for IP literals
  before connecting and, for names, inside the resolver at connection time, so a name that
  re-resolves to a private address between check and use is still refused;
- the API's own host (``base_url``) is allowed: a relay serving results from itself is fine;
- ``network.allow_private: true`` in the manifest lifts the address rule (tests on loopback).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from batchfuse.errors import RejectedError, TransientError, scrub

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 40 * 1024 * 1024


class GoneError(RejectedError):
    """The URL no longer serves the file (404/410): an expired result link."""


def address_allowed(address: str) -> bool:
    """Whether ``address`` is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PrivateAddressRefused(OSError):
    """A name resolved only to addresses the guard refuses."""


class GuardedResolver(ThreadedResolver):
    """Resolves names, keeping only public addresses (except for allowed hosts)."""

    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        super().__init__()
        self.allowed_hosts = allowed_hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if host.lower() in self.allowed_hosts:
            return results
        public = [r for r in results if address_allowed(r["host"])]
        if not public:
            raise PrivateAddressRefused(f"{host} resolves only to private or local addresses; refused")
        return public


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
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
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
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise RejectedError(f"only http(s) URLs can be fetched, not {scrub(url)[:100]}", code="bad_url")
        host = parsed.host.lower()
        if self.allow_private or host in self.allowed_hosts:
            return parsed
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return parsed  # a name: the resolver checks its addresses at connection time
        if not address_allowed(str(literal)):
            raise RejectedError(f"{host} is a private or local address; refused", code="private_address")
        return parsed

    async def get(self, url: str) -> Fetched:
        """Download ``url`` under the rules; errors are ProviderError subclasses."""
        session = self._get_session()
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            self.check_url(current)
            try:
                async with session.get(
                    current, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        current = urljoin(current, resp.headers["Location"])
                        continue
                    if resp.status in (404, 410):
                        raise GoneError(f"{_short(current)} is gone (HTTP {resp.status})", status=resp.status)
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
                    raise RejectedError(str(exc.os_error), code="private_address") from None
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
    return scrub(url.split("?", 1)[0])[:200]
