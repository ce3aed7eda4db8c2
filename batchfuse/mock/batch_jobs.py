"""The mock's batches: their resource JSON and the state machine that runs them.

A batch is ``BATCH_STATE_PENDING`` for ``batch_pending_s``, then ``RUNNING`` while its lines are
made (at least ``batch_running_s``), then ``SUCCEEDED`` with a results file (or inlined
responses); a test moves it on at once, or to ``FAILED`` / ``CANCELLED`` / ``EXPIRED``, through
``POST /_mock/batches/{id}/state`` (``None`` timings wait for exactly that), so no test waits on
a clock. Shapes are the live service's, as quoted in public fixtures (e.g.
github.com/flachesis/gemini-rust ``src/batch/model.rs``): an ``Operation`` named
``batches/{id}`` whose ``metadata`` is the ``GenerateContentBatch`` (``@type``, ``model``,
``displayName``, ``createTime``, ``updateTime``, ``batchStats`` with int64 counts as strings and
zero counts left out, ``state``, ``name``, and ``output`` once done), ``done`` and ``response``
(``GenerateContentBatchOutput``) when finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batchfuse.model_catalog import ModelEntry

from .batch_lines import line_error, line_outcome
from .file_store import FileStore, new_id, rfc3339
from .state import MockState

TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1main."
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")
STATES = ("PENDING", "RUNNING", *TERMINAL)


class BatchConflict(Exception):
    """A move the batch's current state does not allow (the API's 400 FAILED_PRECONDITION)."""


@dataclass
class Line:
    """One request of a batch: its ``key`` (file lines) or ``metadata`` (inline), and the request,
    or why the input line could not be read."""

    key: str | None
    metadata: dict[str, Any] | None
    request: Any
    problem: str | None = None


@dataclass
class Batch:
    id: str
    seq: int
    spec: ModelEntry
    display_name: str
    input_file: str | None
    lines: list[Line]
    created: float = field(default_factory=time.time)
    state: str = "PENDING"
    updated: float = 0.0
    ended: float | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    output_file: str | None = None
    error: dict[str, Any] | None = None
    skip_pending: asyncio.Event = field(default_factory=asyncio.Event)
    skip_running: asyncio.Event = field(default_factory=asyncio.Event)
    left_pending: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: Test hooks (admin route): rows added to the results file, and keys whose rows come twice.
    extra_rows: list[Any] = field(default_factory=list)
    repeat_keys: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.updated = self.created

    @property
    def name(self) -> str:
        return f"batches/{self.id}"

    def move(self, state: str) -> None:
        self.state = state
        self.updated = time.time()
        if state != "PENDING":
            self.left_pending.set()
        if state in TERMINAL:
            self.ended = self.updated

    def stats(self) -> dict[str, str]:
        failed = sum(1 for o in self.outcomes if "error" in o)
        counts = {
            "requestCount": len(self.lines),
            "successfulRequestCount": len(self.outcomes) - failed,
            "failedRequestCount": failed,
            "pendingRequestCount": 0 if self.state in TERMINAL else len(self.lines) - len(self.outcomes),
        }
        return {name: str(value) for name, value in counts.items() if value}

    def output(self) -> dict[str, Any] | None:
        if self.state != "SUCCEEDED":
            return None
        if self.output_file is not None:
            return {"responsesFile": self.output_file}
        return {"inlinedResponses": {"inlinedResponses": self.outcomes}}

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@type": TYPE_PREFIX + "GenerateContentBatch",
            "model": f"models/{self.spec.name}",
            "displayName": self.display_name,
        }
        if self.input_file is not None:
            body["inputConfig"] = {"fileName": self.input_file}
        output = self.output()
        if output is not None:
            body["output"] = output
        body["createTime"] = rfc3339(self.created)
        if self.ended is not None:
            body["endTime"] = rfc3339(self.ended)
        body["updateTime"] = rfc3339(self.updated)
        body["batchStats"] = self.stats()
        body["state"] = f"BATCH_STATE_{self.state}"
        body["name"] = self.name
        return body

    def operation(self) -> dict[str, Any]:
        """The long-running ``Operation`` that ``create``, ``get`` and ``list`` answer with."""
        body: dict[str, Any] = {"name": self.name, "metadata": self.resource()}
        if self.state in TERMINAL:
            body["done"] = True
            output = self.output()
            if output is not None:
                body["response"] = {"@type": TYPE_PREFIX + "GenerateContentBatchOutput", **output}
            elif self.error is not None:
                body["error"] = self.error
        return body


class BatchStore:
    """Every batch of one mock, and the tasks that move them along."""

    def __init__(self, state: MockState, files: FileStore) -> None:
        self.state = state
        self.files = files
        self.batches: dict[str, Batch] = {}
        self._seq = 0

    def create(self, spec: ModelEntry, display_name: str, input_file: str | None, lines: list[Line]) -> Batch:
        """A new batch, every time: ``create`` is not idempotent (the same body twice = two batches)."""
        self._seq += 1
        batch = Batch(new_id(36), self._seq, spec, display_name, input_file, lines)
        self.batches[batch.id] = batch
        batch.task = asyncio.ensure_future(self._drive(batch))
        return batch

    def get(self, batch_id: str) -> Batch | None:
        return self.batches.get(batch_id)

    async def delete(self, batch: Batch) -> None:
        await self._stop(batch)
        self.batches.pop(batch.id, None)

    async def clear(self) -> None:
        for batch in list(self.batches.values()):
            await self.delete(batch)

    async def force(self, batch: Batch, state: str) -> None:
        """Move a batch on now: ``RUNNING`` / ``SUCCEEDED`` run it (its lines are made as usual),
        ``FAILED`` / ``CANCELLED`` / ``EXPIRED`` end it without results."""
        if state not in STATES or state == "PENDING":
            raise ValueError(f"state must be one of {', '.join(STATES[1:])}, got {state!r}")
        if batch.state in TERMINAL:
            raise BatchConflict(f"{batch.name} is already {batch.state}; it cannot become {state}.")
        if state in ("RUNNING", "SUCCEEDED"):
            batch.skip_pending.set()
            if state == "RUNNING":
                await batch.left_pending.wait()
                return
            batch.skip_running.set()
            if batch.task is not None:
                await asyncio.shield(batch.task)
            return
        await self._stop(batch)
        batch.move(state)
        if state == "FAILED":
            batch.error = {"code": 13, "message": "Batch processing failed: internal error (forced by the mock)."}

    async def cancel(self, batch: Batch) -> None:
        """``batches/{id}:cancel``: a batch not yet finished ends ``CANCELLED``."""
        await self.force(batch, "CANCELLED")

    async def _stop(self, batch: Batch) -> None:
        task, batch.task = batch.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drive(self, batch: Batch) -> None:
        config = self.state.config
        try:
            await _phase(batch.skip_pending, config.batch_pending_s)
            batch.move("RUNNING")
            started = time.monotonic()
            for line in batch.lines:
                batch.outcomes.append(await self._outcome(batch, line))
                batch.updated = time.time()
            running_s = config.batch_running_s
            await _phase(batch.skip_running, None if running_s is None else running_s - (time.monotonic() - started))
            self._finish(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a mock bug must show as a FAILED batch, not a batch stuck RUNNING
            batch.error = {"code": 13, "message": f"Batch processing failed: {exc}"}
            batch.move("FAILED")

    async def _outcome(self, batch: Batch, line: Line) -> dict[str, Any]:
        if line.problem is not None:
            outcome = {"error": line_error("INVALID_ARGUMENT", line.problem)}
        else:
            outcome = await line_outcome(self.state, batch.spec, line.request, self.files, f"/v1beta/{batch.name}")
        if batch.input_file is None:
            return {**outcome, "metadata": line.metadata} if line.metadata is not None else outcome
        return {"key": line.key, **outcome} if line.key is not None else outcome

    def _finish(self, batch: Batch) -> None:
        config = self.state.config
        if batch.input_file is not None:
            rows = list(batch.outcomes) + [r for r in batch.outcomes if r.get("key") in batch.repeat_keys]
            rows += batch.extra_rows
            if config.batch_shuffle:
                seed = None if config.seed is None else f"{config.seed}:{batch.seq}"
                random.Random(seed).shuffle(rows)
            data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
            stored = self.files.add(
                data, "application/jsonl", None, "GENERATED", config.file_ttl_s, file_id=f"batch-{batch.id}"
            )
            batch.output_file = stored.name
        batch.move("SUCCEEDED")


async def _phase(skip: asyncio.Event, seconds: float | None) -> None:
    """Wait ``seconds`` or until ``skip`` is set (``None``: only until ``skip``)."""
    if seconds is None:
        await skip.wait()
        return
    if seconds <= 0 or skip.is_set():
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(skip.wait(), timeout=seconds)


BATCHES_KEY = web.AppKey("batchfuse_mock_batches", BatchStore)
