"""The morning review: a static HTML contact sheet of a job, with thumbnails beside it.

The report (``<job>.report.html``) opens from disk with no server and no network: the item data is embedded as
JSON and a small inline script renders it a page of cards at a time, so a 10,000-item job
does not freeze the browser.  Thumbnails (``<job>.report_thumbs/``) are small WebP (or JPEG) files
named by the sha256 of their source as the store recorded it, so a rerun reuses them and
only makes the ones that are new or whose source file is newer than its thumbnail.

Everything from users (prompts, item keys, error messages) reaches the page as JSON inside
``<script type="application/json">`` with ``<``, ``>`` and ``&`` escaped, and the script
puts it into the DOM with ``textContent`` only; a Content-Security-Policy allows exactly
the one inline script and style and no network at all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import os
import re
import string
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from PIL import Image, ImageOps, features

from batchfuse.errors import scrub
from batchfuse.outputs.atomic import atomic_file
from batchfuse.providers.fetch import has_scheme, is_url
from batchfuse.review.export import atomic_text_file

if TYPE_CHECKING:
    from batchfuse.review.objects import BucketOutputs

#: Longest side of a thumbnail, in pixels.
THUMB_SIDE = 256
THUMB_FORMAT, THUMB_EXT = ("WEBP", ".webp") if features.check("webp") else ("JPEG", ".jpg")
#: Items read, thumbnailed and written together: bounds memory whatever the job's size.
BATCH = 500
#: Cards per page in the browser.
PAGE_SIZE = 100
STATES = ("succeeded", "failed", "pending", "running", "orphaned")
#: Longest prompt or error shown on a card: a page of 10,000 items must stay a few MB.
TEXT_LIMIT = 4000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_THUMB_NAME = re.compile(r"^\.?[0-9a-f]{64}-\d+\.(?:webp|jpg)(?:\.[\w.-]+\.tmp)?$")

ThumbOutcome = Literal["made", "reused", "missing", "unreadable"]


# ---------------------------------------------------------------------------- thumbnails


def thumb_name(digest: str, side: int = THUMB_SIDE) -> str:
    """The file name of the thumbnail of the image named by ``digest`` (the report's and the
    review server's alike).  The side is part of it, so a different size never reuses an old one."""
    return f"{digest}-{side}{THUMB_EXT}"


def make_thumbnail(src: Path, dest: Path, side: int = THUMB_SIDE) -> ThumbOutcome:
    """Write a thumbnail of ``src`` to ``dest`` unless a fresh one is already there.

    Fresh means at least as new as its source: thumbnails are named by content digest, so
    the only way a source changes under the same name is a file replaced on disk, and its
    newer mtime catches that.  The file is written to a temp name and renamed, so a report
    killed half-way never leaves a truncated thumbnail that later runs would trust.
    """
    try:
        src_mtime = src.stat().st_mtime
    except OSError:
        return "missing"
    try:
        if dest.stat().st_mtime >= src_mtime:
            return "reused"
    except OSError:
        pass
    try:
        with Image.open(src) as im, atomic_file(dest) as f:
            im.thumbnail((side, side), reducing_gap=2.0)  # drafts JPEGs and reduces before resampling
            small = _thumbnail_mode(ImageOps.exif_transpose(im))
            small.save(f, THUMB_FORMAT, quality=80)
    except Exception:  # any decoder or EXIF failure: this image gets no thumbnail, the report goes on
        return "unreadable"
    return "made"


def _thumbnail_mode(im: Image.Image) -> Image.Image:
    """``im`` in a mode the thumbnail format can store (alpha kept for WebP, flattened for JPEG)."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im if im.mode == "RGB" else im.convert("RGB")
    rgba = im.convert("RGBA")
    if THUMB_FORMAT == "WEBP":
        return rgba
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _thumb_task(args: tuple[Path, Path, int]) -> ThumbOutcome:
    return make_thumbnail(*args)


@dataclass
class ThumbnailFolder:
    """The thumbnails of one report: made once per distinct source, however many items share it."""

    folder: Path
    pool: Executor
    side: int = THUMB_SIDE
    outcomes: dict[str, ThumbOutcome] = field(default_factory=dict)

    def filename(self, digest: str) -> str:
        return thumb_name(digest, self.side)

    def ensure(self, wanted: dict[str, Path]) -> None:
        """Make (in the pool) the thumbnails of ``wanted`` (digest -> source) not seen yet."""
        todo = [(d, src) for d, src in wanted.items() if d not in self.outcomes]
        tasks = [(src, self.folder / self.filename(d), self.side) for d, src in todo]
        for (digest, _), outcome in zip(todo, self.pool.map(_thumb_task, tasks), strict=True):
            self.outcomes[digest] = outcome

    def href(self, digest: str) -> str | None:
        """The thumbnail's address relative to the report, or None when there is none."""
        if self.outcomes.get(digest) not in ("made", "reused"):
            return None
        return f"{quote(self.folder.name)}/{self.filename(digest)}"

    def note(self, digest: str) -> str | None:
        """Why an image has no thumbnail, in words for the page."""
        return {"missing": "file missing", "unreadable": "cannot read image"}.get(
            self.outcomes.get(digest, "")
        )

    def prune(self) -> int:
        """Delete thumbnails this report no longer uses (items changed or removed since).

        Only files named the way this module names them are touched, so a user's own files
        dropped into the folder survive.
        """
        keep = {self.filename(d) for d, o in self.outcomes.items() if o in ("made", "reused")}
        removed = 0
        for entry in os.scandir(self.folder):
            if entry.is_file() and _THUMB_NAME.match(entry.name) and entry.name not in keep:
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
        return removed

    def stats(self) -> Counter[str]:
        return Counter(self.outcomes.values())


# ---------------------------------------------------------------------------- page data


def digest_for(digest: str | None, path: Path) -> str:
    """A thumbnail name for an image: its recorded sha256, else a digest of its path."""
    if digest and _SHA256.match(digest):
        return digest
    return hashlib.sha256(str(path).encode("utf-8", "surrogatepass")).hexdigest()


def file_href(target: Path, base: Path) -> str:
    """A link from a page in ``base`` to ``target``: relative (the report and the outputs
    can be moved together), or a file:// URI when no relative path exists (another drive)."""
    try:
        rel = os.path.relpath(target, base)
    except ValueError:
        return target.as_uri()
    return quote(Path(rel).as_posix(), safe="/")


@dataclass
class RefResolver:
    """Finds a reference image's file from the ``src`` the plan recorded.

    The planner joins image paths onto the manifest path *as it was given*, so a run started
    as ``batchfuse run jobs/x.yaml`` records ``jobs/images/a.png``: relative to the run's
    working directory, which the store does not keep.  Each folder from the manifest's up
    to the root is a candidate working directory, but only if the recorded path starts with
    the manifest's folder as seen from there; the most specific existing match wins, then
    the current directory.  Results are memoized: thousands of items share a few images.
    """

    manifest_dir: Path
    _memo: dict[str, Path] = field(default_factory=dict)

    def resolve(self, src: str) -> Path:
        hit = self._memo.get(src)
        if hit is None:
            hit = self._memo[src] = self._find(Path(src))
        return hit

    def _find(self, path: Path) -> Path:
        if path.is_absolute():
            return path
        candidates: list[tuple[int, Path]] = []
        for base in (self.manifest_dir, *self.manifest_dir.parents):
            prefix = self.manifest_dir.relative_to(base).parts
            if path.parts[: len(prefix)] == prefix:
                candidates.append((len(prefix), base / path))
        for _, candidate in sorted(candidates, key=lambda c: -c[0]):
            if candidate.exists():
                return candidate
        return Path.cwd() / path


@dataclass(frozen=True)
class _Sources:
    """Where an item's images live: output files by digest, local reference images by digest."""

    outputs: list[tuple[str, Path, dict[str, Any]]]
    refs: list[tuple[str | None, Path | None, dict[str, Any]]]


def _sources(row: dict[str, Any], output_dir: Path, resolver: RefResolver) -> _Sources:
    outputs = []
    for out in row.get("outputs") or []:
        path = output_dir / out["path"]
        outputs.append((digest_for(out.get("sha256"), path), path, out))
    refs: list[tuple[str | None, Path | None, dict[str, Any]]] = []
    for ref in (row.get("spec") or {}).get("images") or []:
        src = str(ref.get("src", ""))
        if has_scheme(src) or not src:
            refs.append((None, None, ref))
        else:
            path = resolver.resolve(src)
            refs.append((digest_for(ref.get("digest"), path), path, ref))
    return _Sources(outputs, refs)


def _card(
    row: dict[str, Any], sources: _Sources, base: Path, thumbs: ThumbnailFolder, remote: BucketOutputs | None = None
) -> dict[str, Any]:
    """The data of one card, exactly what the page shows and nothing else."""
    spec = row.get("spec") or {}
    error = row.get("last_error")
    outputs = [
        {
            "thumb": thumbs.href(d),
            "note": thumbs.note(d),
            "href": remote.href(out["path"]) if remote is not None else file_href(path, base),
            "name": out["path"],
            "size": f"{out['width']}×{out['height']}" if out.get("width") else "",
        }
        for d, path, out in sources.outputs
    ]
    refs: list[dict[str, Any]] = []
    for d, path, ref in sources.refs:
        src = str(ref.get("src", ""))
        if d is None or path is None:
            refs.append({"url": src if is_url(src) else None, "name": src})
        else:
            refs.append(
                {
                    "thumb": thumbs.href(d),
                    "note": thumbs.note(d),
                    "href": file_href(path, base),
                    "name": path.name,
                }
            )
    return {
        "key": row["key"],
        "state": row["state"],
        "attempts": int(row.get("attempts") or 0),
        "tokens": int(row.get("tokens") or 0),
        "prompt": clip(str(spec.get("prompt", ""))),
        "error_class": row.get("error_class"),
        "error": clip(scrub(error)) if error else None,
        "outputs": outputs,
        "refs": refs,
        "verdict": row.get("verdict"),
    }


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying so (the export has nothing cut)."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit:,} more characters]"


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


_SCRIPT_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``</script>``, ``<!--`` or ``&`` can appear.

    ``<``, ``>`` and ``&`` can only occur inside JSON strings, where ``\\u003c`` and friends
    decode to the same characters, so the data is unchanged for ``JSON.parse``.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_SCRIPT_JSON_ESCAPES)


