"""What is already under a bucket's prefix, for the plan: the names there (one listing) and,
for the names a plan claims that are there, whose objects they are (their metadata, by HEAD)."""

from __future__ import annotations

from batchfuse.errors import BatchfuseError
from batchfuse.outputs.objectstore import (
    META_JOB,
    META_SPEC,
    Head,
    Location,
    heads,
    list_names,
    run_sync,
    same_owner,
    shown_owner,
)

#: S3 keys are at most this many bytes.
MAX_KEY_BYTES = 1024


class ObjectListing:
    """The objects under a :class:`Location`'s prefix, listed once."""

    def __init__(self, location: Location, job: str) -> None:
        self.location, self.job = location, job
        self.names: dict[str, tuple[int, str, float]] = {}
        self._heads: dict[str, Head] = {}

    def load(self) -> str | None:
        """List the prefix; why it cannot be, or None.  A missing bucket or refused credentials
        are found here, before anything is sent or recorded."""
        try:
            self.names = run_sync(list_names(self.location))
        except BatchfuseError as exc:
            return exc.message
        return None

    def read_heads(self, names: list[str]) -> None:
        """Read the metadata of these existing objects (once each)."""
        todo = [n for n in dict.fromkeys(names) if n in self.names and n not in self._heads]
        if todo:
            self._heads.update(run_sync(heads(self.location, todo)))

    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot be an object key under the prefix, or None."""
        size = len(self.location.key(name).encode("utf-8"))
        if size > MAX_KEY_BYTES:
            return f"output name {name!r} makes an object key {size} bytes long; S3 takes at most {MAX_KEY_BYTES}"
        return None

    def owner_elsewhere(self, name: str) -> str | None:
        """Whose an existing object is when its metadata names another job ('item X of job Y'), else None."""
        head = self._heads.get(name)
        if head is None or META_JOB not in head.meta or same_owner(head.meta, self.job):
            return None
        return shown_owner(head.meta)

    def spec_of(self, name: str) -> str | None:
        """The spec hash of an existing object of this job, else None."""
        head = self._heads.get(name)
        if head is None or not same_owner(head.meta, self.job):
            return None
        return head.meta.get(META_SPEC)
