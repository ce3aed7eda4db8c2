"""Several machines, no shared folder: three runners on one PostgreSQL job, each started from its
own working directory with its own copy of the manifest, write a 300-item job into one bucket
(moto's S3 server on loopback).  One is killed with SIGKILL mid-run; the others finish its
items.  Every item ends as exactly one object, written once, none overwritten; ``status`` and
``report`` work from a fourth directory that never ran anything."""
# ruff: noqa: F811  (the fixtures are imported from tests.s3server)

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from collections import Counter

import pytest

from tests.acceptance.test_postgres_runners import pg, query, refused_while_one_runs  # noqa: F401  (fixture)
from tests.conftest import cli, cli_process, items, manifest, needs_postgres, page_items, wait_for
from tests.s3server import s3, s3_server  # noqa: F401  (fixtures)

pytestmark = needs_postgres


def machine(job, tmp_path_factory, name: str):
    """Another machine: the manifest (and its images) copied into a folder of its own."""
    root = tmp_path_factory.mktemp(name)
    if (job.root / "images").exists():
        shutil.copytree(job.root / "images", root / "images")
    shutil.copy(job.manifest, root / "job.yaml")
    return root


@pytest.mark.timeout(600)
def test_three_runners_on_three_machines_fill_one_bucket(job, mock, pg, s3, tmp_path_factory):
    mock.configure(image_mode="solid", record_bodies=False)
    mock.faults(hold=True)  # the first runner's requests wait at the mock until it is killed
    n = 300
    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(n), output=s3.output(bucket, "catalog/"),
                       limits={"concurrency": 6, "requests_per_minute": None, "timeout_s": 300}))
    roots = [job.root] + [machine(job, tmp_path_factory, f"machine{i}") for i in (2, 3, 4)]
    victim = cli_process("run", roots[0] / "job.yaml", cwd=roots[0])
    wait_for(lambda: mock.faults()["held"] == 6, "the first runner's 6 requests at the mock", proc=victim)
    others = [cli_process("run", root / "job.yaml", cwd=root) for root in roots[1:3]]
    # the others joined (they share the job's concurrency): some of their requests are out too
    wait_for(lambda: mock.faults()["held"] > 6, "the other runners' requests at the mock", proc=others[0])
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    mock.faults(hold=False)
    for proc in others:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err

    assert query(pg, "SELECT state, count(*) FROM items GROUP BY state") == [("succeeded", n)]
    objects = {k: v for k, v in s3.keys(bucket, "catalog/").items() if k.endswith(".png")}
    assert sorted(objects) == [f"catalog/i{i:03d}.png" for i in range(n)]
    recorded = dict(query(pg, "SELECT path, sha256 FROM outputs"))
    assert len(recorded) == n
    for key in (f"catalog/i{i:03d}.png" for i in (0, 137, 299)):
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        head = s3.head(bucket, key)
        assert hashlib.sha256(body).hexdigest() == recorded[key.removeprefix("catalog/")]
        assert head["Metadata"]["batchfuse-item"] == key.removeprefix("catalog/").removesuffix(".png")
    # written once each: one successful upload per key, never a second one over it
    puts = Counter(p for m, p, status in s3.requests() if m == "PUT" and status == 200 and p.endswith(".png"))
    assert sorted(puts.values()) == [1] * n, [k for k, c in puts.items() if c != 1]
    per_item = query(pg, "SELECT item_id, count(*) FROM attempts WHERE outcome IN ('succeeded', 'adopted') "
                         "GROUP BY item_id")
    assert len(per_item) == n and {c for _, c in per_item} == {1}
    ran = query(pg, "SELECT pid, succeeded FROM runs")
    assert all(s > 0 for pid, s in ran if pid != victim.pid)
    assert [s for pid, s in ran if pid == victim.pid] == [0]  # its claimed items were all finished by the others
    # no machine kept an output locally
    for root in roots:
        assert [p for p in root.rglob("*.png") if "images" not in p.parts] == []

    fourth = roots[3]  # never ran anything: status and report read the database and the bucket
    shown = cli("status", fourth / "job.yaml", "--json")
    assert shown.exit_code == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["items"]["succeeded"] == n
    dead = [r for r in status["runs"] if r["pid"] == victim.pid]
    assert dead and not dead[0]["live"]
    made = cli("report", fourth / "job.yaml")
    assert made.exit_code == 0, made.stderr
    cards = page_items((fourth / "test-job.report.html").read_text(encoding="utf-8"))
    assert len(cards) == n
    assert all(c["outputs"][0]["thumb"] and c["outputs"][0]["href"].startswith(f"{s3.url}/{bucket}/catalog/")
               for c in cards.values())


def test_a_runner_pointed_at_another_prefix_is_refused_while_others_run(job, mock, pg, s3, tmp_path_factory):
    mock.configure(image_mode="solid", record_bodies=False)
    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(20), output=s3.output(bucket, "catalog/"),
                       limits={"concurrency": 2, "requests_per_minute": None, "timeout_s": 300}))

    def elsewhere():
        root = machine(job, tmp_path_factory, "misconfigured")
        job.write(manifest(mock.url, items(20), output=s3.output(bucket, "elsewhere/"),
                           limits={"concurrency": 2, "requests_per_minute": None, "timeout_s": 300}))
        shutil.copy(job.manifest, root / "job.yaml")
        return root / "job.yaml"

    refused = refused_while_one_runs(job, mock, elsewhere)
    assert refused.exit_code == 2, refused.stderr
    assert f"output.dir s3://{bucket}/elsewhere/ is not where the other runners" in refused.stderr
    assert len([r for r in mock.requests() if r["api"] in ("gemini", "openai")]) == 2  # the refused one sent nothing