# ---------------------------------------------------------------------------- the report


@dataclass
class ReportResult:
    """What was written, for the one line the CLI prints."""

    path: Path
    thumbs_dir: Path
    #: Items per state as read while writing (plus ``total``).
    items: dict[str, int]
    thumbnails: Counter[str]
    pruned: int
    seconds: float


def thumbs_dir_for(dest: Path) -> Path:
    """``x.report.html`` -> ``x.report_thumbs/`` beside it."""
    return dest.with_name(f"{dest.stem}_thumbs")


def write_report(
    rows: Iterable[dict[str, Any]],
    *,
    counts: dict[str, int],
    job_name: str,
    output_dir: Path,
    manifest_dir: Path,
    dest: Path,
    workers: int | None = None,
    remote: BucketOutputs | None = None,
) -> ReportResult:
    """Write the contact sheet of ``rows`` (``Store.item_rows``) to ``dest``, thumbnails beside it.

    ``counts`` are the store's counts per state, shown at the top of the page;
    ``manifest_dir`` (absolute) locates reference images recorded with relative paths.  Rows are
    processed a batch at a time: thumbnails for the batch are made in a thread pool (Pillow
    releases the GIL while decoding, resizing and encoding), then its cards are appended
    to the page, so memory stays flat for large jobs.  With ``remote`` (outputs in a bucket),
    ``output_dir`` is its local mirror and the outputs link to the objects.
    """
    started = time.monotonic()
    dest = dest.resolve()
    folder = thumbs_dir_for(dest)
    tally: Counter[str] = Counter({s: 0 for s in STATES if s != "orphaned"})  # orphaned only when there are some
    resolver = RefResolver(manifest_dir)
    with (
        ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 2)) as pool,
        atomic_text_file(dest) as out,
    ):
        folder.mkdir(exist_ok=True)
        thumbs = ThumbnailFolder(folder, pool)
        out.write(_head(job_name, Path(remote.shown) if remote else output_dir, counts))
        out.write('<script type="application/json" id="bf-items">[')
        first = True
        for batch in _batches(rows, BATCH):
            sources = [_sources(row, output_dir, resolver) for row in batch]
            wanted = {d: p for s in sources for d, p, _ in s.outputs}
            if remote is not None:
                remote.fetch(wanted, thumbs)
            wanted.update({d: p for s in sources for d, p, _ in s.refs if d is not None and p is not None})
            thumbs.ensure(wanted)
            for row, src in zip(batch, sources, strict=True):
                tally[row["state"]] += 1
                out.write(("" if first else ",\n") + script_json(_card(row, src, dest.parent, thumbs, remote)))
                first = False
        out.write("]</script>\n")
        out.write(_tail())
    pruned = thumbs.prune()
    items = dict(tally)
    items["total"] = sum(tally.values())
    return ReportResult(dest, folder, items, thumbs.stats(), pruned, time.monotonic() - started)


