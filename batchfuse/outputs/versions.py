"""Kept versions: an output about to be replaced lives on in the versions folder.

When an item's spec changes (a reject in the review, or an edited manifest), its current files
are linked (a hard link: no copy, no second of disk) into ``<output dir>/.batchfuse-versions/``
before the next attempt writes new ones under the stable names.  The new file is renamed over
the stable name, which leaves the linked one untouched: no earlier image is ever destroyed,
and ``out/{item}.png`` is always the newest.  Where hard links are not possible the file is
copied.  ``out/a/b.png`` of version 2 is kept as ``.batchfuse-versions/a/b.v2.png``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from batchfuse.errors import OutputError
from batchfuse.outputs.names import VERSIONS_DIR

__all__ = ["VERSIONS_DIR", "keep_version", "restore_version", "version_name"]


def version_name(name: str, number: int) -> str:
    """Where version ``number`` of the output ``name`` is kept, relative to the output folder."""
    path = PurePosixPath(name)
    return str(PurePosixPath(VERSIONS_DIR, path.parent, f"{path.stem}.v{number}{path.suffix}"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keep_version(root: Path, name: str, number: int, sha256: str) -> str | None:
    """Link (or copy) ``root/name`` to its version name if it still holds the recorded image
    (``sha256``); returns the kept path (relative to ``root``), or None when the file is gone
    or is already another image.  Idempotent: a version already kept is left as it is."""
    src = root / name
    rel = version_name(name, number)
    dest = root / rel
    try:
        if dest.is_file():
            return rel
        if not src.is_file() or _sha256(src) != sha256:
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        raise OutputError(f"cannot keep the earlier version of {src}: {exc.strerror or exc}") from None
    return rel


def restore_version(root: Path, source: str, name: str, sha256: str) -> None:
    """Make ``root/name`` hold a copy of the kept version ``root/source`` (which must still be the
    image recorded, ``sha256``): copied to a temporary file beside it and renamed over the name, so
    the name holds one image or the other, never half, and the kept file stays as it was (a copy,
    not a link: a tool editing the stable name in place cannot change a kept version)."""
    src, dest = root / source, root / name
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        if not src.is_file() or _sha256(src) != sha256:
            raise OutputError(f"the kept version {src} is gone or is not the image recorded; not picked")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot put the kept version {src} at {dest}: {exc.strerror or exc}") from None
