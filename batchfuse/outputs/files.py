"""The output folder: a group's files written atomically (temp file, fsync, rename, fsync of the
folder) so that no partial file ever carries a final name, adoption of files left by a crash,
and cleaning up temp files.  Names come from :mod:`batchfuse.outputs.names`, the bytes (with
their PNG metadata) from :mod:`batchfuse.outputs.png`.

Writing is staging then committing (:mod:`batchfuse.outputs.stage`): every image is first a
complete, fsynced temp file in the folder's temp folder (large ones already are when they come
from :func:`~batchfuse.outputs.png.prepare`), then the folder's :class:`LocalTarget` renames
them into place.  A bucket (:mod:`batchfuse.outputs.objecttarget`) uploads the staged files instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchfuse import faultpoints
from batchfuse.errors import OutputError
from batchfuse.outputs.names import TEMP_DIR
from batchfuse.outputs.png import PreparedImage, read_png
from batchfuse.records import OutputRecord


@dataclass(frozen=True)
class PendingOutputs:
    """The images of one successful attempt, ready to be written under their names."""

    names: list[str]
    images: list[PreparedImage]
    source_urls: list[str | None] = field(default_factory=list)
    source_at: float | None = None
    #: The attempt's PNG text (job, item, spec): an object store puts it in the objects' metadata.
    text: Mapping[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """These outputs will not be written: their staged temp files go."""
        for img in self.images:
            img.discard()

    def record(self, i: int, sha256: str, size: int) -> OutputRecord:
        """The record of image ``i`` (0-based) once it is written under its name (``sha256`` and
        ``size``: :meth:`~batchfuse.outputs.png.PreparedImage.digest`)."""
        img = self.images[i]
        return OutputRecord(
            idx=i + 1, path=self.names[i], sha256=sha256, width=img.width, height=img.height, bytes=size,
            source_url=self.source_urls[i] if i < len(self.source_urls) else None, source_at=self.source_at,
        )


class LocalTarget:
    """Commit into a local folder: each staged file renamed to its final path (made inside
    ``root``), folders created as needed; the folders touched are returned for fsync.  A failure
    raises ``OSError`` and leaves the files not yet renamed where they are (the caller removes them)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def final_path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):  # a symlinked folder pointing out
            raise OutputError(f"output {name} would be written outside {self.root}")
        return path

    def commit(self, moves: Sequence[tuple[Path, str]]) -> set[Path]:
        finals = [self.final_path(name) for _, name in moves]  # all checked before any rename
        touched: set[Path] = set()
        for (tmp, _), final in zip(moves, finals, strict=True):
            final.parent.mkdir(parents=True, exist_ok=True)
            faultpoints.hit("output.rename")
            os.replace(tmp, final)
            touched.add(final.parent)
        return touched


class OutputFolder:
    """The job's output folder: atomic writes into it, and cleaning up after a crash."""

    #: Whether outputs leave this machine (a bucket: uploaded by the recorder, not renamed here).
    remote = False

    def __init__(self, root: Path, writer_tag: str = "w") -> None:
        self.root = root
        self.temp = root / TEMP_DIR
        self.writer_tag = writer_tag.replace(":", "_").replace("/", "_")
        self.local = LocalTarget(root)

    def temp_path(self) -> Path:
        """A new temp file's path in the temp folder (made if missing), named after this writer."""
        self.temp.mkdir(parents=True, exist_ok=True)
        return self.temp / f"{self.writer_tag}-{uuid.uuid4().hex}.part"

    def clean_temp(self, only_mine: bool = False) -> int:
        """Remove temp files left by killed runs (or, with ``only_mine``, by this writer);
        returns how many.  The temp folder goes too once it is empty."""
        if not self.temp.is_dir():
            return 0
        removed = 0
        for entry in self.temp.iterdir():
            if only_mine and not entry.name.startswith(self.writer_tag + "-"):
                continue
            try:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        try:
            self.temp.rmdir()
        except OSError:
            pass
        return removed

    def adoptable(self, name_for: Callable[[int, int], str], spec_hash: str) -> list[OutputRecord] | None:
        """Outputs of ``spec_hash`` already on disk under their final names, all of them.

        They are there when a run died after renaming an attempt's files into place but
        before recording it: adopting them means that image is not paid for twice.  A folder
        that cannot even be looked at (name too long, gone, no access) is an OutputError.
        """
        try:
            return self._adoptable(name_for, spec_hash)
        except OSError as exc:
            raise OutputError(f"cannot read outputs in {self.root}: {exc.strerror or exc}") from None

    async def adopt(self, name_for: Callable[[int, int], str], spec_hash: str) -> list[OutputRecord] | None:
        """:meth:`adoptable` from the event loop (in a worker thread: it reads files)."""
        return await asyncio.to_thread(self.adoptable, name_for, spec_hash)

    def _adoptable(self, name_for: Callable[[int, int], str], spec_hash: str) -> list[OutputRecord] | None:
        for first in (name_for(1, 1), name_for(1, 2)):
            found = read_png(self.root / first) if (self.root / first).is_file() else None
            if found is None or found.text.get("batchfuse:spec") != spec_hash:
                continue
            count = int(found.text.get("batchfuse:image", "1/1").partition("/")[2] or 1)
            records = []
            for i in range(1, count + 1):
                name = name_for(i, count)
                png = found if name == first else read_png(self.root / name)  # each file read once
                if png is None or png.text.get("batchfuse:spec") != spec_hash:
                    return None
                records.append(OutputRecord(i, name, hashlib.sha256(png.data).hexdigest(), png.width, png.height,
                                            len(png.data)))
            return records
        return None

    def final_path(self, name: str) -> Path:
        return self.local.final_path(name)

    def write(self, pending: PendingOutputs, dirs: set[Path] | None = None) -> list[OutputRecord]:
        """Write every image of one attempt; all or none get their final names.

        Images still in memory are staged first (temp file, fsync); then the target commits
        them all.  With ``dirs``, the folders that received files are added to it and left for
        the caller to fsync once for a whole group (:func:`fsync_dirs`); without, they are
        fsynced here.  On any failure no staged file of the attempt is left behind.
        """
        staged: list[tuple[Path, str]] = [(img.staged.path, name) for name, img in
                                          zip(pending.names, pending.images, strict=True) if img.staged is not None]
        records: list[OutputRecord] = []
        try:
            for i, (name, img) in enumerate(zip(pending.names, pending.images, strict=True)):
                if img.staged is None:
                    tmp = self.temp_path()
                    with open(tmp, "wb") as f:
                        staged.append((tmp, name))
                        f.write(img.payload)
                        f.flush()
                        faultpoints.hit("output.write")
                        faultpoints.hit("output.fsync")
                        os.fsync(f.fileno())
                records.append(pending.record(i, *img.digest()))
            order = {name: n for n, name in enumerate(pending.names)}
            touched = self.local.commit(sorted(staged, key=lambda move: order[move[1]]))
            if dirs is None:
                fsync_dirs(touched)
            else:
                dirs.update(touched)
        except OSError as exc:
            _drop(staged)
            raise OutputError(f"cannot write outputs to {self.root}: {exc.strerror or exc}") from None
        except BaseException:
            _drop(staged)
            raise
        return records


def _drop(staged: list[tuple[Path, str]]) -> None:
    """Remove the temp files of an attempt that was not committed (committed ones are gone)."""
    for tmp, _ in staged:
        try:
            tmp.unlink()
        except OSError:
            pass


def fsync_dirs(paths: set[Path]) -> None:
    """Make renames into these folders durable (once per folder, however many files)."""
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot sync output folder: {exc.strerror or exc}") from None
