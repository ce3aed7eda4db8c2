"""What becomes of one attempt: a result written (or spooled when it cannot be), a failure
recorded with the retry decision, outputs adopted from disk, a spooled result written.

:class:`Outcomes` is the part of the :class:`~batchfuse.scheduler.Scheduler` that turns an
attempt's end into an :class:`~batchfuse.store.records.AttemptRecord` for the recorder.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchfuse.errors import BatchfuseError, ErrorClass, NoImageError, OutputError, ProviderError, StoreError
from batchfuse.outputs.files import OutputFolder, PendingOutputs
from batchfuse.outputs.names import output_name
from batchfuse.outputs.png import PreparedImage, prepare
from batchfuse.providers.base import Reply
from batchfuse.records import AttemptOutcome, AttemptRecord, ClaimedItem, ItemState, SpooledImage
from batchfuse.run.recorder import Recorder
from batchfuse.run.retry import decide
from batchfuse.store.aio import AsyncStore

if TYPE_CHECKING:
    from batchfuse.run.scheduler import SchedulerConfig
    from batchfuse.run.stats import RunStats

log = logging.getLogger("batchfuse.run")
#: Replies up to this size are checked on the event loop (a thread hop costs more).
PREPARE_INLINE_BYTES = 256 * 1024


def _attempt_record(item: ClaimedItem, number: int, started: float, **fields: Any) -> AttemptRecord:
    """An attempt of ``item`` that ends now."""
    return AttemptRecord(
        item_id=item.id, number=number, spec_hash=item.spec_hash, started_at=started, ended_at=time.time(), **fields
    )


def _log_attempt(
    item: str, number: int, status: int | None, cls: str, latency_ms: float,
    outputs: list[str] | None = None, error: str | None = None,
) -> None:
    """One log line per attempt; the fields go into JSON logs as they are."""
    detail = f"outputs={','.join(outputs)}" if outputs else f"error={error}" if error else ""
    log.info(
        "attempt item=%s n=%d status=%s class=%s latency_ms=%.0f %s", item, number, status, cls, latency_ms, detail,
        extra={"event": "attempt", "item": item, "attempt": number, "status": status, "class": cls,
               "latency_ms": round(latency_ms, 1), "outputs": outputs or [], "error": error},
    )


class Outcomes:
    """Recording how attempts end (a mixin of the scheduler, which provides these attributes)."""

    config: SchedulerConfig
    db: AsyncStore
    outputs: OutputFolder
    recorder: Recorder
    stats: RunStats
    _resume: dict[int, dict[str, Any] | None]
    _rng: random.Random
    _claim_again: bool

    if TYPE_CHECKING:

        def stop(self, reason: str, error: BatchfuseError | None = None) -> None: ...

    async def _adopt(self, item: ClaimedItem) -> bool:
        """Record outputs a dead run wrote but did not record, instead of sending again."""
        values = item.spec.naming_values
        template = self.config.output_template
        found = await self.outputs.adopt(lambda n, count: output_name(template, values, n, count), item.spec_hash)
        if not found:
            return False
        record = _attempt_record(
            item, item.attempts + 1, time.time(), outcome=AttemptOutcome.adopted, item_state=ItemState.succeeded, counts=False,
            error_message="outputs already on disk from an unrecorded attempt; not sent again",
            outputs=tuple(found),
        )
        _log_attempt(item.key, record.number, None, AttemptOutcome.adopted.value, 0.0, outputs=[o.path for o in found])
        dropped, _ = await self.recorder.submit(record)
        if dropped is None:
            self.stats.succeeded += 1
            self.stats.adopted += 1
        return True

    async def _unspool(self, item: ClaimedItem, number: int) -> bool:
        """Write the paid result an earlier attempt could not write, instead of paying again."""
        images = await self.db.spooled(item.id, item.spec_hash)
        if not images:
            return False
        reply = Reply(
            images=[i.data for i in images],
            source_urls=[i.source_url for i in images],
            source_at=images[0].source_at,
        )
        await self._finish(item, number, time.time(), 0.0, reply, await self._prepare(item, reply), spooled=True)
        return True

    async def _failed(
        self, item: ClaimedItem, number: int, started: float, latency_ms: float, error: ProviderError
    ) -> float | None:
        decision = decide(
            self.config.policy,
            error.error_class,
            number,
            retry_after_s=error.retry_after,
            no_image=isinstance(error, NoImageError),
            rng=self._rng,
        )
        record = _attempt_record(
            item,
            number,
            started,
            outcome=AttemptOutcome.of_error(error.error_class),
            item_state=decision.item_state,
            counts=decision.counts,
            http_status=error.status,
            error_class=decision.final_class or error.error_class.value,
            error_message=error.message,
            block_reason=error.block_reason,
            latency_ms=latency_ms,
            resume=error.resume,
        )
        self._resume[item.id] = error.resume
        _log_attempt(item.key, number, error.status, error.error_class.value, latency_ms, error=error.message)
        await self.recorder.submit(record)
        if error.error_class is ErrorClass.fatal:
            self.stop(error.message, error)
            return None
        if decision.item_state == ItemState.failed:
            self.stats.failed += 1
        return decision.delay_s if decision.retry else None

    async def _finish(
        self, item: ClaimedItem, number: int, started: float, latency_ms: float, reply: Reply,
        pending: PendingOutputs, *, spooled: bool = False,
    ) -> int:
        """Write and record a successful attempt (or a spooled result); returns the images made.

        When the outputs cannot be written the run stops; a fresh result goes into the spool
        with its attempt, so the next run writes it without paying again.  Either way the
        output failure counts as an attempt: a folder that stays broken ends the item as
        failed after ``max_attempts`` instead of looping.
        """
        record = _attempt_record(
            item,
            number,
            started,
            outcome=AttemptOutcome.unspooled if spooled else AttemptOutcome.succeeded,
            item_state=ItemState.succeeded,
            counts=not spooled,
            http_status=None if spooled else reply.http_status,
            latency_ms=None if spooled else latency_ms,
            prompt_tokens=reply.prompt_tokens,
            output_tokens=reply.output_tokens,
            total_tokens=reply.total_tokens,
            thoughts_tokens=reply.thoughts_tokens,
            finish_reason=reply.finish_reason,
            text="\n".join(reply.texts) or None,
        )
        last = number >= self.config.policy.max_attempts
        kept = "kept in the spool" if not spooled else "still in the spool"
        unwritten = replace(
            record,
            outcome=AttemptOutcome.output_error if spooled else AttemptOutcome.spooled,
            item_state=ItemState.failed if last else ItemState.pending,
            counts=True,
            error_class="output",
            error_message=(
                f"; the image is {kept}: `run --retry-failed` writes it without paying again once the folder is fixed"
                if last else f"; the image is {kept} and the next run writes it without paying again"
            ),
            spool=() if spooled else tuple(
                SpooledImage(i, data, url, reply.source_at)
                for i, (data, url) in enumerate(
                    zip(reply.images, reply.source_urls or [None] * len(reply.images), strict=False), start=1
                )
            ),
        )
        try:
            dropped, outputs = await self.recorder.submit(record, pending, unwritten)
        except OutputError as exc:
            if not spooled:
                self.stats.spooled += 1
            if last:
                self.stats.failed += 1
            _log_attempt(item.key, number, record.http_status, "output", latency_ms, error=exc.message)
            self.stop(f"{exc.message}{unwritten.error_message}", exc)
            return 0 if spooled else len(pending.images)  # paid for, all the same
        _log_attempt(
            item.key, number, record.http_status, "unspooled" if spooled else "ok", latency_ms,
            outputs=[o.path for o in outputs],
        )
        if dropped is not None:
            self._claim_again = self._claim_again or dropped == AttemptOutcome.superseded
            why = "its spec changed" if dropped == AttemptOutcome.superseded else "another runner took it over"
            log.warning("result of %s dropped: %s while it was in flight; it runs again", item.key, why)
            return 0
        self.stats.succeeded += 1
        return len(outputs)

    async def _record_interrupted(self, item: ClaimedItem, number: int, started: float, internal: bool = False) -> None:
        record = _attempt_record(
            item,
            number,
            started,
            outcome=AttemptOutcome.interrupted,
            item_state=ItemState.pending,
            counts=internal,
            error_class="internal" if internal else ErrorClass.interrupted.value,
            error_message="an internal error ended the attempt" if internal
            else "cancelled while in flight (the run was stopped)",
        )
        try:
            await asyncio.shield(self.recorder.submit(record))
        except StoreError as exc:
            log.warning("could not record interrupted attempt of %s: %s", item.key, exc)

    async def _prepare(self, item: ClaimedItem, reply: Reply) -> PendingOutputs:
        """Check every image of a reply and give it its name and metadata (a large PNG is staged
        in a temp file as it is decoded); in a worker thread when the images are large enough
        to block the event loop."""
        if sum(len(data) for data in reply.images) > PREPARE_INLINE_BYTES:
            return await asyncio.to_thread(self._prepare_now, item, reply)
        return self._prepare_now(item, reply)

    def _prepare_now(self, item: ClaimedItem, reply: Reply) -> PendingOutputs:
        return prepare_outputs(
            item, reply, self.config.output_template, self.config.model, self.config.job_name, self.outputs.temp_path
        )


def prepare_outputs(
    item: ClaimedItem, reply: Reply, template: str, model: str, job_name: str,
    temp_path: Callable[[], Path] | None = None,
) -> PendingOutputs:
    """Check every image of ``item``'s reply and give it its name and metadata (the PNG text a
    rerun adopts it by); with ``temp_path``, a large PNG is staged in a temp file as it is decoded."""
    values = item.spec.naming_values
    count = len(reply.images)
    names = [output_name(template, values, n, count) for n in range(1, count + 1)]
    text = {
        "prompt": item.spec.prompt,
        "model": model,
        "batchfuse:job": job_name,
        "batchfuse:item": item.key,
        "batchfuse:spec": item.spec_hash,
    }
    images: list[PreparedImage] = []
    try:
        for n, (data, name) in enumerate(zip(reply.images, names, strict=True), start=1):
            images.append(prepare(data, name, {**text, "batchfuse:image": f"{n}/{count}"}, temp_path))
    except BaseException:
        for img in images:  # an image of the reply is bad: the ones staged before it go
            img.discard()
        raise
    return PendingOutputs(names, images, reply.source_urls, reply.source_at, text=text)
