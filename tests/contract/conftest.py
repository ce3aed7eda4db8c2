"""The official SDKs (google-genai, openai; test extra) pointed at the mock on 127.0.0.1.

Neither SDK may leave loopback: proxy settings and SDK environment variables are cleared, both
clients are built with retries off, and every socket connect or name lookup to anything but
127.0.0.1 / ::1 / localhost fails the test.
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from batchfuse.mock import MockConfig, MockServerThread
from tests.conftest import TEST_KEY

genai = pytest.importorskip("google.genai")
openai = pytest.importorskip("openai")
from google.genai import types  # noqa: E402

#: 1K images come back 16 px wide, 4K 64 px: real PNGs, fast tests.
SCALE = 1 / 64
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_ENV_PREFIXES = ("GOOGLE_", "GEMINI_", "OPENAI_")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """SDK environment and proxies cleared; a connect or lookup off loopback raises."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in _PROXY_VARS:
            monkeypatch.delenv(name)
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise OSError(f"test guard: connection to {address[0]} refused (loopback only)")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK and host is not None:
            raise OSError(f"test guard: name lookup of {host!r} refused (loopback only)")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def mock() -> Iterator[MockServerThread]:
    """The mock with the test key as its only key, tiny images, bodies recorded."""
    with MockServerThread(MockConfig(api_key=TEST_KEY, image_scale=SCALE, record_bodies=True)) as srv:
        yield srv


def genai_client(srv: MockServerThread, key: str = TEST_KEY, **http: Any) -> Any:
    """google-genai as its docs show it, with the base URL on the mock and no retries."""
    options = types.HttpOptions(
        base_url=srv.url, retry_options=types.HttpRetryOptions(attempts=1), timeout=30_000, **http
    )
    return genai.Client(api_key=key, http_options=options)


def openai_client(srv: MockServerThread, key: str = TEST_KEY) -> Any:
    return openai.OpenAI(api_key=key, base_url=f"{srv.url}/v1", max_retries=0, timeout=30)


def image_bytes(fmt: str = "PNG", colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buf, fmt)
    return buf.getvalue()
