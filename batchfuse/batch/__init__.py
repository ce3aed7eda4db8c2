"""Batch mode: items sent through a provider's Batch API (half price, within 24 h) instead of
one request each, crash-safe and never billed twice.

::

    submit.py   claim items, record the batch and its items, upload, create (or adopt) it
    refs.py     reference images uploaded once through the Files API, expiry tracked
    collect.py  poll batches, download results to disk (Range resume), apply them line by line
    runner.py   the loop of one run: adopt, collect, submit, wait, fall back online

Only :mod:`batchfuse.run.job` (the composition root) imports this package; it imports the
stages below it (records, errors, plan, providers, outputs, store, run's recorder and retry).
"""

from batchfuse.batch.runner import BatchContext, BatchOutcome, cancel_live_batches, run_batches

__all__ = ["BatchContext", "BatchOutcome", "cancel_live_batches", "run_batches"]
