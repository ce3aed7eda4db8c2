"""The output paths a plan claims: each image its own file (ignoring case and Unicode form), no
file where another needs a folder, nothing on disk in the way, and no other job's outputs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from batchfuse.errors import OutputError, printable
from batchfuse.outputs.names import same_file_key, short
from batchfuse.outputs.objectlisting import ObjectListing
from batchfuse.outputs.objectstore import META_ITEM, meta_value

if TYPE_CHECKING:
    pass

#: An item that claims a name: its key and its catalog row (None for inline items).
Owner = tuple[str, int | None]
MAX_PROBLEMS = 50
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RENAME = "; put {n} in output.filename or rename one of them"
_NUMBERED = re.compile(r"^(.*)-[0-9]+(\.[^./]+)$")


def describe(owner: Owner) -> str:
    key, row = owner
    return f"item {printable(key)}" + (f" (row {row})" if row is not None else "")


def unwritable(path: Path | str, what: str) -> str | None:
    """Why ``what`` (``path`` named as it should be shown) cannot be written by this user, or None;
    a read-only file system is no input mistake but the machine's state: :class:`OutputError`."""
    if os.access(path, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise OutputError(f"{what} is read-only (its file system is mounted read-only); a run has to write its images there")
    return f"{what} cannot be written by this user"


def png_head_text(path: str) -> dict[str, str]:
    """The ``batchfuse:*`` text chunks before a PNG's pixels (empty for anything else), read
    from the file's head only: cheap enough for every existing file of a plan."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return {}
    if not head.startswith(_PNG_SIGNATURE):
        return {}
    found: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(head):
        length, kind = int.from_bytes(head[pos : pos + 4], "big"), head[pos + 4 : pos + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        keyword, _, rest = head[pos + 8 : pos + 8 + length].partition(b"\x00")
        if keyword.startswith(b"batchfuse:"):
            name = keyword.decode("latin-1")
            if kind == b"tEXt":
                found[name] = rest.decode("latin-1")
            elif kind == b"iTXt" and rest[:1] == b"\x00":  # uncompressed: flag, method, language, keyword
                parts = rest[2:].split(b"\x00", 2)
                if len(parts) == 3:
                    found[name] = parts[2].decode("utf-8", "replace")
        pos += 12 + length
    return found


def png_job(path: str) -> str | None:
    """The ``batchfuse:job`` a PNG's text chunks name (they come before the pixels), else None."""
    return png_head_text(path).get("batchfuse:job")


class PathClaims:
    """Every name of a plan under its same-file key, checked against each other and the disk."""

    def __init__(self, root: Path, job: str, extras: bool = False, objects: ObjectListing | None = None) -> None:
        self.root = root
        #: For an s3:// output.dir: what is in the bucket, instead of the disk.
        self.objects = objects
        self.job = job
        #: A reply may carry more images than asked for, written as ``name-1``, ``name-2``, ...
        #: (when the template has no ``{n}``): those names count as the item's too.
        self.extras = extras
        self.root_key = same_file_key(str(root))
        #: same-file key -> (item, the name it writes)
        self.files: dict[str, tuple[Owner, str]] = {}
        #: same-file key of a folder some name needs -> (item, that name)
        self.folders: dict[str, tuple[Owner, str]] = {}
        #: same-file key of the name a numbered name (x-2.png) would have without its number -> item
        self.numbered: dict[str, tuple[Owner, str]] = {}
        #: (item, name) of each existing PNG under a final name, for :meth:`foreign`
        self.existing: list[tuple[Owner, str]] = []
        #: Spec hash of each item that has an existing PNG, for :meth:`adoptable`
        self.spec_of: dict[str, str] = {}
        self._owner: Owner = ("", None)
        self._listings: dict[str, dict[str, os.DirEntry[str]] | None] = {}
        #: :func:`png_head_text` of existing files, read once for :meth:`foreign` and :meth:`adoptable`
        self._heads: dict[str, dict[str, str]] = {}
        self._folder_problems: dict[str, str | None] = {}
        self._root_bytes = len(str(root).encode("utf-8"))
        self.path_max = 4096

    def root_problem(self) -> str | None:
        """Why the output folder can never be written, if it cannot (one pass, before the items)."""
        if self.objects is not None:  # a bucket: listing its prefix finds a missing bucket or bad credentials
            return self.objects.load()
        probe = self.root
        while True:
            try:
                is_dir = probe.is_dir()
                exists = is_dir or probe.exists()
            except OSError:
                is_dir = exists = False
            if exists or probe.parent == probe:
                break
            probe = probe.parent
        if exists and not is_dir:
            where = "" if probe == self.root else f" (output.dir is {self.root})"
            return f"{probe} is a file, not a folder{where}"
        problem = unwritable(probe, str(probe))
        if problem:
            return problem
        try:
            self.path_max = os.pathconf(probe, "PC_PATH_MAX")
        except (OSError, ValueError):
            pass
        return None

    def claim(self, names: list[str], owner: Owner, spec_hash: str = "") -> str | None:
        """Claim ``names`` for ``owner`` (whose spec is ``spec_hash``); a message saying why one
        cannot be written, or None (it names the item itself when the error's place is a catalog row)."""
        seen = len(self.existing)
        problem = self._claim(names, owner)
        if len(self.existing) > seen and spec_hash:
            self.spec_of[owner[0]] = spec_hash
        return f"item {printable(owner[0])} {problem}" if problem and owner[1] is not None else problem

    def _claim(self, names: list[str], owner: Owner) -> str | None:
        self._owner = owner
        if self.extras and len(names) == 1:  # its extra images would be name-1, name-2, ...
            other = self.numbered.get(same_file_key(names[0]))
            if other is not None and other[0] != owner:
                return f"{_extras(names[0])}, and {describe(other[0])} writes {other[1]!r}{_RENAME}"
        for name in names:
            numbered = _NUMBERED.match(name) if self.extras else None
            if numbered:  # an extra image of the item writing name-without-number?
                family = same_file_key(numbered[1] + numbered[2])
                other = self.files.get(family)
                if other is not None and other[0] != owner:
                    return f"writes {name!r}, but {describe(other[0])} {_extras(other[1])}{_RENAME}"
                self.numbered.setdefault(family, (owner, name))
            key = same_file_key(name)
            other = self.files.get(key)
            if other is not None:
                return f"writes {name!r}, the same file as {describe(other[0])}{_spelled(other[1], name)}"
            other = self.folders.get(key)
            if other is not None:
                return f"writes the file {name!r}, but {describe(other[0])} writes {other[1]!r}: a path cannot be a file and a folder"
            parts = key.split("/")
            for i in range(1, len(parts)):
                prefix = "/".join(parts[:i])
                other = self.files.get(prefix)
                if other is not None:
                    return f"writes {name!r}, but {describe(other[0])} writes the file {other[1]!r}: a path cannot be a file and a folder"
                self.folders.setdefault(prefix, (owner, name))
            size = self._root_bytes + 1 + len(name.encode("utf-8"))
            if self.objects is not None:
                problem = self.objects.problem(name)
                if problem:
                    return problem
                if name in self.objects.names:
                    self.existing.append((self._owner, name))
                self.files[key] = (owner, name)
                continue
            if size >= self.path_max:
                return f"output name {short(name)!r} makes a path {size} bytes long; this filesystem takes at most {self.path_max - 1}"
            problem = self._on_disk(name, key)
            if problem:
                return problem
            self.files[key] = (owner, name)
        return None

    # ------------------------------------------------------------ what is on disk

    def _listing(self, folder: str) -> dict[str, os.DirEntry[str]] | None:
        """The entries of an existing folder (relative; "" is the root) by same-file key."""
        if folder not in self._listings:
            try:
                with os.scandir(self.root / folder) as it:
                    self._listings[folder] = {same_file_key(e.name): e for e in it}
            except OSError:
                self._listings[folder] = None
        return self._listings[folder]

    def _folder_problem(self, folder: str) -> str | None:
        """Why ``folder`` (relative) cannot be a folder of outputs, or None (once per folder)."""
        if folder in self._folder_problems:
            return self._folder_problems[folder]
        problem = None
        if folder:
            parent, _, base = folder.rpartition("/")
            problem = self._folder_problem(parent)
            listing = None if problem else self._listing(parent)
            entry = listing.get(same_file_key(base)) if listing else None
            if entry is not None:
                if entry.is_symlink():
                    problem = self._link_problem(entry, folder, want_dir=True)
                elif not entry.is_dir(follow_symlinks=False):
                    problem = f"needs the folder {folder!r}, but {entry.path} is a file"
                else:
                    problem = unwritable(entry.path, f"the folder {entry.path}")
        self._folder_problems[folder] = problem
        return problem

    def _link_problem(self, entry: os.DirEntry[str], name: str, want_dir: bool) -> str | None:
        target = Path(entry.path).resolve()
        if not target.is_relative_to(self.root):
            return f"{name!r} in the output folder is a symlink to {target}, outside it"
        if want_dir and not target.is_dir():
            return f"needs the folder {name!r}, but {entry.path} is a link to no folder"
        if not want_dir and target.is_dir():
            return f"{name!r} in the output folder is a link to the folder {target}"
        return None

    def _on_disk(self, name: str, key: str) -> str | None:
        folder, _, base = name.rpartition("/")
        problem = self._folder_problem(folder)
        if problem:
            return problem
        listing = self._listing(folder)
        entry = listing.get(key.rpartition("/")[2]) if listing else None
        if entry is None:
            return None
        if entry.is_symlink():
            return self._link_problem(entry, name, want_dir=False)
        if entry.is_dir(follow_symlinks=False):
            return f"{name!r} already exists as a folder in {self.root}"
        if base.lower().endswith(".png"):  # whose it is: asked once the database is open
            self.existing.append((self._owner, name))
        return None

    def foreign(self, ours: set[str]) -> Iterator[tuple[Owner, str]]:
        """For each existing PNG under a final name that is not a recorded output of this job
        (``ours``: their same-file keys) whose metadata names another job: its item and why."""
        if self.objects is not None:
            yield from self._foreign_objects(ours)
            return
        for owner, name in self.existing:
            if same_file_key(name) in ours:
                continue
            job = self._head_text(name).get("batchfuse:job")
            if job is not None and job != self.job:
                yield owner, (
                    f"{self.root / name} is an output of job {job!r}, not of job {self.job!r} (its PNG metadata says so); "
                    "give each job its own output.dir"
                )

    def adoptable(self, ours: set[str]) -> dict[str, str]:
        """Item -> its spec hash, for each item with an existing PNG under one of its final names that
        is not a recorded output (``ours``) and was made by this job from the item's current spec: a
        dead run's paid image, which the next run adopts instead of paying again."""
        found: dict[str, str] = {}
        if self.objects is not None:
            for (key, _), name in self.existing:
                spec = self.spec_of.get(key)
                if (key not in found and spec is not None and same_file_key(name) not in ours
                        and self.objects.spec_of(name) == spec):
                    found[key] = spec
            return found
        for (key, _), name in self.existing:
            spec = self.spec_of.get(key)
            if key in found or spec is None or same_file_key(name) in ours:
                continue
            text = self._head_text(name)
            if text.get("batchfuse:job") == self.job and text.get("batchfuse:spec") == spec:
                found[key] = spec
        return found

    def _head_text(self, name: str) -> dict[str, str]:
        """The ``batchfuse:*`` text of the existing file ``name`` (:func:`png_head_text`), read once."""
        text = self._heads.get(name)
        if text is None:
            text = self._heads[name] = png_head_text(str(self.root / name))
        return text

    def _foreign_objects(self, ours: set[str]) -> Iterator[tuple[Owner, str]]:
        """Objects under claimed names that are not this job's recorded outputs and belong to
        another job, another item, or not to batchfuse at all: never overwritten."""
        assert self.objects is not None
        unrecorded = [(owner, name) for owner, name in self.existing if same_file_key(name) not in ours]
        self.objects.read_heads([name for _, name in unrecorded])
        for owner, name in unrecorded:
            url = self.objects.location.object_url(name)
            elsewhere = self.objects.owner_elsewhere(name)
            head = self.objects._heads.get(name)
            if elsewhere is None and head is not None and head.meta.get(META_ITEM) not in (None, meta_value(owner[0])):
                elsewhere = f"an output of another item of job {self.job!r}"
            if elsewhere is None and head is not None and META_ITEM not in head.meta:
                elsewhere = "an object batchfuse did not write"
            if elsewhere is not None:
                yield owner, f"{url} already exists and is {elsewhere}; it is never overwritten (use another prefix)"

    # ------------------------------------------------------------ other jobs

    def relative(self, other_root: Path) -> Callable[[str], str | None] | None:
        """Maps another job's names to same-file keys under this root; None if the folders are apart."""
        theirs = same_file_key(str(other_root))
        mine = self.root_key
        if theirs != mine and not theirs.startswith(mine + "/") and not mine.startswith(theirs + "/"):
            return None

        def mapped(name: str) -> str | None:
            full = f"{theirs}/{same_file_key(name)}"
            return full[len(mine) + 1 :] if full.startswith(mine + "/") else None

        return mapped

    def clash(self, key: str) -> tuple[Owner, str] | None:
        """The item of this plan whose name is, contains or lies inside the same-file key ``key``."""
        hit = self.files.get(key) or self.folders.get(key)
        if hit is not None:
            return hit
        parts = key.split("/")
        for i in range(1, len(parts)):
            hit = self.files.get("/".join(parts[:i]))
            if hit is not None:
                return hit
        return None


def _extras(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return f"writes {name!r}, or {stem}-1{ext}, {stem}-2{ext}, ... when a reply carries several images"


def _spelled(other: str, name: str) -> str:
    if other == name:
        return ""
    return f" writes as {other!r} (names differing only in case or Unicode form are one file on macOS and SMB shares)"
