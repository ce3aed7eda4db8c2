"""Collecting batches: poll, download the results file to disk, apply it line by line.

The file is streamed to ``<output>/.batchfuse-batches/batch-<id>-results.jsonl`` and resumed
with ``Range`` after a failed download (fault point ``batch.download``); it is read one line
at a time, a few lines per group, so memory does not grow with the batch.  Each line is
matched to its item by its ``key`` (never by position) through the batch's recorded members;
a key the batch does not have, or one seen twice, is counted on the batch and logged, never
applied.  A line is parsed by the online provider's own reply parser and recorded as an
attempt through the same :class:`~batchfuse.run.recorder.Recorder` as online replies (outputs
written atomically first; spooled when they cannot be).  How far the file has been applied is
recorded after each group, and a member applied once is closed: a line is never applied twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from batchfuse import faultpoints
from batchfuse.batch.context import BatchContext
from batchfuse.errors import ErrorClass, GoneError, NoImageError, OutputError, ProviderError, TransientError
from batchfuse.images import ImageProblem
from batchfuse.outputs.files import PendingOutputs
from batchfuse.providers.base import Reply
from batchfuse.providers.batch_base import ENDED, FAILED, SUCCEEDED, RemoteBatch
from batchfuse.records import AttemptOutcome, AttemptRecord, ItemState, SpooledImage
from batchfuse.run.outcomes import prepare_outputs
from batchfuse.run.recorder import Recorder
from batchfuse.run.retry import decide
from batchfuse.store.batches import FOREVER, BatchRow, Member

log = logging.getLogger("batchfuse.run")
#: Lines applied per group (one commit each), and the bytes a group may hold at most.
GROUP_LINES, GROUP_BYTES = 64, 32 * 1024 * 1024
DOWNLOAD_TRIES = 5


class Collector:
    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx

    async def poll(self, b: BatchRow) -> RemoteBatch | None:
        """Look at a submitted batch; apply it when it succeeded, hand its items back when it
        failed, was cancelled or expired.  Returns what the API said."""
        ctx = self.ctx
        faultpoints.hit("batch.poll")
        try:
            remote = await ctx.backend.get(b.remote_name or "")
        except TransientError as exc:
            log.warning("looking at batch %s failed (%s); trying again later", b.display_name, exc.message)
            return None
        values: dict[str, Any] = dict(state=remote.state, checked_at=time.time(), result_file=remote.result_file,
                                      succeeded_count=remote.succeeded, failed_count=remote.failed)
        if remote.state in ENDED and b.state not in ENDED:
            values["ended_at"] = time.time()
        await ctx.q(ctx.batches.update, b.id, **values)
        reason = f"batch {b.display_name} ended {remote.state.upper()}" + (f": {remote.error}" if remote.error else "")
        if remote.state == SUCCEEDED:
            await self.apply(await ctx.q(ctx.batches.batch, b.id))  # type: ignore[arg-type]
        elif remote.state in ENDED and remote.result_file:  # ended early, with what it made so far
            await self.apply(await ctx.q(ctx.batches.batch, b.id), remote.state, reason)  # type: ignore[arg-type]
        elif remote.state in ENDED:  # a FAILED batch counts as an attempt, so it cannot loop
            n = await ctx.q(ctx.batches.hand_back, b.id, remote.state, reason, "returned",
                            ctx.max_attempts if remote.state == FAILED else None)
            log.warning("%s; its %s items are pending again", reason, n,
                        extra={"event": "batch_ended", "batch": b.display_name, "state": remote.state, "returned": n})
        return remote

    async def download(self, b: BatchRow) -> bool:
        """The results file, whole, on disk (resumed where a failed download stopped; not
        asked for again once a download has finished, when applying it resumes)."""
        ctx = self.ctx
        path = ctx.work_file(b.id, "results")
        if b.download_offset and _size(path) == b.download_offset:
            return True
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                size = await ctx.backend.download(b.result_file or "", path)
            except GoneError as exc:  # expired at the API (48 h): what was not applied runs again
                path.unlink(missing_ok=True)
                n = await ctx.q(ctx.batches.hand_back, b.id, "expired", f"batch {b.display_name}: {exc.message}")
                log.warning("batch %s: %s; its %d items not yet applied are pending again", b.display_name,
                            exc.message, n, extra={"event": "batch_results_gone", "batch": b.display_name})
                return False
            except TransientError as exc:
                log.warning("downloading the results of %s failed (%s); resuming", b.display_name, exc.message)
                if await ctx.pause(min(30.0, 0.5 * 2 ** attempt)):
                    return False
                continue
            await ctx.q(ctx.batches.update, b.id, download_offset=size)
            return True
        return False

    async def apply(self, b: BatchRow, end_state: str = "applied", reason: str | None = None) -> None:
        """Apply a batch's results file; items with no line in it go back to pending."""
        ctx = self.ctx
        if not b.result_file or not await self.download(b):
            return
        path = ctx.work_file(b.id, "results")
        recorder = Recorder(ctx.db, ctx.run_id, b.owner, FOREVER, ctx.outputs)
        try:
            with path.open("rb") as f:
                f.seek(b.applied_offset)
                offset = b.applied_offset
                while not ctx.stop_requested():
                    group: list[dict[str, Any] | None] = []
                    size = 0
                    while len(group) < GROUP_LINES and size < GROUP_BYTES:
                        raw = f.readline()
                        if not raw:
                            break
                        offset += len(raw)
                        size += len(raw)
                        if raw.strip():
                            group.append(_json_line(raw))
                    if not group:
                        break
                    await self._apply_group(b, group, offset, recorder)
                else:
                    return
        finally:
            await recorder.close()
        n = await ctx.q(ctx.batches.hand_back, b.id, end_state,
                        reason or f"no result line for it in batch {b.display_name}", "missing")
        if n:
            log.warning("batch %s: %d items had no result line; they are pending again", b.display_name, n)
        path.unlink(missing_ok=True)
        log.info("batch %s applied", b.display_name, extra={"event": "batch_applied", "batch": b.display_name})

    async def _apply_group(self, b: BatchRow, group: list[dict[str, Any] | None], offset: int,
                           recorder: Recorder) -> None:
        ctx = self.ctx
        keys = [str(line.get("key")) for line in group if line is not None and line.get("key") is not None]
        members: dict[str, Member] = await ctx.q(ctx.batches.members, b.id, keys)  # type: ignore[assignment]
        outcomes: dict[str, str] = {}
        unknown = duplicate = 0
        tasks = []
        for line in group:
            key = None if line is None or line.get("key") is None else str(line.get("key"))
            member = members.get(key) if key is not None else None
            if member is None:
                unknown += 1
                log.warning("batch %s: a result line with unknown key %r was not applied", b.display_name,
                            (key or "")[:200], extra={"event": "batch_unknown_line", "batch": b.display_name})
                continue
            if key in outcomes or member.applied:
                duplicate += 1
                log.warning("batch %s: key %r came twice; the second line was not applied", b.display_name,
                            key[:200], extra={"event": "batch_duplicate_line", "batch": b.display_name})
                continue
            if not member.open:  # re-planned meanwhile, or recorded just before a crash
                outcomes[key] = "stale"
                continue
            result = ctx.backend.result_line(line)  # type: ignore[arg-type]
            outcomes[key] = "pending"
            tasks.append((key, self._apply_line(member, result.reply, result.error, recorder)))
        done = await asyncio.gather(*(t for _, t in tasks), return_exceptions=True)
        for (key, _), outcome in zip(tasks, done, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            outcomes[key] = outcome
        await ctx.q(ctx.batches.mark_applied, b.id, outcomes, offset, unknown, duplicate)
        faultpoints.hit("batch.apply")
        ctx.outcome.unknown_lines += unknown
        ctx.outcome.duplicate_lines += duplicate

    async def _apply_line(self, m: Member, reply: Reply | None, error: ProviderError | None,
                          recorder: Recorder) -> str:
        ctx, item, now = self.ctx, m.item, time.time()
        ctx.stats.requests += 1  # one line of a batch: one request, billed at the batch price
        base = dict(item_id=item.id, number=m.attempt, spec_hash=item.spec_hash, started_at=now, ended_at=now)
        if reply is not None:
            try:
                pending = await asyncio.to_thread(self._prepare, m, reply)
            except ImageProblem as exc:
                error = TransientError(f"an image in the result is not readable: {exc}", status=200, code="bad_image")
            else:
                return await self._record_reply(m, reply, pending, recorder, base)
        assert error is not None
        decision = decide(ctx.policy, error.error_class, m.attempt, no_image=isinstance(error, NoImageError))
        state = ItemState.pending if decision.item_state == ItemState.running else decision.item_state
        await recorder.submit(AttemptRecord(
            **base, outcome=AttemptOutcome.of_error(error.error_class), item_state=state, counts=decision.counts,
            http_status=error.status, error_class=decision.final_class or error.error_class.value,
            error_message=f"[batch] {error.message}", block_reason=getattr(error, "block_reason", None),
        ))
        if state == ItemState.failed:
            ctx.stats.failed += 1
        return error.error_class.value if error.error_class != ErrorClass.fatal else "transient"

    async def _record_reply(self, m: Member, reply: Reply, pending: PendingOutputs, recorder: Recorder,
                            base: dict[str, Any]) -> str:
        record = AttemptRecord(
            **base, outcome=AttemptOutcome.succeeded, item_state=ItemState.succeeded, counts=True, http_status=200,
            prompt_tokens=reply.prompt_tokens, output_tokens=reply.output_tokens, total_tokens=reply.total_tokens,
            thoughts_tokens=reply.thoughts_tokens, finish_reason=reply.finish_reason, text="\n".join(reply.texts) or None,
        )
        unwritten = AttemptRecord(
            **base, outcome=AttemptOutcome.spooled, item_state=ItemState.pending, counts=True, error_class="output",
            error_message="; the image is kept in the spool and the next run writes it without paying again",
            spool=tuple(SpooledImage(i, data) for i, data in enumerate(reply.images, start=1)),
        )
        try:
            dropped, _outputs = await recorder.submit(record, pending, unwritten)
        except OutputError:
            self.ctx.stats.spooled += 1
            raise
        if dropped is not None:
            return str(dropped.value)
        self.ctx.stats.succeeded += 1
        self.ctx.outcome.applied += 1
        return "succeeded"

    def _prepare(self, m: Member, reply: Reply) -> PendingOutputs:
        ctx = self.ctx
        return prepare_outputs(m.item, reply, ctx.output_template, ctx.model, ctx.job.name)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _json_line(raw: bytes) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None
