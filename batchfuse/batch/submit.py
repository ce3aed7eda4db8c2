"""Submitting batches exactly once.

Order of a submission, each step durable before the next costs anything:

1. claim runnable items (the usual lease), then in one transaction record the batch (state
   ``preparing``, a display name unique to it: job + fresh token) and move its items under
   the batch's never-expiring lease (``batch:<token>``), with each line's key
   (``<item key>#<attempt>``);
2. upload the reference images (once each) and the input JSONL (resumable upload);
3. ``create`` — fault point ``batch.create`` just before, ``batch.created`` just after the
   server accepted and before the answer is recorded;
4. record the batch's remote name.

After a crash anywhere, the next run lists the account's batches and adopts the one whose
display name matches a ``preparing`` row; only when none does is the batch created (from
the same recorded items).  A 429, 5xx or timeout on ``create`` waits, then lists again
before creating again: ``create`` is never repeated for a batch the API already has.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time

from batchfuse import faultpoints
from batchfuse.batch.context import BatchContext
from batchfuse.batch.refs import RefUploads
from batchfuse.errors import FatalError, ProviderError, RejectedError, TransientError
from batchfuse.providers.batch_base import RemoteBatch
from batchfuse.records import ClaimedItem
from batchfuse.store.batches import BatchRow

log = logging.getLogger("batchfuse.run")
#: Tries of ``create`` for one batch in one run (each after a listing found no such batch).
CREATE_TRIES = 6


def display_name(job_name: str) -> str:
    """``batchfuse-<job>-<token>``: unique to one batch, found again by listing."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", job_name)[:80]
    return f"batchfuse-{slug}-{secrets.token_hex(8)}"


def line_key(item: ClaimedItem) -> str:
    """A result line's key: the item key and the attempt it is (``#`` then a number, read from the right)."""
    return f"{item.key}#{item.attempts + 1}"


