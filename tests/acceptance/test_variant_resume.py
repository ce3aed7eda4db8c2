"""Each variant of ``variants: N`` is its own unit of resume: a runner killed after variant 2
of 4 is done leaves 1 and 2 recorded, and the next run sends only 3 and 4."""

from __future__ import annotations

import json
import signal

from tests.conftest import cli_process, generation_requests, manifest, wait_for

SUCCEEDED = "SELECT count(*) FROM items WHERE state = 'succeeded'"


def test_a_crash_after_two_of_four_variants_resends_only_the_other_two(job, mock):
    mock.faults(hold_after=2)  # two requests are answered, the third waits at the mock
    job.write(manifest(mock.url, [{"id": "mug", "prompt": "a mug", "variants": 4}],
                       limits={"concurrency": 1, "timeout_s": 300}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: job.scalar(SUCCEEDED) == 2 and mock.faults()["held"] == 1,
             "two variants recorded and the third held at the mock", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = dict(job.sql("SELECT key, spec FROM items WHERE state = 'succeeded'"))
    assert len(done) == 2
    mock.faults(hold=False)
    wait_for(lambda: mock.faults()["held"] == 0, "the held request released")
    # the mock logs a request when it answers: the held one died with its runner's connection
    first_run = len(generation_requests(mock))
    assert first_run == 2

    rerun = cli_process("run", job.manifest)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert set(job.state_of().values()) == {"succeeded"}
    resent = generation_requests(mock)[first_run:]
    assert len(resent) == 2, err
    seeds = {key: json.loads(spec)["params"]["seed"] for key, spec in job.sql("SELECT key, spec FROM items")}
    left = {k for k in seeds if k not in done}
    assert sorted(r["body"]["generationConfig"]["seed"] for r in resent) == sorted(seeds[k] for k in left)
    assert sorted(p.name for p in job.out.iterdir()) == ["mug-1.png", "mug-2.png", "mug-3.png", "mug-4.png"]
