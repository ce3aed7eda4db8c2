"""Fault points for the reliability tests, the way SQLite's test suite injects I/O errors.

``BATCHFUSE_FAULTPOINT=NAME:N:ACTION`` makes the N-th time the code passes ``hit(NAME)`` do
ACTION: ``kill`` (SIGKILL this process), ``enospc`` / ``eio`` / ``erofs`` (raise that
OSError), ``boom`` (raise :class:`FaultPointBoom`, an exception nothing expects: a bug), or
``sleep=SECONDS``.  Unset (always, outside tests) a hit costs one comparison.

Points: ``output.write`` (a temp file written, before fsync), ``output.fsync``,
``output.rename`` (before a temp file takes its final name), ``db.record`` (inside the
transaction that records finished attempts, before its commit), ``item.attempt`` (an item's
task, before each attempt); batch mode: ``batch.create`` (before ``create``), ``batch.created``
(the server accepted, before its answer is recorded), ``batch.poll``, ``batch.download`` (after
each piece of a results file), ``batch.apply`` (after each group of result lines).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

_SPEC = os.environ.get("BATCHFUSE_FAULTPOINT", "")
_NAME, _, _REST = _SPEC.partition(":")
_COUNT_TEXT, _, _ACTION = _REST.partition(":")
_lock = threading.Lock()
_hits = 0
_ERRORS = {"enospc": errno.ENOSPC, "eio": errno.EIO, "erofs": errno.EROFS}


class FaultPointBoom(Exception):
    """An unexpected exception injected by a fault point (stands for a bug)."""


def hit(name: str) -> None:
    """Pass fault point ``name``; does the configured action on its N-th pass."""
    global _hits
    if name != _NAME:
        return
    with _lock:
        _hits += 1
        due = _hits == int(_COUNT_TEXT or 1)
    if not due:
        return
    if _ACTION == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif _ACTION in _ERRORS:
        code = _ERRORS[_ACTION]
        raise OSError(code, os.strerror(code))
    elif _ACTION == "boom":
        raise FaultPointBoom(f"fault point {name}: boom")
    elif _ACTION.startswith("sleep="):
        time.sleep(float(_ACTION.split("=", 1)[1]))
