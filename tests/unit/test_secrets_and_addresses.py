"""Keys are scrubbed from messages; the URL guard knows every private address form."""

from __future__ import annotations

import pytest

from batchfuse.errors import ManifestError, TransientError, register_secret, scrub
from batchfuse.providers.fetch import Fetcher, address_allowed

#: Fake keys of the real shapes, assembled here so that no key-shaped literal sits in git.
GOOGLE_SHAPED = "AIza" + "SyA-1234567890" + "abcdefghijklmnopqrstu"
OPENAI_SHAPED = "sk-" + "abcdefghijklmnop123456"


@pytest.mark.parametrize(
    "text",
    [
        f"Cannot connect: headers={{'Authorization': 'Bearer {OPENAI_SHAPED}'}}",
        f"x-goog-api-key: {GOOGLE_SHAPED} failed",
        f"GET https://host/v1?key={GOOGLE_SHAPED}&alt=json",
        "authorization=Bearer my-private-relay-key-value",
    ],
)
def test_scrub_removes_keys_and_authorization_headers(text):
    cleaned = scrub(text)
    for secret in (OPENAI_SHAPED, GOOGLE_SHAPED, "my-private-relay-key-value"):
        assert secret not in cleaned


def test_a_registered_key_is_scrubbed_wherever_it_appears():
    register_secret("plain-looking-secret-42")
    err = TransientError("server echoed plain-looking-secret-42 back")
    assert "plain-looking-secret-42" not in str(err)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True), ("2001:4860:4860::8888", True),
        ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.5.4", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
        ("::1", False), ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False), ("::", False),
    ],
)
def test_address_rules(address, allowed):
    assert address_allowed(address) is allowed


@pytest.mark.parametrize("url", ["ftp://x/a.png", "file:///etc/passwd", "http://169.254.169.254/x",
                                 "http://[::1]/x", "http://[fe80::1]/x", "http://10.0.0.1/x"])
def test_fetcher_refuses_before_connecting(url):
    from batchfuse.errors import RejectedError

    with pytest.raises(RejectedError):
        Fetcher(allow_private=False).check_url(url)


def test_the_api_host_is_allowed_even_when_private():
    assert Fetcher(allow_private=False, allowed_hosts=frozenset({"127.0.0.1"})).check_url("http://127.0.0.1:9/r.png")


def test_messages_escape_control_characters():
    assert "\x00" not in ManifestError("f.yaml", "bad", item="a\x00b").message
