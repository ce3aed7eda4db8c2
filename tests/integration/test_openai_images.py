"""The OpenAI-compatible images provider against the mock, and URL images for both providers."""

from __future__ import annotations

import base64
import json
import time

import pytest
from PIL import Image

from batchfuse.errors import FatalError, RejectedError, TransientError
from batchfuse.providers.http import HttpReply
from batchfuse.providers.openai_images import classify_error
from tests.conftest import cli, generation_requests, manifest


def openai_manifest(base_url: str, items: list[dict], **defaults) -> dict:
    data = manifest(base_url, items, network={"allow_private": True})
    data["defaults"] = {"size": "1:1", "response_format": "url", "n": 1, **defaults}
    data["provider"] = {"kind": "openai_images", "base_url": base_url, "model": "gemini-3-pro-image-preview-2k",
                        "api_key_env": "RELAY_KEY"}
    return data


@pytest.fixture
def relay(job, mock, monkeypatch):
    monkeypatch.setenv("RELAY_KEY", "relay-test-key-123")
    mock.configure(static_dir=str(job.root / "images"))
    return mock


def downloads(server) -> list[dict]:
    return [r for r in server.requests() if r["api"] == "download"]


def test_text_to_image_request_is_exactly_the_spec_shape(job, relay):
    job.write(openai_manifest(relay.url, [{"id": "poster", "prompt": "请为黑客帝国设计一张3D海报"}], size="16:9"))
    before = time.time()
    result = cli("run", job.manifest)
    after = time.time()
    assert result.exit_code == 0, result.stderr
    (req,) = generation_requests(relay)
    assert req["path"] == "/v1/images/generations"
    assert req["body"] == {"model": "gemini-3-pro-image-preview-2k", "prompt": "请为黑客帝国设计一张3D海报",
                           "size": "16:9", "response_format": "url", "n": 1}
    ((url, at),) = job.sql("SELECT source_url, source_at FROM outputs")
    assert url.startswith(relay.url + "/results/") and int(before) <= at <= after  # the reply's "created", whole seconds
    assert len(downloads(relay)) == 1
    with Image.open(job.out / "poster.png") as im:
        assert im.text["batchfuse:item"] == "poster"


def test_image_to_image_sends_a_local_file_as_a_data_url(job, relay):
    job.write(openai_manifest(relay.url, [{"id": "oil", "prompt": "将这张图转换为油画风格",
                                           "images": ["images/calculator.jpg"]}], response_format="b64_json"))
    assert cli("run", job.manifest).exit_code == 0
    (req,) = generation_requests(relay)
    jpeg = base64.b64encode((job.root / "images/calculator.jpg").read_bytes()).decode()
    assert req["body"] == {"model": "gemini-3-pro-image-preview-2k", "prompt": "将这张图转换为油画风格",
                           "size": "1:1", "response_format": "b64_json", "n": 1,
                           "image": f"data:image/jpeg;base64,{jpeg}"}
    assert downloads(relay) == []  # b64_json is decoded, nothing to fetch
    assert job.sql("SELECT source_url FROM outputs") == [(None,)]


def test_multi_image_fusion_passes_urls_through_unchanged(job, relay):
    a, b = f"{relay.url}/files/scene.png", f"{relay.url}/files/logo.png"
    job.write(openai_manifest(relay.url, [{"id": "swap", "prompt": "将图1的服装换为图2的服装", "images": [a, b]}]))
    assert cli("run", job.manifest).exit_code == 0
    (req,) = generation_requests(relay)
    assert req["body"]["image"] == [a, b]


def test_n_images_become_numbered_outputs_and_all_must_be_on_disk(job, relay):
    job.write(openai_manifest(relay.url, [{"id": "trio", "prompt": "three"}], n=3))
    assert cli("run", job.manifest).exit_code == 0
    assert job.sql("SELECT idx, path FROM outputs ORDER BY idx") == [(1, "trio-1.png"), (2, "trio-2.png"),
                                                                       (3, "trio-3.png")]
    assert generation_requests(relay)[0]["body"]["n"] == 3


def test_a_failed_download_is_retried_from_the_url_without_generating_again(job, relay):
    job.write(openai_manifest(relay.url, [{"id": "a", "prompt": "[[mock:download_fail*2]] x"}]))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(relay)) == 1
    assert [d["status"] for d in downloads(relay)] == [500, 500, 200]
    assert job.sql("SELECT outcome FROM attempts ORDER BY id") == [("transient",), ("transient",), ("succeeded",)]


def test_a_failed_download_is_recovered_on_rerun_without_generating_again(job, relay):
    job.write(openai_manifest(relay.url, [{"id": "a", "prompt": "[[mock:download_fail*1]] x"}],
                              ) | {"limits": {"max_attempts": 1, "timeout_s": 5, "requests_per_minute": None}})
    assert cli("run", job.manifest).exit_code == 1
    assert job.sql("SELECT state, resume_token IS NOT NULL FROM items") == [("failed", 1)]
    assert cli("run", job.manifest, "--retry-failed").exit_code == 0
    assert len(generation_requests(relay)) == 1
    assert job.state_of() == {"a": "succeeded"}
    assert job.sql("SELECT resume_token FROM items") == [(None,)]


