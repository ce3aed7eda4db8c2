"""Result links of the OpenAI-compatible relay: expired (403), refused by the network guard,
and reference-image links that have expired."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from tests.conftest import cli, generation_requests, manifest
from tests.integration import test_openai_images
from tests.integration.test_openai_images import downloads, openai_manifest

relay = test_openai_images.relay  # the fixture: the mock as a relay, its key in RELAY_KEY


def limits(**kw) -> dict:
    return {"limits": {"max_attempts": 2, "timeout_s": 5, "requests_per_minute": None, "concurrency": 4, **kw}}


def test_an_expired_link_answers_403_and_is_generated_again_once_saying_so(job, relay):
    job.write(openai_manifest(relay.url, [{"id": "a", "prompt": "[[mock:download_fail*1]] x"}]) | limits(max_attempts=1))
    assert cli("run", job.manifest).exit_code == 1
    ((token,),) = job.sql("SELECT resume_token FROM items")
    (url,) = json.loads(token)["urls"]
    assert "Expires" in parse_qs(urlsplit(url).query)  # a signed link, as real relays hand out
    relay.faults(expire_results=True)  # the kept link has expired by the next run
    result = cli("run", job.manifest, "--retry-failed")
    assert result.exit_code == 0, result.stderr
    assert len(generation_requests(relay)) == 2
    assert [d["status"] for d in downloads(relay)] == [500, 403, 200]
    ((text,),) = job.sql("SELECT text FROM attempts WHERE outcome = 'succeeded'")
    assert "generated again" in text and "HTTP 403" in text and "Request has expired" in text


def test_a_reference_image_link_that_answers_403_is_a_clear_rejection_not_retried(job, relay):
    dead = f"{relay.url}/results/gone.png?Expires=1"  # expired long ago: the mock answers 403
    job.write(manifest(relay.url, [{"id": "a", "prompt": "p", "images": [dead]}], network={"allow_private": True}))
    assert cli("run", job.manifest).exit_code == 1
    ((state, cls, err),) = job.sql("SELECT state, error_class, last_error FROM items")
    assert (state, cls) == ("failed", "rejected")
    assert err.startswith("reference image: ") and "HTTP 403" in err and "Request has expired" in err
    assert [d["status"] for d in downloads(relay)] == [403]
    assert generation_requests(relay) == []


def private_links_manifest(relay, n: int, **network) -> dict:
    """A relay reached as ``localhost`` whose result links point at 127.0.0.1: another host,
    a loopback address — what a self-hosted relay serving results from its LAN looks like."""
    api = relay.url.replace("127.0.0.1", "localhost")
    relay.configure(result_base=relay.url)
    data = openai_manifest(api, [{"id": f"i{i}", "prompt": f"p{i}"} for i in range(n)]) | limits(concurrency=1)
    data["network"] = network
    return data


def test_refused_result_links_stop_the_job_at_once_with_one_line_not_an_outage(job, relay):
    job.write(private_links_manifest(relay, 10))
    result = cli("run", job.manifest)
    assert result.exit_code == 3, result.stderr
    assert "network.allow_private" in result.stderr and "private or local address" in result.stderr
    assert "Traceback" not in result.stderr and "API failing" not in result.stderr + result.stdout
    # the first refusal stops the job (at most the one request already under way is also sent)
    assert len(generation_requests(relay)) <= 2 and downloads(relay) == []
    assert sorted(set(job.state_of().values())) == ["pending"]
    # what was paid for is kept: allowing private addresses downloads it without paying again
    job.write(private_links_manifest(relay, 10, allow_private=True))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(relay)) == 10
    assert set(job.state_of().values()) == {"succeeded"}


def test_a_paid_link_still_refused_on_the_next_run_fails_that_item_with_the_reason(job, relay):
    job.write(private_links_manifest(relay, 3))
    assert cli("run", job.manifest).exit_code == 3
    paid = {k for (k,) in job.sql("SELECT key FROM items WHERE resume_token IS NOT NULL")}
    sent = len(generation_requests(relay))
    assert paid and len(paid) == sent
    # only the paid items (an unpaid one would be sent fresh, refused, and stop the run at once)
    cli("run", job.manifest, *[arg for key in sorted(paid) for arg in ("--only", key)])
    rows = {k: (s, c, e) for k, s, c, e in job.sql("SELECT key, state, error_class, last_error FROM items")}
    for key in paid:  # no new generation for these: each fails with the reason and the way out
        state, cls, err = rows[key]
        assert (state, cls) == ("failed", "rejected") and "network.allow_private" in err, rows
    again = [r["prompt"] for r in generation_requests(relay)[sent:]]
    assert not {f"p{k[1:]}" for k in paid} & set(again) and downloads(relay) == []


def test_the_api_host_on_another_port_is_not_the_api(job, relay):
    port = int(relay.url.rsplit(":", 1)[1])
    other = f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    relay.configure(result_base=other)
    job.write(openai_manifest(relay.url, [{"id": "a", "prompt": "p"}]) | limits() | {"network": {}})
    result = cli("run", job.manifest)
    assert result.exit_code == 3 and "private or local address" in result.stderr
    assert downloads(relay) == []
