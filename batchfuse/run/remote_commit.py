"""A group commit whose outputs go to object storage: leases confirmed, then uploads, then records.

The local folder's group commit (:meth:`~batchfuse.run.recorder.Recorder._commit`) renames
files on the database thread, between the lease check and the commit.  An upload can take
seconds and is retried with backoff, so here the three steps are apart: the leases are
confirmed (and, for runners sharing a job, extended) on the database thread; the group's
uploads run concurrently on the event loop (the heartbeat and the other items go on meanwhile),
each bounded well inside the lease so a stalled upload never lands after another runner took
the item; then the group is recorded on the database thread.  An object is always complete
under its key before the record naming it is committed; a crash in between leaves an object
the next run adopts (HEAD + metadata).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from batchfuse.errors import BatchfuseError, OutputError
from batchfuse.records import AttemptRecord

if TYPE_CHECKING:
    from batchfuse.run.recorder import Recorded, Recorder, _Entry

#: Part of the lease an upload may take (the rest is the margin before another runner may claim).
UPLOAD_SHARE_OF_LEASE = 0.75


async def commit_remote(recorder: Recorder, batch: list[_Entry]) -> list[Recorded | OutputError]:
    from batchfuse.run.recorder import _unwritten

    db, outputs = recorder.db, recorder.outputs
    to_write = [e.record.item_id for e in batch if e.pending is not None]
    current = (
        await db.in_thread(db.store.held_specs, to_write, recorder.runner_id, recorder.lease_s, extend=recorder.shared)
        if to_write else {}
    )
    limit = max(5.0, recorder.lease_s * UPLOAD_SHARE_OF_LEASE)

    async def one(entry: _Entry) -> tuple[AttemptRecord, OutputError | None]:
        rec = entry.record
        if entry.pending is None:
            return rec, None
        if current.get(rec.item_id) != rec.spec_hash:  # not this runner's any more, or re-planned
            entry.pending.discard()
            return rec, None
        try:
            written = await asyncio.wait_for(outputs.upload(entry.pending), timeout=limit)  # type: ignore[attr-defined]
        except asyncio.TimeoutError:
            exc = OutputError(f"cannot upload to {outputs.where}: no answer within {limit:.0f} s")  # type: ignore[attr-defined]
            return _unwritten(entry, exc), exc
        except OutputError as exc:
            return _unwritten(entry, exc), exc
        except BatchfuseError as exc:
            err = OutputError(exc.message)
            return _unwritten(entry, err), err
        return replace(rec, outputs=tuple(written)), None

    done = await asyncio.gather(*(one(e) for e in batch))
    records = [rec for rec, _ in done]
    dropped = await db.in_thread(db.store.record, recorder.run_id, recorder.runner_id, records, recorder.lease_s)
    return [err if err is not None else (dropped.get(rec.item_id), rec.outputs) for rec, err in done]
