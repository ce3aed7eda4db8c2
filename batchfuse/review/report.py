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
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from PIL import Image, ImageOps, features

from batchfuse.errors import scrub
from batchfuse.review.export import atomic_text_file

#: Longest side of a thumbnail, in pixels.
THUMB_SIDE = 256
THUMB_FORMAT, THUMB_EXT = ("WEBP", ".webp") if features.check("webp") else ("JPEG", ".jpg")
#: Items read, thumbnailed and written together: bounds memory whatever the job's size.
BATCH = 500
#: Cards per page in the browser.
PAGE_SIZE = 100
STATES = ("succeeded", "failed", "pending", "running")
#: Longest prompt or error shown on a card: a page of 10,000 items must stay a few MB.
TEXT_LIMIT = 4000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_THUMB_NAME = re.compile(r"^\.?[0-9a-f]{64}-\d+\.(?:webp|jpg)(?:\.[\w.-]+\.tmp)?$")
_URL = re.compile(r"^https?://", re.IGNORECASE)
#: What the planner takes for a URL rather than a path (it refuses all but http(s)).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

ThumbOutcome = Literal["made", "reused", "missing", "unreadable"]


# ---------------------------------------------------------------------------- thumbnails


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
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with Image.open(src) as im:
            im.thumbnail((side, side), reducing_gap=2.0)  # drafts JPEGs and reduces before resampling
            small = _thumbnail_mode(ImageOps.exif_transpose(im))
            small.save(tmp, THUMB_FORMAT, quality=80)
        os.replace(tmp, dest)
    except Exception:  # any decoder or EXIF failure: this image gets no thumbnail, the report goes on
        tmp.unlink(missing_ok=True)
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
        # The side is part of the name so that a different size never reuses an old thumbnail.
        return f"{digest}-{self.side}{THUMB_EXT}"

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


def _digest_for(digest: str | None, path: Path) -> str:
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
        outputs.append((_digest_for(out.get("sha256"), path), path, out))
    refs: list[tuple[str | None, Path | None, dict[str, Any]]] = []
    for ref in (row.get("spec") or {}).get("images") or []:
        src = str(ref.get("src", ""))
        if _SCHEME.match(src) or not src:
            refs.append((None, None, ref))
        else:
            path = resolver.resolve(src)
            refs.append((_digest_for(ref.get("digest"), path), path, ref))
    return _Sources(outputs, refs)


def _card(row: dict[str, Any], sources: _Sources, base: Path, thumbs: ThumbnailFolder) -> dict[str, Any]:
    """The data of one card, exactly what the page shows and nothing else."""
    spec = row.get("spec") or {}
    error = row.get("last_error")
    outputs = [
        {
            "thumb": thumbs.href(d),
            "note": thumbs.note(d),
            "href": file_href(path, base),
            "name": out["path"],
            "size": f"{out['width']}×{out['height']}" if out.get("width") else "",
        }
        for d, path, out in sources.outputs
    ]
    refs: list[dict[str, Any]] = []
    for d, path, ref in sources.refs:
        src = str(ref.get("src", ""))
        if d is None or path is None:
            refs.append({"url": src if _URL.match(src) else None, "name": src})
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
) -> ReportResult:
    """Write the contact sheet of ``rows`` (``Store.item_rows``) to ``dest``, thumbnails beside it.

    ``counts`` are the store's counts per state, shown at the top of the page;
    ``manifest_dir`` (absolute) locates reference images recorded with relative paths.  Rows are
    processed a batch at a time: thumbnails for the batch are made in a thread pool (Pillow
    releases the GIL while decoding, resizing and encoding), then its cards are appended
    to the page, so memory stays flat for large jobs.
    """
    started = time.monotonic()
    dest = dest.resolve()
    folder = thumbs_dir_for(dest)
    tally: Counter[str] = Counter({s: 0 for s in STATES})
    resolver = RefResolver(manifest_dir)
    with (
        ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 2)) as pool,
        atomic_text_file(dest) as out,
    ):
        folder.mkdir(exist_ok=True)
        thumbs = ThumbnailFolder(folder, pool)
        out.write(_head(job_name, output_dir, counts))
        out.write('<script type="application/json" id="bf-items">[')
        first = True
        for batch in _batches(rows, BATCH):
            sources = [_sources(row, output_dir, resolver) for row in batch]
            wanted = {d: p for s in sources for d, p, _ in s.outputs}
            wanted.update({d: p for s in sources for d, p, _ in s.refs if d is not None and p is not None})
            thumbs.ensure(wanted)
            for row, src in zip(batch, sources, strict=True):
                tally[row["state"]] += 1
                out.write(("" if first else ",\n") + script_json(_card(row, src, dest.parent, thumbs)))
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
        f"{c['pending']} pending, {c['running']} running; thumbnails: {t['made']} made, {t['reused']} reused"
    )
    if t["missing"] or t["unreadable"]:
        line += f", {t['missing']} missing, {t['unreadable']} unreadable"
    return line + f" ({result.seconds:.1f}s)"


