"""Output names: from a template to a relative path that stays inside the output folder and that
Linux, macOS and SMB shares can all store, plus the key under which two names are one file.

The rule for characters those filesystems cannot store (applied to the rendered name, per
folder or file name, and documented in README):

- each of ``: * ? " < > |`` and each control character becomes ``_`` (``4:5`` -> ``4_5``);
- trailing dots and spaces are removed (``Acme Inc.`` -> ``Acme Inc``);
- a Windows device name (``con``, ``nul``, ``com1``, ... with any extension) gets a leading ``_``.

A name that then is empty, or longer than 255 bytes (UTF-8), is refused.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from batchfuse.records import ItemSpec
from batchfuse.templates import TemplateProblem, fields_of, render

TEMP_DIR = ".batchfuse-tmp"
#: Where earlier versions of outputs are kept (:mod:`batchfuse.outputs.versions`).
VERSIONS_DIR = ".batchfuse-versions"
#: Folders batchfuse keeps for itself in an output folder: no output name may use them.
RESERVED = (TEMP_DIR, VERSIONS_DIR)
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
#: Longest file or folder name, in UTF-8 bytes, on ext4, APFS, NTFS and SMB shares.
NAME_MAX = 255

_UNSTORABLE = re.compile(r'[:*?"<>|\x01-\x1f]')
_DEVICE = re.compile(r"(?i)^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.|$)")
#: A name the checks and the mapping would return unchanged (one plain ASCII file name with an
#: output extension): taken as it is, which is most names of a large catalog.
_PLAIN = re.compile(r"(?i)[A-Za-z0-9_+\-][A-Za-z0-9_+ .\-]{0,200}\.(?:png|jpg|jpeg|webp)")


class PathProblem(ValueError):
    """An output name is not acceptable; the message says why."""


def output_name(template: str, values: Mapping[str, Any], n: int, count: int) -> str:
    """The relative output path for image ``n`` (1-based) of ``count`` from one attempt.

    When the template has no ``{n}`` and a reply carries several images, ``-N`` is added
    before the extension.  A variant row (``values["variant"]``, from ``variants: N``) is named
    like the ``n`` images of one request: ``-V`` is added (or ``{n}`` is the variant) unless the
    template uses ``{variant}``.  Raises :class:`PathProblem` for a name that would escape the
    output folder (absolute, ``..``, NUL), has an extension we cannot write, or is too long;
    characters some filesystems cannot store are mapped (see the module's rule).
    """
    variant = values.get("variant")
    variant = variant if isinstance(variant, int) and not isinstance(variant, bool) else None
    try:
        fields = fields_of(template)
        # a variant's one image is numbered by its variant: {item}-2.png, or {n} = 2
        rendered = render(template, {**values, "n": variant if variant is not None and count == 1 else n})
    except TemplateProblem as exc:
        raise PathProblem(str(exc)) from None
    suffix = ""
    if variant is not None and "variant" not in fields and not ("n" in fields and count == 1):
        suffix += f"-{variant}"
    if count > 1 and "n" not in fields:
        suffix += f"-{n}"
    if suffix:
        stem, dot, ext = rendered.rpartition(".")
        rendered = f"{stem}{suffix}.{ext}" if dot else f"{rendered}{suffix}"
    if _PLAIN.fullmatch(rendered) and not _DEVICE.match(rendered):
        return rendered
    return portable(check_relative(rendered))


def item_names(template: str, spec: ItemSpec, count: int) -> list[str]:
    """Every output name of an item with this spec whose request makes ``count`` images
    (the values are the ones the runner names its files from)."""
    values = spec.naming_values
    return [output_name(template, values, n, count) for n in range(1, count + 1)]


def check_relative(name: str) -> str:
    """``name`` if it is a plain relative path inside the output folder (string checks only:
    this runs for every item of a large catalog)."""
    if not name or "\x00" in name:
        raise PathProblem(f"output name {name!r} is empty or contains a NUL byte")
    if "\\" in name:
        raise PathProblem(f"output name {name!r} contains a backslash")
    if name.startswith("/") or (name[1:2] == ":" and name[0].isalpha() and name[2:3] in ("", "/")):
        raise PathProblem(f"output name {name!r} is absolute; it must stay inside the output folder")
    parts = name.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise PathProblem(f"output name {name!r} leaves or skips through the output folder")
    for reserved in RESERVED:
        if any(part.lower().startswith(reserved) for part in parts):
            raise PathProblem(f"output name {name!r} uses the reserved folder {reserved}")
    if os.path.splitext(parts[-1])[1].lower() not in FORMATS:
        raise PathProblem(f"output name {name!r} must end in one of {', '.join(sorted(FORMATS))}")
    return name


def portable(name: str) -> str:
    """``name`` (already checked) with the module's rule applied to each of its parts."""
    parts = []
    for part in name.split("/"):
        mapped = _UNSTORABLE.sub("_", part).rstrip(". ")
        if not mapped:
            raise PathProblem(f"output name {name!r} has a folder name of only dots or spaces")
        if _DEVICE.match(mapped):
            mapped = "_" + mapped
        size = len(mapped.encode("utf-8"))
        if size > NAME_MAX:
            raise PathProblem(
                f"output name {short(name)!r} has a part of {size} bytes; file and folder names may have "
                f"at most {NAME_MAX}"
            )
        parts.append(mapped)
    return "/".join(parts)


def short(name: str) -> str:
    """``name`` cut to about 80 characters for a one-line message."""
    return name if len(name) <= 80 else name[:40] + "..." + name[-37:]


def same_file_key(name: str) -> str:
    """The key under which names are one file on a case-insensitive, normalization-insensitive
    filesystem (macOS, SMB shares): NFC, then case folded."""
    if name.isascii():
        lowered = name.lower()
        return name if lowered == name else lowered  # one string, not two, per name kept
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())
