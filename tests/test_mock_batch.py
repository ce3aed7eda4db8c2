"""The mock's Batch and Files APIs over real HTTP: the official google-genai SDK drives them, and
raw requests check what the SDK hides (Range, shuffled keyed lines, per-line faults, paging,
forced states, 48 h expiry). Batches here never advance on a clock: the tests move them through
``POST /_mock/batches/{id}/state``, or poll with a bound.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from batchfuse.mock import MockConfig, MockServerThread
from tests.conftest import TEST_KEY
from tests.contract.conftest import genai_client, loopback_only  # noqa: F401 (autouse: loopback only)
from tests.test_mock_server import Reply, http, png_bytes

MODEL = "gemini-2.5-flash-image"
HEADERS = {"x-goog-api-key": TEST_KEY}


@pytest.fixture
def srv() -> Iterator[MockServerThread]:
    """Batches stay where they are until a test moves them; seeded shuffling."""
    config = MockConfig(api_key=TEST_KEY, image_scale=1 / 64, seed=7, batch_pending_s=None, batch_running_s=None)
    with MockServerThread(config) as server:
        yield server


def request_line(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": prompt}, *extra.get("parts", [])]}]}


def upload(srv: MockServerThread, data: bytes, mime: str = "application/jsonl", name: str = "in") -> dict[str, Any]:
    """The resumable protocol by hand: start, then two chunks, the second finalizing."""
    start = http(
        "POST", f"{srv.url}/upload/v1beta/files", body={"file": {"display_name": name}},
        headers={**HEADERS, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                 "X-Goog-Upload-Header-Content-Length": str(len(data)), "X-Goog-Upload-Header-Content-Type": mime},
    )
    assert start.status == 200, start.body
    assert start.headers["X-Goog-Upload-Status"] == "active"
    url = start.headers["X-Goog-Upload-URL"]
    half = len(data) // 2
    first = http("POST", url, raw=data[:half], headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"})
    assert first.headers["X-Goog-Upload-Status"] == "active", first.body
    last = http("POST", url, raw=data[half:],
                headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": str(half)})
    assert last.status == 200 and last.headers["X-Goog-Upload-Status"] == "final", last.body
    return last.json()["file"]


def jsonl(prompts: dict[str, str]) -> bytes:
    return "".join(json.dumps({"key": k, "request": request_line(p)}) + "\n" for k, p in prompts.items()).encode()


def create(srv: MockServerThread, input_config: dict[str, Any], name: str = "job-1") -> Reply:
    body = {"batch": {"display_name": name, "input_config": input_config}}
    return http("POST", f"{srv.url}/v1beta/models/{MODEL}:batchGenerateContent", body=body, headers=HEADERS)


def get(srv: MockServerThread, path: str, **headers: str) -> Reply:
    return http("GET", f"{srv.url}{path}", headers={**HEADERS, **headers})


def force(srv: MockServerThread, name: str, state: str) -> Reply:
    return http("POST", f"{srv.url}/_mock/{name}/state", body={"state": state}, timeout=60)


def results(srv: MockServerThread, op: dict[str, Any]) -> list[dict[str, Any]]:
    file_name = op["response"]["responsesFile"]
    reply = get(srv, f"/download/v1beta/{file_name}:download?alt=media")
    assert reply.status == 200, reply.body
    return [json.loads(line) for line in reply.body.decode().splitlines()]


# -- the official SDK ------------------------------------------------------------------------


def test_google_genai_sdk_drives_files_and_batches(srv: MockServerThread, tmp_path: Any) -> None:
    from google.genai import types

    srv.configure(batch_pending_s=0.0, batch_running_s=0.0)
    client = genai_client(srv, api_version="v1beta")
    source = tmp_path / "requests.jsonl"
    source.write_bytes(jsonl({"a": "a red chair", "b": "a blue lamp", "c": "[[mock:503]] a green door"}))
    uploaded = client.files.upload(file=source, config={"display_name": "my-input", "mime_type": "application/jsonl"})
    assert uploaded.name.startswith("files/") and uploaded.state == types.FileState.ACTIVE
    assert uploaded.display_name == "my-input" and uploaded.size_bytes == source.stat().st_size
    assert client.files.get(name=uploaded.name).expiration_time is not None

    job = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "bf-run-42"})
    assert job.name.startswith("batches/") and job.display_name == "bf-run-42"
    deadline = time.monotonic() + 60
    while job.state != types.JobState.JOB_STATE_SUCCEEDED:
        assert time.monotonic() < deadline, job.state
        job = client.batches.get(name=job.name)
    assert job.dest is not None and job.dest.file_name is not None
    assert any(b.name == job.name and b.display_name == "bf-run-42" for b in client.batches.list())

    data = client.files.download(file=job.dest.file_name)
    lines = {row["key"]: row for row in map(json.loads, data.decode().splitlines())}
    assert set(lines) == {"a", "b", "c"}
    assert lines["c"]["error"]["status"] == "UNAVAILABLE" and "response" not in lines["c"]
    parts = lines["a"]["response"]["candidates"][0]["content"]["parts"]
    assert any("inlineData" in p for p in parts)

    other = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "to-cancel"})
    srv.configure(batch_pending_s=None)
    third = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "to-cancel"})
    client.batches.cancel(name=third.name)
    assert client.batches.get(name=third.name).state == types.JobState.JOB_STATE_CANCELLED
    assert other.name != third.name


def test_sdk_inline_requests_come_back_inlined(srv: MockServerThread) -> None:
    from google.genai import types

    client = genai_client(srv, api_version="v1beta")
    job = client.batches.create(
        model=MODEL,
        src=[{"contents": [{"parts": [{"text": "a cat"}], "role": "user"}]},
             {"contents": [{"parts": [{"text": "[[mock:400]] a dog"}], "role": "user"}]}],
        config={"display_name": "inline"},
    )
    assert force(srv, job.name, "SUCCEEDED").status == 200
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    inlined = job.dest.inlined_responses
    assert inlined[0].response is not None and inlined[0].response.candidates
    assert inlined[1].error is not None and inlined[1].error.code == 3


# -- raw HTTP --------------------------------------------------------------------------------


def test_wire_shapes_and_states_pending_running_succeeded(srv: MockServerThread) -> None:
    f = upload(srv, jsonl({"k1": "one", "k2": "two"}))
    op = create(srv, {"file_name": f["name"]}, "shape").json()
    meta = op["metadata"]
    assert op["name"] == meta["name"] and op["name"].startswith("batches/") and "done" not in op
    assert meta["@type"].endswith("GenerateContentBatch") and meta["model"] == f"models/{MODEL}"
    assert meta["state"] == "BATCH_STATE_PENDING" and meta["displayName"] == "shape"
    assert meta["batchStats"] == {"requestCount": "2", "pendingRequestCount": "2"}  # int64 as strings
    assert meta["inputConfig"] == {"fileName": f["name"]}
    running = force(srv, op["name"], "RUNNING").json()
    assert running["metadata"]["state"] == "BATCH_STATE_RUNNING" and "done" not in running
    done = force(srv, op["name"], "SUCCEEDED").json()
    assert done["done"] is True and done["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert done["metadata"]["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert done["response"]["@type"].endswith("GenerateContentBatchOutput")
    assert done["response"]["responsesFile"] == done["metadata"]["output"]["responsesFile"]
    assert get(srv, f"/v1beta/{op['name']}").json() == done
    assert force(srv, op["name"], "EXPIRED").status == 409  # a finished batch stays finished


def test_results_are_shuffled_keyed_and_replayable_with_the_seed(srv: MockServerThread) -> None:
    prompts = {f"item-{i:02d}": f"picture number {i}" for i in range(12)}
    orders = []
    for server in (srv, MockServerThread(srv.config)):
        with server if server is not srv else contextlib.nullcontext(srv):
            f = upload(server, jsonl(prompts))
            op = create(server, {"file_name": f["name"]}).json()
            rows = results(server, force(server, op["name"], "SUCCEEDED").json())
            assert sorted(r["key"] for r in rows) == sorted(prompts)  # every key, once
            assert all(r["response"]["candidates"] for r in rows)
            orders.append([r["key"] for r in rows])
    assert orders[0] != list(prompts), "lines came back in request order"
    assert orders[0] == orders[1], "the same seed shuffled differently"


def test_per_line_faults_by_marker_and_bad_lines(srv: MockServerThread) -> None:
    lines = [
        {"key": "ok", "request": request_line("fine")},
        {"key": "busy", "request": request_line("[[mock:503]] x")},
        {"key": "quota", "request": request_line("[[mock:429]] y")},
        {"key": "safe", "request": request_line("[[mock:safety]] z")},
        {"key": "bad", "request": {"contents": [], "nonsense": 1}},
    ]
    data = ("".join(json.dumps(x) + "\n" for x in lines) + "not json\n").encode()
    f = upload(srv, data)
    op = create(srv, {"file_name": f["name"]}).json()
    done = force(srv, op["name"], "SUCCEEDED").json()
    assert done["metadata"]["batchStats"] == {"requestCount": "6", "successfulRequestCount": "2",
                                              "failedRequestCount": "4"}
    rows = results(srv, done)
    by_key = {r.get("key"): r for r in rows}
    assert by_key["busy"]["error"] == {"code": 14, "message": by_key["busy"]["error"]["message"], "status": "UNAVAILABLE"}
    assert by_key["quota"]["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert by_key["bad"]["error"]["status"] == "INVALID_ARGUMENT"
    assert by_key[None]["error"]["status"] == "INVALID_ARGUMENT"  # the line that was not JSON
    assert by_key["safe"]["response"]["candidates"][0]["finishReason"] == "IMAGE_SAFETY"
    assert "response" in by_key["ok"]
    faults = [e["fault"] for e in srv.requests("/v1beta/batches/") if e["api"] == "gemini-batch"]
    assert sorted(f for f in faults if f) == ["429", "503", "safety"]


def test_create_is_not_idempotent(srv: MockServerThread) -> None:
    f = upload(srv, jsonl({"a": "same"}))
    first = create(srv, {"file_name": f["name"]}, "twin").json()
    second = create(srv, {"file_name": f["name"]}, "twin").json()
    assert first["name"] != second["name"]
    listed = get(srv, "/v1beta/batches").json()["operations"]
    assert [op["metadata"]["displayName"] for op in listed] == ["twin", "twin"]


@pytest.mark.parametrize("state", ["EXPIRED", "FAILED", "CANCELLED"])
def test_forced_terminal_states_have_no_results(srv: MockServerThread, state: str) -> None:
    f = upload(srv, jsonl({"a": "x"}))
    op = create(srv, {"file_name": f["name"]}).json()
    ended = force(srv, op["name"], state).json()
    assert ended["done"] is True and ended["metadata"]["state"] == f"BATCH_STATE_{state}"
    assert "response" not in ended and "output" not in ended["metadata"]
    assert ("error" in ended) == (state == "FAILED")
    assert get(srv, f"/v1beta/{op['name']}").json()["metadata"]["state"] == f"BATCH_STATE_{state}"


def test_cancel_and_delete_over_http(srv: MockServerThread) -> None:
    f = upload(srv, jsonl({"a": "x"}))
    op = create(srv, {"file_name": f["name"]}).json()
    assert http("POST", f"{srv.url}/v1beta/{op['name']}:cancel", headers=HEADERS).json() == {}
    assert get(srv, f"/v1beta/{op['name']}").json()["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    again = http("POST", f"{srv.url}/v1beta/{op['name']}:cancel", headers=HEADERS)
    assert again.status == 400 and again.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert http("DELETE", f"{srv.url}/v1beta/{op['name']}", headers=HEADERS).json() == {}
    assert get(srv, f"/v1beta/{op['name']}").status == 404


def test_list_pages_with_tokens_and_finds_a_batch_by_display_name(srv: MockServerThread) -> None:
    f = upload(srv, jsonl({"a": "x"}))
    names = [create(srv, {"file_name": f["name"]}, f"run-{i}").json()["name"] for i in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = get(srv, f"/v1beta/batches?pageSize=2{'&pageToken=' + token if token else ''}").json()
        pages += 1
        seen += [op["metadata"]["displayName"] for op in reply["operations"]]
        token = reply.get("nextPageToken", "")
        if not token:
            break
        create(srv, {"file_name": f["name"]}, "late")  # a new batch does not shift later pages
    assert pages == 3 and seen == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert len(set(names)) == 5
    assert get(srv, "/v1beta/batches?pageToken=garbage").status == 400


def test_result_download_honours_range(srv: MockServerThread) -> None:
    f = upload(srv, jsonl({f"k{i}": f"p{i}" for i in range(3)}))
    done = force(srv, create(srv, {"file_name": f["name"]}).json()["name"], "SUCCEEDED").json()
    path = f"/download/v1beta/{done['response']['responsesFile']}:download?alt=media"
    whole = get(srv, path)
    assert whole.status == 200 and whole.headers["Accept-Ranges"] == "bytes"
    size = len(whole.body)
    head = get(srv, path, Range="bytes=0-99")
    tail = get(srv, path, Range="bytes=100-")
    assert head.status == tail.status == 206
    assert head.headers["Content-Range"] == f"bytes 0-99/{size}"
    assert head.body + tail.body == whole.body
    assert get(srv, path, Range=f"bytes={size}-").status == 416
    sdk_path = f"/v1beta/{done['response']['responsesFile']}:download?alt=media"
    assert get(srv, sdk_path, Range="bytes=-10").body == whole.body[-10:]


def test_files_expire_after_48_hours_and_list_get_delete(srv: MockServerThread) -> None:
    f = upload(srv, b'{"key": "a", "request": {}}\n', name="expiring")
    created = datetime.fromisoformat(f["createTime"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(f["expirationTime"].replace("Z", "+00:00"))
    assert (expires - created).total_seconds() == 48 * 3600
    assert f["state"] == "ACTIVE" and f["source"] == "UPLOADED" and f["sizeBytes"] == "28"
    listed = get(srv, "/v1beta/files").json()["files"]
    assert [x["name"] for x in listed] == [f["name"]]
    assert get(srv, f"/v1beta/{f['name']}").json() == f
    assert get(srv, f"/v1beta/{f['name']}:download?alt=media").status == 400  # uploaded, not generated
    assert http("DELETE", f"{srv.url}/v1beta/{f['name']}", headers=HEADERS).json() == {}
    gone = get(srv, f"/v1beta/{f['name']}")
    assert gone.status == 403 and gone.json()["error"]["status"] == "PERMISSION_DENIED"
    srv.configure(file_ttl_s=1e-6)
    short = upload(srv, b"x\n")
    assert get(srv, f"/v1beta/{short['name']}").status == 403  # past its expirationTime


def test_file_data_parts_resolve_uploaded_files_online_and_in_batches(srv: MockServerThread) -> None:
    image = upload(srv, png_bytes(), mime="image/png", name="ref")
    part = {"file_data": {"mime_type": "image/png", "file_uri": image["uri"]}}
    body = {"contents": [{"role": "user", "parts": [{"text": "use this"}, part]}]}
    online = http("POST", f"{srv.url}/v1beta/models/{MODEL}:generateContent", body=body, headers=HEADERS)
    assert online.status == 200, online.body
    assert srv.requests(":generateContent")[-1]["n_images"] == 1
    missing = {"contents": [{"role": "user", "parts": [
        {"text": "x"}, {"file_data": {"mime_type": "image/png", "file_uri": "files/nosuchfile"}}]}]}
    refused = http("POST", f"{srv.url}/v1beta/models/{MODEL}:generateContent", body=missing, headers=HEADERS)
    assert refused.status == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"
    op = create(srv, {"requests": {"requests": [{"request": body, "metadata": {"key": "r1"}},
                                                {"request": missing, "metadata": {"key": "r2"}}]}}).json()
    done = force(srv, op["name"], "SUCCEEDED").json()
    rows = done["response"]["inlinedResponses"]["inlinedResponses"]
    assert rows[0]["metadata"] == {"key": "r1"} and "response" in rows[0]
    assert rows[1]["metadata"] == {"key": "r2"} and rows[1]["error"]["status"] == "PERMISSION_DENIED"


def test_refusals_key_model_input(srv: MockServerThread) -> None:
    url = f"{srv.url}/v1beta/models/{MODEL}:batchGenerateContent"
    body = {"batch": {"display_name": "x", "input_config": {"requests": {"requests": [{"request": request_line("a")}]}}}}
    assert http("POST", url, body=body).status == 403
    assert http("POST", url, body=body, headers={"x-goog-api-key": "wrong"}).json()["error"]["status"] == "INVALID_ARGUMENT"
    nomodel = http("POST", f"{srv.url}/v1beta/models/nope:batchGenerateContent", body=body, headers=HEADERS)
    assert nomodel.status == 404
    both = create(srv, {"file_name": "files/x", "requests": {"requests": []}})
    assert both.status == 400
    unknown = create(srv, {"file_name": "files/doesnotexist"})
    assert unknown.status == 403
    typo = http("POST", url, body={"batch": {"display_name": "x", "inptu_config": {}}}, headers=HEADERS)
    assert typo.status == 400 and "inptu_config" in typo.json()["error"]["message"]
    assert get(srv, "/v1beta/batches/nosuch").status == 404
    assert TEST_KEY not in json.dumps(srv.requests())


def test_sdk_can_upload_from_a_stream(srv: MockServerThread) -> None:
    client = genai_client(srv, api_version="v1beta")
    data = b"\n".join(json.dumps({"key": str(i), "request": request_line(f"p{i}")}).encode() for i in range(3))
    uploaded = client.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl"})
    names = [f.name for f in client.files.list()]
    assert uploaded.name in names
    client.files.delete(name=uploaded.name)
    assert uploaded.name not in [f.name for f in client.files.list()]