def summary_line(result: ReportResult) -> str:
    """The one line printed at the end: where the report is, and the counts."""
    c, t = result.items, result.thumbnails
    line = (
        f"report: {result.path} — {c['total']} items: {c['succeeded']} succeeded, {c['failed']} failed, "
        f"{c['pending']} pending, {c['running']} running"
        + (f", {c['orphaned']} orphaned" if c.get("orphaned") else "")
        + f"; thumbnails: {t['made']} made, {t['reused']} reused"
    )
    if t["missing"] or t["unreadable"]:
        line += f", {t['missing']} missing, {t['unreadable']} unreadable"
    return line + f" ({result.seconds:.1f}s)"


# ---------------------------------------------------------------------------- HTML

def _asset(name: str) -> str:
    """A file of the page (``assets/`` beside this module, shipped as package data)."""
    return resources.files("batchfuse.review").joinpath("assets", name).read_text(encoding="utf-8")


_CSS = _asset("report.css")
_JS = _asset("report.js").replace("__PAGE_SIZE__", str(PAGE_SIZE))
_PAGE = string.Template(_asset("page.html"))


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


#: No network at all: images from files beside the report only, and exactly our script and style.
_CSP = (
    f"default-src 'none'; img-src 'self' file: data:; style-src {_csp_hash(_CSS)}; "
    f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'"
)