class Submitter:
    def __init__(self, ctx: BatchContext, refs: RefUploads) -> None:
        self.ctx = ctx
        self.refs = refs
        #: Items found with a paid result in the spool: written by an online pass, never sent.
        self.spooled_keys: list[str] = []
        #: A ``create`` of the batch being launched ended without a definite answer.
        self._uncertain = False

    async def find_remote(self, names: set[str]) -> dict[str, RemoteBatch]:
        """The account's batches with these display names (one listing, stopped when all are found)."""
        found: dict[str, RemoteBatch] = {}
        if not names:
            return found
        async for remote in self.ctx.backend.list():
            if remote.display_name in names and remote.display_name not in found:
                found[remote.display_name] = remote
                if len(found) == len(names):
                    break
        return found

    async def adopt_or_launch(self, preparing: list[BatchRow]) -> None:
        """Batches recorded but with no remote name: adopt the API's, else create them now."""
        if not preparing:
            return
        found = await self.find_remote({b.display_name for b in preparing})
        for b in preparing:
            remote = found.get(b.display_name)
            if remote is not None:
                self.ctx.outcome.adopted += 1
                log.warning("batch %s adopted: it was created before the last run ended (%s)",
                            b.display_name, remote.name,
                            extra={"event": "batch_adopted", "batch": b.display_name, "remote": remote.name})
                await self._record_created(b, remote)
            else:
                await self.launch(b)

    async def submit_new(self) -> int:
        """Claim what is runnable and submit it in batches of ``max_requests``; returns items submitted."""
        ctx, total, after = self.ctx, 0, -1
        while not ctx.stop_requested():
            limit = ctx.config.max_requests
            if ctx.budget_items is not None:
                limit = min(limit, ctx.budget_items)
                if limit <= 0:
                    break
            claimed: list[ClaimedItem] = await ctx.db.claim(
                ctx.job, ctx.runner_id, limit, ctx.lease_s, ctx.max_attempts, after, ctx.only_keys
            )
            if not claimed:
                break
            after = claimed[-1].ordinal  # in plan order: what is handed back is not claimed again here
            spooled = [c for c in claimed if c.spooled]
            if spooled:  # a paid result waits for these: written online, never sent again
                self.spooled_keys += [c.key for c in spooled]
                await ctx.db.release(ctx.runner_id, [c.id for c in spooled])
                claimed = [c for c in claimed if not c.spooled]
            if not claimed:
                continue
            name = display_name(ctx.job.name)
            members = [(c.id, line_key(c), c.attempts + 1, c.spec_hash) for c in claimed]
            batch_id = await ctx.q(ctx.batches.new_batch, ctx.job, name, ctx.backend.kind, ctx.model,
                                   ctx.runner_id, members)
            if batch_id is None:  # a lease was lost meanwhile (another runner took over)
                await ctx.db.release(ctx.runner_id, [c.id for c in claimed])
                continue
            if ctx.budget_items is not None:
                ctx.budget_items -= len(claimed)
            total += len(claimed)
            row: BatchRow = await ctx.q(ctx.batches.batch, batch_id)  # type: ignore[assignment]
            await self.launch(row)
        return total

    async def launch(self, b: BatchRow) -> None:
        """Upload a recorded batch's references and input file and create it (exactly once).
        A fatal answer (a wrong key, an unknown model) is a definite no: no batch exists, its
        items go back to pending, and the run stops."""
        self._uncertain = False
        try:
            await self._launch(b)
        except FatalError as exc:
            if not self._uncertain:  # else an earlier create may have been taken: the next run lists
                await self.ctx.q(self.ctx.batches.hand_back, b.id, "cancelled", f"not created: {exc.message}")
            raise

    async def _launch(self, b: BatchRow) -> None:
        ctx = self.ctx
        members = [m for m in await ctx.q(ctx.batches.member_items, b.id) if m.open]  # type: ignore[attr-defined]
        if not members:  # every item was re-planned (or taken) since the batch was recorded
            await ctx.q(ctx.batches.hand_back, b.id, "cancelled", "its items changed before it was created")
            return
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        path = ctx.work_file(b.id, "input")
        with path.open("w", encoding="utf-8") as f:
            for m in members:
                files = await self.refs.files_for(m.item.spec.images)
                f.write(json.dumps(ctx.backend.request_line(m.line_key, m.item.spec, files), ensure_ascii=False))
                f.write("\n")
        input_file = await ctx.backend.upload(path, "application/jsonl", b.display_name)
        await ctx.q(ctx.batches.update, b.id, input_file=input_file.name)
        remote = None
        for attempt in range(1, CREATE_TRIES + 1):
            faultpoints.hit("batch.create")
            try:
                remote = await ctx.backend.create(b.display_name, input_file)
                break
            except RejectedError as exc:  # this input will not be taken as it is
                n = await ctx.q(ctx.batches.hand_back, b.id, "failed", f"the API refused the batch: {exc.message}")
                log.error("batch %s refused by the API (%s); its %s items are pending again",
                          b.display_name, exc.message, n)
                path.unlink(missing_ok=True)
                return
            except FatalError:
                raise
            except (TransientError, ProviderError) as exc:
                self._uncertain = True
                wait = exc.retry_after if getattr(exc, "retry_after", None) else min(60.0, 2.0 ** attempt)
                log.warning("creating batch %s failed (%s); waiting %.0f s, then looking whether it exists",
                            b.display_name, exc.message, wait)
                if await ctx.pause(wait) or attempt == CREATE_TRIES:
                    return  # still "preparing": the next run lists, adopts or creates
                remote = (await self.find_remote({b.display_name})).get(b.display_name)
                if remote is not None:
                    self.ctx.outcome.adopted += 1
                    break
        if remote is None:
            return
        faultpoints.hit("batch.created")
        self.ctx.outcome.created += 1
        await self._record_created(b, remote)
        log.info("batch %s submitted: %d items (%s)", b.display_name, b.request_count, remote.name,
                 extra={"event": "batch_submitted", "batch": b.display_name, "remote": remote.name,
                        "items": b.request_count})

    async def _record_created(self, b: BatchRow, remote: RemoteBatch) -> None:
        await self.ctx.q(self.ctx.batches.update, b.id, remote_name=remote.name, state=remote.state,
                         submitted_at=time.time(), checked_at=time.time())
        self.ctx.work_file(b.id, "input").unlink(missing_ok=True)  # the API has it