# ---------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #f5f5f7; --card: #fff; --muted: #6e6e73;
  --line: #d2d2d7; --ok: #1a7f37; --bad: #cf222e; --wait: #9a6700; --run: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --bg: #161618; --card: #202023;
  --muted: #a1a1a6; --line: #3a3a3c; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); }
header.top { position: sticky; top: 0; z-index: 1; background: var(--bg); padding: 12px 20px 8px;
  border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0 0 4px; }
.meta { color: var(--muted); margin: 0 0 8px; overflow-wrap: anywhere; }
#counts { list-style: none; display: flex; flex-wrap: wrap; gap: 16px; padding: 0; margin: 0 0 8px; }
#counts b { font-size: 18px; }
.controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.controls button, .pager button { font: inherit; padding: 4px 10px; border: 1px solid var(--line);
  border-radius: 14px; background: var(--card); color: var(--fg); cursor: pointer; }
.controls button[aria-pressed="true"] { background: var(--fg); color: var(--bg); }
.controls button[data-state="failed"] { border-color: var(--bad); }
#q { font: inherit; padding: 4px 10px; min-width: 260px; border: 1px solid var(--line); border-radius: 14px;
  background: var(--card); color: var(--fg); }
#filters { display: flex; flex-wrap: wrap; gap: 6px; }
#shown { color: var(--muted); margin: 0; }
.pager { display: flex; gap: 8px; align-items: center; padding: 8px 20px; }
.pager button:disabled { opacity: .4; cursor: default; }
#cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px;
  padding: 12px 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-left: 4px solid var(--line);
  border-radius: 8px; padding: 10px; min-width: 0; }
