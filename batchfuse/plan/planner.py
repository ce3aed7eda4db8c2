"""Planning: from a manifest to items, each with a stable key and a spec hash.

The spec hash covers what decides the image: provider, model, prompt, parameters and the
*content* digests of the reference images.  A rerun skips done items whose hash is
unchanged and re-runs the ones whose hash changed.

Planning is a generator so that a large catalog never sits in memory whole: the CLI runs it
once to collect every problem (nothing is written if there is one) and once more to write.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from batchfuse.errors import ManifestError, ManifestProblems, OutputError
from batchfuse.images import ImageInfo, ImageInspector, ImageProblem, fit_steps
from batchfuse.outputs.names import PathProblem, item_names
from batchfuse.outputs.objectlisting import ObjectListing
from batchfuse.outputs.objectstore import STAGING_DIR, Location
from batchfuse.plan.catalog import RawItem, raw_items
from batchfuse.plan.fitting import BodySizer, Fitted, mb
from batchfuse.plan.manifest import (
    ITEM_KEYS,
    Manifest,
    ProviderConfig,
    describe_errors,
    did_you_mean,
    validation_problems,
)
from batchfuse.plan.path_claims import PathClaims
from batchfuse.plan.spec_hash import SpecHasher, canonical_json
from batchfuse.providers import provider_class
from batchfuse.providers.base import Provider
from batchfuse.providers.fetch import has_scheme, url_problem
from batchfuse.records import ImageRef, ItemSpec, PlannedRow
from batchfuse.templates import TemplateProblem, fields_of, render, shorten

MAX_PROBLEMS = 50
#: Seeds are 32-bit signed integers at the API; ``seed: auto`` and variants stay under this.
SEED_MAX = 2**31 - 1


def _hashable(values: dict[str, Any]) -> Any:
    """A key equal for equal parameter dicts, their lists and objects included; None when a
    value cannot be hashed."""
    try:
        key = _frozen(values)
        hash(key)
        return key
    except TypeError:
        return None


def _frozen(value: Any) -> Any:
    """A stand-in for a JSON-like value that can be hashed (a list as a tuple, an object as a
    frozenset of items)."""
    if isinstance(value, dict):
        return frozenset((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


#: Distinct request skeletons remembered by Planner._size before it stops trying.
MAX_SKELETONS = 256
_PROBE_PROMPT = 'a "probe" \\ with\ttabs,\nnew lines, \u00e9\u4e2d\U0001f600 and \u2028 \x00 </script>'


def _json_len(text: str) -> int:
    """Bytes of ``text`` as a JSON string (``json.dumps(..., ensure_ascii=False)``, UTF-8)."""
    return len(encode_basestring(text).encode("utf-8"))


def _duplicates_problem(duplicates: dict[str, list[int | None]], file: str) -> ManifestError:
    """One line listing duplicate keys and the rows they stand in."""

    def where(rows: list[int | None]) -> str:
        numbers = [str(r) for r in rows if r is not None]
        return f" (rows {', '.join(numbers)})" if numbers else ""

    keys = sorted(duplicates)
    shown = ", ".join(f"{k}{where(duplicates[k])}" for k in keys[:10])
    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
    field = "key" if any(r is not None for r in duplicates[keys[0]]) else "id"
    return ManifestError(file, f"duplicate item keys: {shown}{more}", field=field)


@dataclass(frozen=True)
class ParamSet:
    """One distinct set of item parameters and what the plan derives from it, worked out once
    for all the rows that share it."""

    params: BaseModel
    #: The parameters among the naming values (``{aspect_ratio}`` in a file name, ...).
    values: dict[str, Any]
    #: What the request sends (``Provider.request_params``): the rows' ``spec.params``, shared, never changed.
    request: dict[str, Any]
    #: ``request`` by :func:`canonical_json` (it is JSON: the providers dump it in pydantic's JSON mode).
    request_json: str


@dataclass
class Planner:
    """Turns a validated manifest into planned rows, collecting problems as it goes."""

    manifest: Manifest
    manifest_path: Path
    inspector: ImageInspector = field(default_factory=ImageInspector)

    def __post_init__(self) -> None:
        self.file = str(self.manifest_path)
        self.base_dir = self.manifest_path.parent.absolute()
        try:
            self.provider: type[Provider] = provider_class(self.manifest.provider.kind)
        except KeyError as exc:
            raise ManifestError(self.file, str(exc.args[0]), field="provider.kind") from None
        model = self.manifest.provider.model
        self.provider_config = self._provider_config()
        #: The model's rules: the catalog's entry, ``provider.model_info`` over it, or none known.
        self.model = self.provider.entry(model, self.provider_config)
        #: Things ``validate`` says once (an unlisted model, items fitted to the request limit).
        self.warnings: list[str] = []
        if not self.model.checked:
            self.warnings.append(
                f"model {model} is not in the catalog: rules and prices unchecked{did_you_mean(model, self.provider.MODELS)} "
                "(describe it under provider.model_info; `batchfuse models` lists the catalog)"
            )
        self.request_limit = self.provider.request_limit(self.model)
        images_config = self.manifest.images_config
        self.sizer = BodySizer(lambda spec, b64: self.provider.body_size(self.model, spec, b64), images_config.max_side)
        #: Request bytes without the prompt, per distinct parameters and images (see _size).
        self._bodies: dict[Any, int | None] = {}
        self.fit_steps = fit_steps(images_config.max_side) if images_config.fit else []
        #: Items whose reference images were re-encoded to fit the request limit (key -> how).
        self.fitted: dict[str, Fitted] = {}
        try:
            defaults = self.provider.Params.model_validate(self.manifest.defaults)
        except ValidationError as exc:
            raise ManifestProblems(
                validation_problems(exc, self.file, self.provider.Params, prefix="defaults")
            ) from None
        self.defaults = defaults.model_dump()
        # a default the model does not take is said once, not for every item
        broken = [p for p in self.provider.check(self.model, defaults, []) if p.alone and p.field in self.manifest.defaults]
        if broken:
            raise ManifestProblems([ManifestError(self.file, p.message, field=f"defaults.{p.field}") for p in broken])
        self.param_names = tuple(self.provider.Params.model_fields)
        try:
            numbered = "n" in fields_of(self.manifest.output.filename)
        except TemplateProblem:  # reported for each item
            numbered = True
        #: Whether a reply may carry more images than asked for, written as ``name-1``, ``name-2``.
        self._extras = getattr(self.provider, "MAY_ADD_IMAGES", False) and not numbered
        # Memos for large catalogs, where thousands of rows share images and parameters.
        self._refs: dict[str, tuple[dict[str, Any], ImageInfo] | ImageProblem] = {}
        self._params: dict[Any, ParamSet] = {}
        #: id of a memoized ParamSet's ``request`` -> its hashable key (the memo keeps it alive).
        self._param_keys: dict[int, Any] = {}
        self._spec_hash = SpecHasher(self.provider.kind, self.model.name)
        #: Every output name of the plan, kept by :meth:`validate` for the check against other jobs.
        self.claims: PathClaims | None = None
        #: The plan in brief, kept by :meth:`validate`: key -> (spec hash, ordinal, index into
        #: :attr:`digest_params`) of each row, so syncing with the store and estimating need no second pass.
        self.digest: dict[str, tuple[str, int, int]] | None = None
        #: The distinct parameter sets of the plan, indexed by the digest's third field.
        self.digest_params: list[dict[str, Any]] = []

    def _validated_params(self, overrides: dict[str, Any]) -> ParamSet:
        """The item's parameters: defaults with its overrides, validated once per distinct set."""
        key = _hashable(overrides)
        if key is not None and key in self._params:
            return self._params[key]
        params = self.provider.Params.model_validate({**self.defaults, **overrides})
        request = self.provider.request_params(self.model, params)
        values = {k: v for k, v in params.model_dump(mode="json").items() if v is not None and (k, v) != ("variants", 1)}
        param_set = ParamSet(params, values, request, canonical_json(request))
        if key is not None:
            self._params[key] = param_set
            self._param_keys[id(request)] = _hashable(request)
        return param_set

    def _size(self, spec: ItemSpec, infos: list[ImageInfo | None], params_json: str | None = None) -> int:
        """The request's size (``BodySizer.size``), without building and serializing a body for
        every item: a body is a skeleton (parameters, images) plus the prompt as one JSON string,
        so its size is the skeleton's, measured once per distinct parameters and images, plus the
        prompt's encoded length. Checked when a skeleton is first measured, on the item's prompt
        and on a probe prompt (quotes, escapes, non-ASCII); a provider whose body is not built
        that way, or parameters of every item their own (``seed: auto``), are measured each time."""
        if params_json is None:
            try:
                params_json = canonical_json(spec.params)
            except (TypeError, ValueError):
                params_json = None
        key = (params_json, tuple(r.cache_key for r in spec.images)) if params_json is not None else None
        base = self._bodies.get(key, -1) if key is not None else None
        if base == -1:
            if len(self._bodies) >= MAX_SKELETONS:
                return self.sizer.size(spec, infos, None)
            base = self.sizer.size(replace(spec, prompt=""), infos, None) - 2
            probes = (spec.prompt, _PROBE_PROMPT)
            if any(self.sizer.size(replace(spec, prompt=p), infos, None) != base + _json_len(p) for p in probes):
                base = None
            self._bodies[key] = base
        if base is None:
            return self.sizer.size(spec, infos, None)
        return base + _json_len(spec.prompt)

    def _local_ref(self, src: str) -> tuple[dict[str, Any], ImageInfo] | ImageProblem:
        """A local reference image, checked once per command however many items share it."""
        hit = self._refs.get(src)
        if hit is None:
            path = os.path.normpath(os.path.join(self.base_dir, src))
            try:
                info = self.inspector.inspect(path)
                hit = (ImageRef(path, info.digest), info)
            except ImageProblem as exc:
                hit = exc
            self._refs[src] = hit
        return hit

    @property
    def output_location(self) -> Location | None:
        """The bucket and prefix of an ``s3://`` output.dir (None for a local folder)."""
        out = self.manifest.output
        if not out.is_object_store:
            return None
        return Location.parse(out.dir, out.s3.endpoint_url if out.s3 else None, out.s3.region if out.s3 else None)

    @property
    def output_shown(self) -> str:
        """Where outputs go, as shown to the user: the folder, or the bucket's s3:// URL."""
        location = self.output_location
        return location.url if location is not None else str(self.output_dir)

    @property
    def output_dir(self) -> Path:
        """The output folder; for a bucket, the local folder where images are staged before upload."""
        location = self.output_location
        if location is not None:
            return (self.base_dir / STAGING_DIR / location.bucket / location.prefix).resolve()
        return (self.base_dir / self.manifest.output.dir).resolve()

    def validate(self) -> int:
        """Check every item and every output path (unique, storable, writable on disk); raises
        :class:`ManifestProblems` listing the problems. Returns the count."""
        location = self.output_location
        objects = ObjectListing(location, self.manifest.job) if location is not None else None
        claims = PathClaims(self.output_dir, self.manifest.job, self._extras, objects)
        try:
            problem = claims.root_problem()
        except OutputError as exc:  # a read-only file system: exit 3, but named like the rest
            raise OutputError(f"{self.file}: output.dir: {exc.message}") from None
        if problem:
            raise ManifestError(self.file, problem, field="output.dir")
        problems: list[ManifestError] = []
        digest: dict[str, tuple[str, int, int]] = {}
        seen: dict[Any, int] = {}
        params: list[dict[str, Any]] = []
        for row in self.rows(problems, claims):
            key = self._param_keys.get(id(row.spec.params))
            if key is None:
                key = _hashable(row.spec.params)
            index = seen.get(key) if key is not None else None
            if index is None:
                index = len(params)
                params.append(row.spec.params)
                if key is not None:
                    seen[key] = index
            digest[row.key] = (row.spec_hash, row.ordinal, index)
        if problems:
            raise ManifestProblems(problems[:MAX_PROBLEMS])
        self.claims = claims
        self.digest, self.digest_params = digest, params
        return len(digest)

    def _provider_config(self) -> BaseModel:
        """The keys under ``provider:`` beyond the generic ones, validated by the provider's own model."""
        try:
            return self.provider.Config.model_validate(self.manifest.provider.model_extra or {})
        except ValidationError as exc:
            # unknown keys are suggested from the generic fields and the provider's own alike
            known = type("ProviderKeys", (self.provider.Config, ProviderConfig), {})
            raise ManifestProblems(validation_problems(exc, self.file, known, prefix="provider")) from None

    def rows(self, problems: list[ManifestError], claims: PathClaims | None = None) -> Iterator[PlannedRow]:
        """The planned rows; with ``claims``, each item's output names are claimed there too."""
        first_row: dict[str, int | None] = {}  # key -> its row: all that is kept per item
        duplicates: dict[str, list[int | None]] = {}
        duplicate_file = ""
        for raw in raw_items(self.manifest, self.manifest_path):
            if isinstance(raw, ManifestError):
                problems.append(raw)
                continue
            for row, names in self._row(raw, problems) or ():
                if row.key in first_row:
                    duplicates.setdefault(row.key, [first_row[row.key]]).append(raw.row)
                    duplicate_file = duplicate_file or raw.file
                    continue
                first_row[row.key] = raw.row
                clash = claims.claim(names, (row.key, raw.row), row.spec_hash) if claims is not None else None
                if clash:
                    problems.append(raw.error(clash, "output.filename"))
                    continue
                yield row
        if duplicates:
            problems.append(_duplicates_problem(duplicates, duplicate_file))

    def _row(self, item: RawItem, problems: list[ManifestError]) -> list[tuple[PlannedRow, list[str]]] | None:
        """The item's planned rows (one per variant) and their output names, or None after
        adding its problems."""
        raw = item.fields

        def problem(fld: str | None, message: str) -> None:
            problems.append(item.error(message, fld))

        if item.key is None:
            problem("id", "is required")
            return None
        key = item.key
        overrides = {k: v for k, v in raw.items() if k in self.param_names}
        own = {k: v for k, v in raw.items() if k not in self.param_names and k not in ITEM_KEYS}
        if item.row is None:  # inline items: a near-miss of a known key is a typo, not a field
            for name in own:
                hint = did_you_mean(name, ITEM_KEYS + self.param_names)
                if hint:
                    problem(name, f"unknown key{hint}")
                    return None
        model = self.model
        try:
            param_set = self._validated_params(overrides)
        except ValidationError as exc:
            for fld, message in describe_errors(exc, self.provider.Params):
                problem(fld, message)
            return None
        values: dict[str, Any] = {
            **{k: v for k, v in own.items() if isinstance(v, (str, int, float, bool))},
            **param_set.values,
            "job": self.manifest.job,
            "item": key,
            "id": key,
        }
        prompt_template = raw.get("prompt", self.manifest.prompt)
        if not isinstance(prompt_template, str) or not prompt_template.strip():
            problem("prompt", "is required (a non-empty string)")
            return None
        try:
            prompt = render(prompt_template, values)
        except TemplateProblem as exc:
            problem("prompt", str(exc))
            return None
        image_templates = raw.get("images", self.manifest.images) or []
        if not isinstance(image_templates, list) or not all(isinstance(i, str) for i in image_templates):
            problem("images", "must be a list of file paths or http(s) URLs")
            return None
        refs: list[ImageRef] = []
        infos: list[ImageInfo | None] = []
        for i, template in enumerate(image_templates):
            fld = f"images[{i}]"
            try:
                src = render(template, values)
            except TemplateProblem as exc:
                problem(fld, str(exc))
                return None
            if has_scheme(src):
                if (refused := url_problem(src)) is not None:
                    problem(fld, refused)
                    return None
                refs.append(ImageRef(src, "url:" + src))
                infos.append(None)
                continue
            ref = self._local_ref(src)
            if isinstance(ref, ImageProblem):
                problem(fld, f"{shorten(src, 200)}: {ref}")
                return None
            refs.append(ref[0])
            infos.append(ref[1])
        broken = self.provider.check(model, param_set.params, infos)
        if broken:
            for p in broken:
                problem(p.field, p.message)
            return None
        request_params = param_set.request
        spec = ItemSpec(
            prompt=prompt,
            params=request_params,
            images=tuple(refs),
            vars={k: v for k, v in values.items() if k not in request_params},
        )
        spec = self._fitted(key, spec, infos, problem, param_set.request_json)
        if spec is None:
            return None
        planned = []
        for variant_key, variant_spec in variants(key, spec, getattr(param_set.params, "variants", None) or 1):
            try:  # named exactly as the runner will name them, every image of the request
                names = item_names(
                    self.manifest.output.filename, variant_spec, self.provider.images_per_item(variant_spec.params)
                )
            except PathProblem as exc:
                problem("output.filename", str(exc))
                return None
            shared = variant_spec.params is request_params  # else a variant's own seed
            params_json = param_set.request_json if shared else canonical_json(variant_spec.params)
            digest = self._spec_hash(variant_spec.prompt, params_json, tuple(r.cache_key for r in variant_spec.images))
            planned.append((PlannedRow(key=variant_key, ordinal=item.ordinal, spec_hash=digest, spec=variant_spec), names))
        return planned

    def _fitted(
        self, key: str, spec: ItemSpec, infos: list[ImageInfo | None], problem: Callable[[str | None, str], None],
        params_json: str | None = None,
    ) -> ItemSpec | None:
        """The spec whose request fits the API's size limit: as it is, or with its reference
        images re-encoded (``reference_images.fit``); None after saying why it cannot."""
        limit = self.request_limit
        if limit is None or not spec.images:
            return spec
        try:
            size = self._size(spec, infos, params_json)
            if size <= limit:
                return spec
            if not self.fit_steps:
                problem("images", f"the request would be {mb(size)} ({size:,} bytes), over the API's limit of "
                        f"{limit:,} bytes; set reference_images.fit: true, lower reference_images.max_side, "
                        "or use fewer or smaller images")
                return None
            fitted = self.sizer.fit(spec, infos, limit, self.fit_steps)
        except ImageProblem as exc:
            problem("images", str(exc))
            return None
        if isinstance(fitted, int):
            problem("images", f"the request is {mb(size)} ({size:,} bytes) and still {mb(fitted)} at the smallest "
                    f"fitting step ({self.fit_steps[-1]}), over the API's limit of {limit:,} bytes; "
                    "use fewer reference images")
            return None
        self.fitted[key] = fitted[1]
        return fitted[0]


def derived_seed(key: str) -> int:
    """A stable seed for ``seed: auto``, from the item key (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(f"seed:{key}".encode()).digest()[:4], "big") & SEED_MAX


def variants(key: str, spec: ItemSpec, count: int) -> list[tuple[str, ItemSpec]]:
    """The rows of an item: itself, or with ``variants: N`` (N > 1) one row per variant, keyed
    ``<key>#1`` ... ``<key>#N``, each with its own seed (the item's seed, or ``auto``'s, plus the
    variant's index minus one) and ``variant`` among its naming values (outputs ``{item}-1.png`` ...).
    ``seed: auto`` becomes the seed derived from the key."""
    seed = spec.params.get("seed")
    if count <= 1:
        if seed == "auto":
            spec = replace(spec, params={**spec.params, "seed": derived_seed(key)})
        return [(key, spec)]
    base = derived_seed(key) if seed in (None, "auto") else int(seed)
    return [
        (f"{key}#{v}", replace(spec, params={**spec.params, "seed": (base + v - 1) & SEED_MAX},
                               vars={**spec.vars, "variant": v}))
        for v in range(1, count + 1)
    ]
