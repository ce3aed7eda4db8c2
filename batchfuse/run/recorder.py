"""Getting finished attempts into the store without blocking the event loop.

:class:`Recorder` commits finished attempts in groups, on the store's worker thread
(:class:`~batchfuse.store.aio.AsyncStore`): one transaction for whatever finished while the
previous one was committing, so a busy run makes few commits and a quiet one commits at once.  Each item waits
for its own commit: nothing counted as done lives only in memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from batchfuse.errors import BatchfuseError, ErrorClass, OutputError, StoreError
from batchfuse.outputs.files import OutputFolder, PendingOutputs, fsync_dirs
from batchfuse.outputs.stage import decoded
from batchfuse.records import AttemptOutcome, AttemptRecord, ItemState, OutputRecord
from batchfuse.store.aio import AsyncStore

T = TypeVar("T")


#: What a submitted attempt came to: None when it was recorded as it was, else why its
#: result was dropped (``lease_lost``, ``superseded``); and the outputs written.
Recorded = tuple[AttemptOutcome | None, tuple[OutputRecord, ...]]


@dataclass
class _Entry:
    record: AttemptRecord
    pending: PendingOutputs | None
    #: What to record instead when ``pending`` cannot be written (None: as interrupted).
    unwritten: AttemptRecord | None
    future: asyncio.Future[Recorded]


class Recorder:
    """Group commit of finished attempts, with their output files.

    After the first attempt of a group arrives, the recorder lingers ``linger_s`` (or until
    ``max_group`` are waiting) so that a busy run handles groups rather than single attempts.
    A group takes one trip to the database thread, which writes the group's files (each
    fsynced, renamed into place, each folder fsynced once), then commits the group's records:
    files always take their final names before the records that name them are committed.
    What waits in a group is never lost to a crash in a way that costs money: once its files
    are in place, the next run adopts them.
    """

    def __init__(
        self,
        db: AsyncStore,
        run_id: int,
        runner_id: str,
        lease_s: float,
        outputs: OutputFolder,
        *,
        shared: bool = False,
        linger_s: float = 0.025,
        max_group: int = 256,
    ) -> None:
        self.db, self.run_id, self.runner_id, self.lease_s = db, run_id, runner_id, lease_s
        self.outputs, self.shared = outputs, shared
        self.linger_s, self.max_group = linger_s, max_group
        self.commits = 0
        self._queue: list[_Entry] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._loop(), name="batchfuse-recorder")

    async def submit(
        self, record: AttemptRecord, pending: PendingOutputs | None = None, unwritten: AttemptRecord | None = None
    ) -> Recorded:
        """Write ``pending`` and record ``record``; returns (None, or why the result was dropped;
        the outputs written).  Raises OutputError when the files could not be written: the
        attempt is then recorded as ``unwritten`` (with the error's message; it carries the
        reply's images for the spool), or as interrupted when that is None."""
        if self._closed:
            raise StoreError("the run's recorder is closed")
        fut: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(record, pending, unwritten, fut))
        self._wake.set()
        return await asyncio.shield(fut)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue and not self._closed and len(self._queue) < self.max_group:
                await asyncio.sleep(self.linger_s)
            batch, self._queue = self._queue, []
            if not batch and self._closed:
                return
            if not batch:
                continue
            try:
                results = await self._commit_group(batch)
            except BaseException as exc:  # the database failed: every waiter hears it
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(exc if isinstance(exc, BatchfuseError) else StoreError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            self.commits += 1
            for entry, result in zip(batch, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, OutputError):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)

    async def _commit_group(self, batch: list[_Entry]) -> list[Recorded | OutputError]:
        if self.outputs.remote:  # uploads on the event loop, between two DB trips
            from batchfuse.run.remote_commit import commit_remote

            return await commit_remote(self, batch)
        return await self.db.in_thread(self._commit, batch)

    def _commit(self, batch: list[_Entry]) -> list[Recorded | OutputError]:
        """In the database thread: write the group's files, then record the group.

        Files are written only for items this runner still holds under the spec the result
        was made from; the store checks both again in the transaction that records them.
        """
        store = self.db.store
        to_write = [e.record.item_id for e in batch if e.pending is not None]
        current = store.held_specs(to_write, self.runner_id, self.lease_s, extend=self.shared) if to_write else {}
        records: list[AttemptRecord] = []
        errors: dict[int, OutputError] = {}
        dirs: set[Path] = set()
        for i, entry in enumerate(batch):
            rec = entry.record
            if entry.pending is not None and current.get(rec.item_id) == rec.spec_hash:
                try:
                    rec = replace(rec, outputs=tuple(self.outputs.write(entry.pending, dirs)))
                except OutputError as exc:
                    errors[i] = exc
                    rec = _unwritten(entry, exc)
            elif entry.pending is not None:  # not this runner's any more: its staged files go
                entry.pending.discard()
            records.append(rec)
        try:
            fsync_dirs(dirs)
        except OutputError as exc:  # the renames may not survive a crash: keep the images too
            for i, entry in enumerate(batch):
                if entry.pending is not None and records[i].outputs and i not in errors:
                    errors[i] = exc
                    records[i] = _unwritten(entry, exc)
        dropped = store.record(self.run_id, self.runner_id, records, self.lease_s)
        return [errors.get(i, (dropped.get(rec.item_id), rec.outputs)) for i, rec in enumerate(records)]

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self._task


def _unwritten(entry: _Entry, exc: OutputError) -> AttemptRecord:
    """What is recorded for an attempt whose outputs could not be written."""
    if entry.unwritten is not None:
        return replace(
            entry.unwritten,
            error_message=f"{exc.message}{entry.unwritten.error_message or ''}",
            # an image still in the reply's body as base64 is decoded for the spool (the rare path)
            spool=tuple(replace(img, data=decoded(img.data)) for img in entry.unwritten.spool),
        )
    return replace(
        entry.record, outcome=AttemptOutcome.interrupted, item_state=ItemState.pending, counts=False,
        error_class=ErrorClass.interrupted.value, error_message=exc.message,
    )