def test_gemini_fetches_each_distinct_url_image_once_per_run(job, relay):
    scene, logo = f"{relay.url}/files/scene.png", f"{relay.url}/files/logo.png"
    items = [{"id": f"i{i}", "prompt": f"p{i}", "images": [scene, "images/calculator.jpg"]} for i in range(5)]
    items.append({"id": "logo", "prompt": "l", "images": [logo, scene]})
    job.write(manifest(relay.url, items, network={"allow_private": True}))
    assert cli("run", job.manifest).exit_code == 0
    fetched = sorted(r["path"] for r in relay.requests() if r["api"] == "files")
    assert fetched == ["/files/logo.png", "/files/scene.png"]
    body = generation_requests(relay)[0]["body"]
    scene_b64 = base64.b64encode((job.root / "images/scene.png").read_bytes()).decode()
    assert body["contents"][0]["parts"][1] == {"inline_data": {"mime_type": "image/png", "data": scene_b64}}


@pytest.mark.parametrize(
    ("image", "network", "message"),
    [
        ("{mock}/files/notes.txt", {"allow_private": True}, "not an image"),
        ("{mock}/files/calculator.jpg", {"allow_private": True, "max_download_mb": 0.001}, "download limit"),
        ("http://localhost:{port}/files/scene.png", {}, "private or local"),
        ("http://169.254.169.254/latest/meta-data", {}, "private or local"),
        ("http://10.1.2.3/x.png", {}, "private or local"),
        ("http://[::ffff:127.0.0.1]:{port}/files/scene.png", {}, "private or local"),
        ("http://[::7f00:1]:{port}/files/scene.png", {}, "private or local"),
        ("http://2130706433:{port}/files/scene.png", {}, "(127.0.0.1) is a private or local"),
        ("http://127.0.0.1:{other}/files/scene.png", {}, "network.allow_private"),  # the API host, another port
    ],
)
def test_url_images_that_break_the_rules_are_clear_rejections(job, relay, image, network, message):
    (job.root / "images" / "notes.txt").write_text("hello")
    port = int(relay.url.rsplit(":", 1)[1])
    url = image.format(mock=relay.url, port=port, other=port + 1 if port < 65535 else port - 1)
    job.write(manifest(relay.url, [{"id": "a", "prompt": "p", "images": [url]}], network=network))
    result = cli("run", job.manifest)
    assert result.exit_code == 1, result.stderr
    ((state, cls, err),) = job.sql("SELECT state, error_class, last_error FROM items")
    assert (state, cls) == ("failed", "rejected") and message in err
    assert generation_requests(relay) == []


def reply(status: int, error: dict) -> HttpReply:
    body = {"error": error}
    return HttpReply(status, {}, json.dumps(body).encode(), body, 1.0)


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (401, {"message": "bad", "type": "invalid_request_error", "code": "invalid_api_key"}, FatalError),
        (404, {"message": "no", "type": "invalid_request_error", "code": "model_not_found"}, FatalError),
        (400, {"message": "no", "type": "invalid_request_error", "code": "content_policy_violation"}, RejectedError),
        (400, {"message": "bad size", "type": "invalid_request_error", "code": "invalid_request"}, RejectedError),
        (429, {"message": "slow down", "type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}, TransientError),
        (429, {"message": "no money", "type": "insufficient_quota", "code": "insufficient_quota"}, FatalError),
        (500, {"message": "oops", "type": "server_error", "code": None}, TransientError),
        (503, {"message": "busy", "type": "server_error", "code": "service_unavailable"}, TransientError),
    ],
)
def test_openai_errors_map_to_the_same_classes_as_gemini(status, error, expected):
    assert type(classify_error(reply(status, error))) is expected


def test_content_policy_and_bad_key_through_the_mock(job, relay):
    relay.configure(api_key="relay-test-key-123")
    job.write(openai_manifest(relay.url, [{"id": "x", "prompt": "[[mock:safety*always]] no"}, {"id": "y", "prompt": "ok"}],
                              ) | {"limits": {"concurrency": 1, "requests_per_minute": None}})
    assert cli("run", job.manifest).exit_code == 1
    assert job.state_of() == {"x": "failed", "y": "succeeded"}
    relay.configure(api_key="another-key")
    job.write(openai_manifest(relay.url, [{"id": "z", "prompt": "new"}]))
    result = cli("run", job.manifest)
    assert result.exit_code == 3 and "refused the key" in result.stderr


def test_an_image_url_that_is_not_a_url_is_refused_at_plan_time_in_one_line(job, relay):
    url = "http://127.0.0.1\\@example.com/x.png"
    job.write(manifest(relay.url, [{"id": "a", "prompt": "p", "images": [url]}]))
    result = cli("run", job.manifest)
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("job.yaml: item a: images[0]: not a valid URL (Invalid URL: backslash ('\\') "
                         "is not allowed in the authority component per RFC 3986.)")
    assert relay.requests() == []
