"""The review of a job whose outputs are in a bucket: thumbnails for the report made from the
objects, each downloaded only when its thumbnail is missing or older than the object (a
thumbnail is named by the output's sha256, so it is made once and then kept), links to the
objects' URLs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from batchfuse.outputs.objectstore import Location, download, list_names, run_sync

if TYPE_CHECKING:
    from batchfuse.review.report import ThumbnailFolder


class BucketOutputs:
    """A job's outputs in a bucket, as the report sees them: under a local mirror folder that
    holds only what thumbnails need (removed with :meth:`close`)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.listing = run_sync(list_names(location))
        self._tmp = tempfile.TemporaryDirectory(prefix="batchfuse-report-")
        self.mirror = Path(self._tmp.name)
        self.downloads = 0

    @property
    def shown(self) -> str:
        return self.location.url

    def href(self, name: str) -> str:
        return self.location.http_url(name)

    def fetch(self, wanted: dict[str, Path], thumbs: ThumbnailFolder) -> None:
        """Make each wanted output (digest -> its path under :attr:`mirror`) ready for its
        thumbnail: a fresh thumbnail needs only a stand-in with the object's date; else the
        object is downloaded.  Names not in the bucket stay absent ("file missing")."""
        todo: list[tuple[str, Path]] = []
        dates: dict[Path, float] = {}
        for digest, path in wanted.items():
            try:
                name = path.relative_to(self.mirror).as_posix()
            except ValueError:
                continue
            found = self.listing.get(name)
            if found is None:
                continue
            modified = found[2]
            path.parent.mkdir(parents=True, exist_ok=True)
            thumb = thumbs.folder / thumbs.filename(digest)
            try:
                fresh = thumb.stat().st_mtime >= modified
            except OSError:
                fresh = False
            if fresh:
                path.touch()
            else:
                todo.append((name, path))
            dates[path] = modified
        if todo:
            run_sync(download(self.location, todo))
            self.downloads += len(todo)
        for path, modified in dates.items():
            os.utime(path, (modified, modified))

    def close(self) -> None:
        self._tmp.cleanup()
