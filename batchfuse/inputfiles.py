"""Bounded reads of the files a job names (manifest, catalog, reference images): regular
files only, opened without blocking, never more than a size cap.

A FIFO, ``/dev/zero``, a symlink to either or a folder is refused with a short reason
instead of being read forever; a file larger than its cap is refused before it is read.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

#: Largest manifest (YAML) read; inline items beyond this belong in a catalog.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: Largest catalog (CSV or JSONL) read; it is streamed, so this bounds time, not memory.
MAX_CATALOG_BYTES = 2 * 1024 * 1024 * 1024
#: Largest reference image read from disk.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class FileProblem(ValueError):
    """A file cannot be read as input; the message says why in a few words."""


def size_text(n: int) -> str:
    """``n`` bytes in the largest whole unit that fits (``16 MiB``)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def open_regular(path: str | os.PathLike[str], limit: int) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file of at most ``limit`` bytes.

    Opened with ``O_NONBLOCK`` so that a FIFO without a writer cannot hang the open, then
    checked on the open descriptor (no race with a swapped path)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileProblem("not found") from None
    except IsADirectoryError:
        raise FileProblem("is a folder, not a file") from None
    except OSError as exc:
        raise FileProblem(f"cannot be read: {exc.strerror}") from None
    except ValueError:  # an embedded NUL
        raise FileProblem("has a NUL byte in its path") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem("is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket or special file"
            raise FileProblem(f"is not a regular file ({kind})")
        if st.st_size > limit:
            raise FileProblem(f"is {size_text(st.st_size)}; at most {size_text(limit)} is read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes (see :func:`open_regular`).

    Reads at most ``limit + 1`` bytes, so a file that grows while it is read is still bounded."""
    with open_regular(path, limit) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileProblem(f"is larger than {size_text(limit)}; at most that is read")
    return data
