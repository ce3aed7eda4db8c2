"""Keys are scrubbed from messages; the URL guard knows every private address form."""

from __future__ import annotations

import pytest

from batchfuse.errors import GuardRefused, ManifestError, TransientError, register_secret, scrub, shorten
from batchfuse.providers.fetch import Fetcher, address_allowed, origin, url_problem

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
        # IPv6 forms that embed a private IPv4 address, and the deprecated site-local range
        ("::7f00:1", False), ("::a00:1", False), ("64:ff9b::7f00:1", False), ("64:ff9b::a00:1", False),
        ("64:ff9b:1::1", False), ("2002:7f00:1::1", False), ("2002:c0a8:101::1", False), ("fec0::1", False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),
        ("64:ff9b::808:808", True), ("2002:808:808::1", True),
    ],
)
def test_address_rules(address, allowed):
    assert address_allowed(address) is allowed


@pytest.mark.parametrize("url", ["ftp://x/a.png", "file:///etc/passwd", "http://169.254.169.254/x",
                                 "http://[::1]/x", "http://[fe80::1]/x", "http://10.0.0.1/x",
                                 # IPv4 written so that a resolver reads it as 127.0.0.1
                                 "http://2130706433/x", "http://0x7f.1/x", "http://0177.0.0.1/x", "http://127.1/x",
                                 "http://127.0.0.1./x", "http://017700000001/x",
                                 # embedded forms, zone ids, userinfo, not a URL at all
                                 "http://[::7f00:1]/x", "http://[64:ff9b::7f00:1]/x", "http://[2002:7f00:1::1]/x",
                                 "http://[fec0::1]/x", "http://[fe80::1%25eth0]/x", "http://public@127.0.0.1/x",
                                 "http://127.0.0.1\\@example.com/x", "http://[::1/x"])
def test_fetcher_refuses_before_connecting(url):
    from batchfuse.errors import RejectedError

    with pytest.raises(RejectedError):
        Fetcher(allow_private=False).check_url(url)


def test_the_api_origin_is_allowed_even_when_private_but_not_its_other_ports():
    fetcher = Fetcher(allow_private=False, allowed_hosts=frozenset({origin("http://127.0.0.1:9/v1")}))
    assert fetcher.check_url("http://127.0.0.1:9/r.png")
    with pytest.raises(GuardRefused, match="network.allow_private"):
        fetcher.check_url("http://127.0.0.1:10/r.png")


def test_a_public_address_in_decimal_is_fetched_as_what_it_means():
    assert str(Fetcher(allow_private=False).check_url("http://134744072/x")) == "http://8.8.8.8/x"


@pytest.mark.parametrize(
    ("url", "problem"),
    [("http://127.0.0.1\\@example.com/x.png", "not a valid URL"), ("ftp://x/a.png", "ftp: URLs are not accepted"),
     ("http:///x.png", "no host"), ("https://example.com/a.png", None), ("http://example.com/a\\b.png", None)],
)
def test_url_problems_a_plan_can_refuse_up_front(url, problem):
    found = url_problem(url)
    assert found is None if problem is None else problem in found


KEY = "bf-unit-" + "key-" + "Zq81Xw37Lk0"


@pytest.mark.parametrize("limit", [120, 200, 300])
@pytest.mark.parametrize("shift", range(-len(KEY) - 1, 2))
def test_shorten_never_leaves_a_piece_of_the_key_at_the_cut(limit, shift):
    register_secret(KEY)
    text = "." * (limit + shift) + KEY + " tail"
    cut = shorten(text, limit)
    assert len(cut) <= limit + 1 and not leaks(cut, KEY)


@pytest.mark.parametrize(
    "text",
    [KEY[:6], "said: " + KEY[:7], KEY[-6:] + " was it", "x" + KEY[2:12] + "y", KEY[5:20]],
)
def test_scrub_removes_pieces_of_a_known_key_an_earlier_cut_left(text):
    register_secret(KEY)
    assert not leaks(scrub(text), KEY, edge=6)


def test_scrub_leaves_ordinary_text_alone():
    register_secret(KEY)
    assert scrub("HTTP 400 INVALID_ARGUMENT: bf-u is not a key") == "HTTP 400 INVALID_ARGUMENT: bf-u is not a key"


def leaks(text: str, key: str, edge: int = 8) -> bool:
    """Whether ``text`` holds the key or any ``edge``-character piece of it."""
    return any(key[i : i + edge] in text for i in range(len(key) - edge + 1))


def test_messages_escape_control_characters():
    assert "\x00" not in ManifestError("f.yaml", "bad", item="a\x00b").message