#: The review server's page: the same page, which talks to its own server and nothing else.
LIVE_CSP = (
    f"default-src 'none'; img-src 'self'; connect-src 'self'; style-src {_csp_hash(_CSS)}; "
    f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def live_page(job_name: str, output_dir: Path, counts: dict[str, int], token: str) -> str:
    """The page ``batchfuse review`` serves: the report's page with no data in it (the script
    asks the JSON API) and the run's token in ``<meta name="batchfuse-token">``."""
    meta = f'<meta name="batchfuse-token" content="{html.escape(token)}">'
    return _head(job_name, output_dir, counts, csp=LIVE_CSP, meta=meta, made="live review") + _tail()


def _head(
    job_name: str, output_dir: Path, counts: dict[str, int], *, csp: str = _CSP, meta: str = "", made: str = ""
) -> str:
    """Everything before the item data; the counts are in the HTML itself (readable without JS)."""
    e = html.escape
    total = counts.get("total", sum(counts.get(s, 0) for s in STATES))
    shown = [s for s in STATES if s != "orphaned" or counts.get(s)]  # orphaned only when there are some
    count_items = "".join(
        f'<li data-count="{s}"><b>{counts.get(s, 0) if s != "total" else total}</b> {s}</li>'
        for s in ("total", *shown)
    )
    buttons = "".join(
        f'<button type="button" data-state="{s}" aria-pressed="{str(s == "all").lower()}">'
        f"{s} <span>{total if s == 'all' else counts.get(s, 0)}</span></button>"
        for s in ("all", "failed", "succeeded", "pending", *shown[3:])
    )
    made = made or "report made " + time.strftime("%Y-%m-%d %H:%M")
    return _PAGE.substitute(
        csp=e(csp), meta=meta, job=e(job_name), css=_CSS, output_dir=e(str(output_dir)), made=e(made),
        count_items=count_items, buttons=buttons,
    )


def _tail() -> str:
    return f"<script>{_JS}</script>\n</body></html>\n"