.card.state-succeeded { border-left-color: var(--ok); }
.card.state-failed { border-left-color: var(--bad); }
.card.state-pending { border-left-color: var(--wait); }
.card.state-running { border-left-color: var(--run); }
.card > header { display: flex; justify-content: space-between; gap: 8px; align-items: baseline; }
.key { font-weight: 600; overflow-wrap: anywhere; }
.badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; border: 1px solid currentColor; }
.state-succeeded .badge { color: var(--ok); } .state-failed .badge { color: var(--bad); }
.state-pending .badge { color: var(--wait); } .state-running .badge { color: var(--run); }
.outputs, .refs { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; }
figure { margin: 0; }
figcaption { font-size: 11px; color: var(--muted); max-width: 160px; overflow-wrap: anywhere; }
.thumb { display: block; width: 160px; height: 160px; object-fit: contain; border-radius: 4px;
  background: repeating-conic-gradient(#8882 0% 25%, transparent 0% 50%) 50% / 16px 16px; }
.ref { display: block; width: 56px; height: 56px; object-fit: contain; border-radius: 3px;
  background: #8882; }
.nothumb { display: flex; align-items: center; justify-content: center; text-align: center;
  color: var(--muted); font-size: 12px; border: 1px dashed var(--line); }
span.ref.nothumb { width: auto; min-width: 56px; padding: 0 6px; }
.prompt { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 8.4em; overflow: auto; margin: 6px 0; }
.facts { color: var(--muted); margin: 4px 0; }
.reflink { font-size: 12px; overflow-wrap: anywhere; max-width: 100%; }
.error { color: var(--bad); white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0 0;
  max-height: 8.4em; overflow: auto; }
"""

_JS = r"""
(() => {
  "use strict";
  const PAGE_SIZE = __PAGE_SIZE__;
  const items = JSON.parse(document.getElementById("bf-items").textContent);
  const cardsEl = document.getElementById("cards");
  const shownEl = document.getElementById("shown");
  const search = document.getElementById("q");
  const buttons = Array.from(document.querySelectorAll("#filters button"));
  const pagers = Array.from(document.querySelectorAll(".pager"));
  const SAFE_URL = /^https?:\/\//i;
  const view = { state: "all", q: "", page: 1 };
  let matches = items;

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function link(href, child) {
    const a = el("a");
    if (href) a.setAttribute("href", href);
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.append(child);
    return a;
  }

  function picture(entry, cls) {
    if (!entry.thumb) return el("span", cls + " nothumb", entry.note || "no preview");
    const img = el("img", cls);
    img.loading = "lazy";  // before src: an image made by script starts loading when src is set
    img.decoding = "async";
    img.alt = entry.name;
    img.setAttribute("src", entry.thumb);
    return img;
  }

  function outputs(item) {
    const box = el("div", "outputs");
    if (!item.outputs.length) box.append(el("span", "thumb nothumb", "no output"));
    for (const o of item.outputs) {
      const fig = el("figure");
      fig.append(link(o.href, picture(o, "thumb")), el("figcaption", null, o.size ? o.name + " · " + o.size : o.name));
      box.append(fig);
    }
    return box;
  }

  function refs(item) {
    const box = el("div", "refs");
    for (const r of item.refs) {
      if (r.url !== undefined) {
        box.append(r.url && SAFE_URL.test(r.url) ? link(r.url, el("span", null, r.url)) : el("span", null, r.name));
        box.lastChild.classList.add("reflink");
      } else {
        const a = link(r.href, picture(r, "ref"));
        a.title = r.name;
        box.append(a);
      }
    }
    return box;
  }

  function card(item) {
    const c = el("article", "card state-" + item.state);
    c.dataset.state = item.state;
    c.dataset.key = item.key;
    const head = el("header");
    head.append(el("span", "key", item.key), el("span", "badge", item.state));
    const facts = item.attempts + (item.attempts === 1 ? " attempt" : " attempts") +
      (item.tokens ? " · " + item.tokens.toLocaleString() + " tokens" : "");
    c.append(head, outputs(item), el("p", "facts", facts), el("p", "prompt", item.prompt));
    if (item.refs.length) c.append(refs(item));
    if (item.error) {
      const e = el("p", "error");
      if (item.error_class) e.append(el("b", null, "[" + item.error_class + "] "));
      e.append(document.createTextNode(item.error));
      c.append(e);
    }
    return c;
  }

  function haystack(item) {
    if (item._hay === undefined) {
      item._hay = [item.key, item.prompt, item.error || "", item.error_class || ""].join("\n").toLowerCase();
    }
    return item._hay;
  }

  function filter() {
    const q = view.q.trim().toLowerCase();
    matches = items.filter((it) => (view.state === "all" || it.state === view.state) && (!q || haystack(it).includes(q)));
  }

  function pager(nav, pages) {
    const prev = el("button", null, "‹ previous");
    const next = el("button", null, "next ›");
    prev.type = next.type = "button";
    prev.disabled = view.page <= 1;
    next.disabled = view.page >= pages;
    prev.addEventListener("click", () => turn(view.page - 1));
    next.addEventListener("click", () => turn(view.page + 1));
    nav.replaceChildren(prev, el("span", null, "page " + view.page + " of " + pages), next);
  }

  function render() {
    const pages = Math.max(1, Math.ceil(matches.length / PAGE_SIZE));
    view.page = Math.min(Math.max(1, view.page), pages);
    const start = (view.page - 1) * PAGE_SIZE;
    const shown = matches.slice(start, start + PAGE_SIZE);
    const frag = document.createDocumentFragment();
    for (const it of shown) frag.append(card(it));
    cardsEl.replaceChildren(frag);
    shownEl.textContent = shown.length
      ? "showing " + (start + 1) + "–" + (start + shown.length) + " of " + matches.length +
        (matches.length !== items.length ? " (" + items.length + " in all)" : "")
      : "no items match";
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.state === view.state));
    for (const p of pagers) pager(p, pages);
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  function saveHash() {
    const p = new URLSearchParams();
    if (view.state !== "all") p.set("state", view.state);
    if (view.q) p.set("q", view.q);
    if (view.page > 1) p.set("page", String(view.page));
    const hash = "#" + p.toString();
    if (location.hash !== hash && !(hash === "#" && !location.hash)) {
      try { location.replace(hash); } catch (e) { /* some file:// setups refuse; the view still works */ }
    }
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const state = p.get("state") || "all";
    return {
      state: buttons.some((b) => b.dataset.state === state) ? state : "all",
      q: p.get("q") || "",
      page: Math.max(1, parseInt(p.get("page") || "1", 10) || 1),
    };
  }

  function update(changes, refilter) {
    Object.assign(view, changes);
    if (refilter) filter();
    render();
    saveHash();
  }

  function turn(page) {
    update({ page: page }, false);
    window.scrollTo(0, 0);
  }

  for (const b of buttons) b.addEventListener("click", () => update({ state: b.dataset.state, page: 1 }, true));
  let timer = 0;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => update({ q: search.value, page: 1 }, true), 150);
  });
  window.addEventListener("hashchange", () => {
    const wanted = readHash();
    if (wanted.state !== view.state || wanted.q !== view.q || wanted.page !== view.page) {
      search.value = wanted.q;
      update(wanted, true);
    }
  });
  const initial = readHash();
  search.value = initial.q;
  update(initial, true);
})();
"""

_JS = _JS.replace("__PAGE_SIZE__", str(PAGE_SIZE))


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


#: No network at all: images from files beside the report only, and exactly our script and style.
_CSP = (
    f"default-src 'none'; img-src 'self' file: data:; style-src {_csp_hash(_CSS)}; "
    f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'"
)


def _head(job_name: str, output_dir: Path, counts: dict[str, int]) -> str:
    """Everything before the item data; the counts are in the HTML itself (readable without JS)."""
    e = html.escape
    total = counts.get("total", sum(counts.get(s, 0) for s in STATES))
    count_items = "".join(
        f'<li data-count="{s}"><b>{counts.get(s, 0) if s != "total" else total}</b> {s}</li>'
        for s in ("total", *STATES)
    )
    buttons = "".join(
        f'<button type="button" data-state="{s}" aria-pressed="{str(s == "all").lower()}">'
        f"{s} <span>{total if s == 'all' else counts.get(s, 0)}</span></button>"
        for s in ("all", "failed", "succeeded", "pending", "running")
    )
    made = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{e(_CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(job_name)} — batchfuse report</title>\n"
        f"<style>{_CSS}</style></head>\n<body>\n"
        '<header class="top">\n'
        f"<h1>job {e(job_name)}</h1>\n"
        f'<p class="meta">output folder {e(str(output_dir))} · report made {e(made)}</p>\n'
        f'<ul id="counts">{count_items}</ul>\n'
        f'<div class="controls"><nav id="filters">{buttons}</nav>\n'
        '<input type="search" id="q" placeholder="search key, prompt, error" aria-label="search"></div>\n'
        '<p id="shown"></p>\n'
        "<noscript><p>The item cards need JavaScript; the counts above do not.</p></noscript>\n"
        "</header>\n"
        '<nav class="pager" aria-label="pages"></nav>\n<main id="cards"></main>\n'
        '<nav class="pager" aria-label="pages"></nav>\n'
    )


def _tail() -> str:
    return f"<script>{_JS}</script>\n</body></html>\n"
