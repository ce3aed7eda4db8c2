"""The output folder: a group's files written atomically (temp file, fsync, rename, fsync of the
folder) so that no partial file ever carries a final name, adoption of files left by a crash,
and cleaning up temp files.  Names come from :mod:`batchfuse.outputs.names`, the bytes (with
their PNG metadata) from :mod:`batchfuse.outputs.png`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchfuse import faultpoints
from batchfuse.errors import OutputError
from batchfuse.outputs.names import TEMP_DIR
from batchfuse.outputs.png import PreparedImage, read_png_text
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


class OutputFolder:
    """The job's output folder: atomic writes into it, and cleaning up after a crash."""

    def __init__(self, root: Path, writer_tag: str = "w") -> None:
        self.root = root
        self.temp = root / TEMP_DIR
        self.writer_tag = writer_tag.replace(":", "_").replace("/", "_")

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

    def _adoptable(self, name_for: Callable[[int, int], str], spec_hash: str) -> list[OutputRecord] | None:
        for first in (name_for(1, 1), name_for(1, 2)):
            meta = read_png_text(self.root / first) if (self.root / first).is_file() else {}
            if meta.get("batchfuse:spec") != spec_hash:
                continue
            count = int(meta.get("batchfuse:image", "1/1").partition("/")[2] or 1)
            names = [name_for(i, count) for i in range(1, count + 1)]
            records = []
            for i, name in enumerate(names, start=1):
                path = self.root / name
                if read_png_text(path).get("batchfuse:spec") != spec_hash:
                    return None
                data = path.read_bytes()
                from PIL import Image

                with Image.open(path) as im:
                    width, height = im.size
                records.append(OutputRecord(i, name, hashlib.sha256(data).hexdigest(), width, height, len(data)))
            return records
        return None

    def final_path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):  # a symlinked folder pointing out
            raise OutputError(f"output {name} would be written outside {self.root}")
        return path

    def write(self, pending: PendingOutputs, dirs: set[Path] | None = None) -> list[OutputRecord]:
        """Write every image of one attempt; all or none get their final names.

        With ``dirs``, the folders that received files are added to it and left for the caller
        to fsync once for a whole group (:func:`fsync_dirs`); without, they are fsynced here.
        """
        staged: list[tuple[Path, Path]] = []
        records: list[OutputRecord] = []
        try:
            self.temp.mkdir(parents=True, exist_ok=True)
            for i, (name, img) in enumerate(zip(pending.names, pending.images, strict=True)):
                tmp = self.temp / f"{self.writer_tag}-{uuid.uuid4().hex}.part"
                with open(tmp, "wb") as f:
                    staged.append((tmp, self.final_path(name)))
                    f.write(img.payload)
                    f.flush()
                    faultpoints.hit("output.write")
                    faultpoints.hit("output.fsync")
                    os.fsync(f.fileno())
                records.append(
                    OutputRecord(
                        idx=i + 1,
                        path=name,
                        sha256=hashlib.sha256(img.payload).hexdigest(),
                        width=img.width,
                        height=img.height,
                        bytes=len(img.payload),
                        source_url=pending.source_urls[i] if i < len(pending.source_urls) else None,
                        source_at=pending.source_at,
                    )
                )
            touched: set[Path] = set()
            for tmp, final in staged:
                final.parent.mkdir(parents=True, exist_ok=True)
                faultpoints.hit("output.rename")
                os.replace(tmp, final)
                touched.add(final.parent)
            if dirs is None:
                fsync_dirs(touched)
            else:
                dirs.update(touched)
        except OSError as exc:
            for tmp, _ in staged:
                try:
                    tmp.unlink()
                except OSError:
                    pass
            raise OutputError(f"cannot write outputs to {self.root}: {exc.strerror or exc}") from None
        return records


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
