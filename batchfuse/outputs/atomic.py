"""The one atomic file write: a temp file beside the target, renamed over it only when complete."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temp_name(path: Path) -> Path:
    """The temp file beside ``path`` (hidden, unique per process and thread, ending ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb", *, fsync: bool = False, **open_args: Any) -> Iterator[IO[Any]]:
    """A file that appears under ``path`` only once written in full: whatever goes wrong
    (an error, Ctrl-C, a full disk), the previous file is intact and no partial one is left.
    ``fsync`` makes the content durable before the rename (outputs that cost money)."""
    tmp = temp_name(path)
    try:
        with open(tmp, mode, **open_args) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
