"""The job manifest: YAML loaded safely into validated models.

Every problem becomes one line naming the file, the item and the field, e.g.
``jobs/x.yaml: item poster: aspect_ratio: must be one of 1:1, 2:3, ...``.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchfuse.errors import InputError, ManifestError, ManifestProblems
from batchfuse.inputfiles import MAX_MANIFEST_BYTES, FileProblem, read_regular
from batchfuse.plan import manifest_yaml
from batchfuse.templates import shorten

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_LIKE = re.compile(r"^(sk-|AIza|Bearer\s)|^[A-Za-z0-9_\-]{32,}$")


class Strict(BaseModel):
    # Numbers must be finite: ``timeout_s: inf`` (even quoted) would wait forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProviderConfig(Strict):
    """The generic keys of ``provider:``; any other key belongs to the provider's own ``Config``
    (validated by the planner, errors naming ``provider.<field>``)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    kind: str
    base_url: str
    model: str
    api_key_env: str | None = None
    #: Options for the built-in mock API when ``base_url: mock`` (latency_ms, rate_503, ...).
    mock: dict[str, Any] = Field(default_factory=dict)
    #: ``online``: one request per item; ``batch``: the provider's Batch API (half price, within 24 h).
    mode: Literal["online", "batch"] = "online"

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != "mock" and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError('must be an http(s) URL, or "mock" for the built-in mock API')
        return v.rstrip("/")

    @model_validator(mode="after")
    def _batch_mode(self) -> ProviderConfig:
        if self.mode == "batch" and self.kind != "gemini":
            raise ValueError(f"mode: batch is for kind gemini (its Batch API); kind {self.kind} runs online only")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if KEY_LIKE.search(v) or not ENV_NAME.match(v):
            raise ValueError(
                "must name an environment variable (like DMXAPI_KEY) that holds the key; "
                "never write the key itself into a manifest"
            )
        return v


class Limits(Strict):
    concurrency: int = Field(8, ge=1, le=1024)
    requests_per_minute: float | None = Field(60, gt=0, le=1_000_000)
    max_attempts: int = Field(4, ge=1, le=100)
    timeout_s: float = Field(300, gt=0, le=86_400)
    #: Lower rate and concurrency when 429s arrive at the configured rate, then climb back.
    adaptive_rate: bool = True
    #: Transient failures in a row (over several items) that mean "the API is down": pause.
    outage_threshold: int = Field(10, ge=2, le=1_000_000)
    #: The first pause; each failed probe doubles it, up to 5 minutes.
    outage_pause_s: float = Field(5.0, gt=0, le=3_600)
    #: Exponential backoff: the n-th retry waits up to base × 2^(n-1) seconds (full jitter).
    backoff_base_s: float = Field(1.0, ge=0, le=3_600)
    backoff_max_s: float = Field(60.0, ge=0, le=86_400)
    max_images: int | None = Field(None, ge=1, le=1_000_000_000)
    max_cost: float | None = Field(None, gt=0, le=1e12)


class S3Output(Strict):
    """How to reach the bucket of an ``s3://`` output.dir (credentials never come from here)."""

    #: Another S3-compatible service (MinIO, R2, GCS interop, Ceph): its base URL.
    endpoint_url: str | None = None
    #: The bucket's region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's, else us-east-1).
    region: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and (not re.match(r"^https?://[^\s/@]+(/[^\s@]*)?$", v)):
            raise ValueError("must be an http(s) URL without user or password (e.g. https://minio.internal:9000)")
        return v.rstrip("/") if v else v


#: Keys under output.s3 that would put a credential into a manifest.
S3_SECRET_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key", "secret_key",
                  "access_key_id", "secret_access_key", "session_token", "secret", "key", "token", "password",
                  "credentials")


class OutputConfig(Strict):
    #: A folder (relative to the manifest) or a bucket: ``s3://bucket/prefix/``.
    dir: str = "out"
    filename: str = "{item}.png"
    s3: S3Output | None = None

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if v.lower().startswith("s3://"):
            from batchfuse.outputs.objectstore import Location

            if "@" in v.split("/")[2]:  # never echo what may be a credential
                raise ValueError("an s3:// URL must not carry a user or key; credentials come from the environment")
            try:
                Location.parse(v)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> OutputConfig:
        if self.s3 is not None and not self.dir.lower().startswith("s3://"):
            raise ValueError("output.s3 is for an s3:// output.dir")
        return self

    @property
    def is_object_store(self) -> bool:
        return self.dir.lower().startswith("s3://")


class NetworkConfig(Strict):
    #: Let URL downloads reach loopback and private addresses (off: only public ones).
    allow_private: bool = False
    #: Largest body a URL download may have.
    max_download_mb: float = Field(40, gt=0, le=10_240)


class ImagesConfig(Strict):
    max_side: int = Field(3072, ge=64, le=16384)
    #: When an item's request would exceed the API's size limit, re-encode its reference images
    #: (smaller side, lower JPEG/WebP quality) until it fits; off: such items are refused.
    fit: bool = True


class ItemsFrom(Strict):
    #: A .csv (header row, UTF-8) or .jsonl file, relative to the manifest.
    file: str
    #: The stable item key, a template over the row's fields; default: the ``id`` column.
    key: str | None = None


class BatchConfig(Strict):
    """Batch mode (``provider.mode: batch``): how items are grouped, watched and rescued."""

    #: Requests per batch job; a larger plan is split into several batches.
    max_requests: int = Field(2000, ge=1, le=100_000)
    #: How often running batches are looked at (seconds).
    poll_s: float = Field(60, gt=0, le=86_400)
    #: With a deadline (``--until``/``--max-runtime``): items still out shortly before it are
    #: cancelled from their batches and run online (at the full price).
    fallback_online: bool = True
    #: How long before the deadline the fallback starts (seconds).
    fallback_lead_s: float = Field(900, ge=0, le=86_400)
    #: A batch pending or running longer than this many hours is reported as stale.
    stale_after_h: float = Field(24, gt=0, le=10_000)
    #: Wait for the batches (polling) until they end or the deadline comes; ``false``: submit and
    #: collect what has finished, then exit (for cron).
    wait: bool = True


class Pricing(Strict):
    """What an image costs, for the estimate and ``limits.max_cost``."""

    per_image: float | None = Field(None, ge=0, le=1e6)
    per_million_tokens: float | None = Field(None, ge=0, le=1e9)


#: Most combinations a matrix may make (each crossed with every base item).
MAX_MATRIX_COMBINATIONS = 100_000


class Manifest(Strict):
    job: str = Field(min_length=1, max_length=200)
    provider: ProviderConfig
    defaults: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    output: OutputConfig = Field(default_factory=OutputConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    images_config: ImagesConfig = Field(default_factory=ImagesConfig, alias="reference_images")
    pricing: Pricing | None = None
    batch: BatchConfig = Field(default_factory=BatchConfig)
    #: Templates every item uses unless it has its own ``prompt`` / ``images``.
    prompt: str | None = None
    images: list[str] | None = None
    items: list[dict[str, Any]] | None = Field(None, min_length=1)
    items_from: ItemsFrom | None = None
    #: Each key's values are crossed with every item (a cartesian product).
    matrix: dict[str, list[Any]] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @field_validator("matrix")
    @classmethod
    def _matrix(cls, v: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if v is None:
            return v
        for name, values in v.items():
            for i, value in enumerate(values):
                if not isinstance(value, (str, int, float)):  # bool is an int
                    kind = "nothing" if value is None else f"a {'mapping' if isinstance(value, dict) else 'list'}"
                    raise ValueError(f"{shorten(name)}[{i}] must be text, a number or true/false (got {kind})")
        combinations = math.prod(len(values) for values in v.values())
        if combinations > MAX_MATRIX_COMBINATIONS:
            raise ValueError(
                f"{combinations:,} combinations of its values; at most {MAX_MATRIX_COMBINATIONS:,} are allowed"
            )
        return v

    @model_validator(mode="after")
    def _sources(self) -> Manifest:
        if self.items is not None and self.items_from is not None:
            raise ValueError("give items or items_from, not both")
        if self.items is None and self.items_from is None and not self.matrix:
            raise ValueError("no items: give items, items_from or a matrix")
        if self.matrix is not None and any(not v for v in self.matrix.values()):
            raise ValueError("every matrix key needs at least one value")
        if self.limits.max_cost is not None and (
            self.pricing is None or (self.pricing.per_image is None and self.pricing.per_million_tokens is None)
        ):
            raise ValueError("limits.max_cost needs pricing.per_image or pricing.per_million_tokens")
        return self


#: Keys an inline item may have besides its provider's parameters; any other key is one of
#: the item's own template fields, unless it looks like a typo of a known key.
ITEM_KEYS = ("id", "prompt", "images")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(err: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        known = _known_fields(model, err["loc"][:-1]) if model else []
        return f"unknown key{did_you_mean(field, known)}"
    if kind == "missing":
        return "is required"
    got = err.get("input")
    shown = f" (got {shorten(repr(got))})" if isinstance(got, (str, int, float)) and not isinstance(got, bool) else ""
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "").replace("'", "")
        return f"must be one of {expected.replace(' or ', ', ')}{shown}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number{shown}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{shown}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{shown}"
    if kind == "dict_type":
        return "must be a mapping (key: value, ...)"
    if kind == "list_type":
        return "must be a list"
    if kind in ("string_type",):
        return f"must be a string{shown}"
    bounds = {"greater_than": "more than", "greater_than_equal": "at least", "less_than": "less than",
              "less_than_equal": "at most"}
    if kind in bounds:
        limit = next(iter(err.get("ctx", {}).values()), None)
        if not isinstance(limit, (int, float)):
            return str(err["msg"])
        return f"must be {bounds[kind]} {int(limit) if float(limit).is_integer() else limit:,}{shown}"
    if kind == "finite_number":
        return f"must be a finite number{shown}"
    if kind == "too_short" and err["loc"] == ("items",):
        return "must list at least one item"
    msg = err["msg"]
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            info = next((f for f in current.model_fields.values() if f.alias == part), None)
        if info is None:
            return []
        current = _model_of(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an optional annotation (``ModelInfo | None`` -> ``ModelInfo``)."""
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def describe_errors(exc: ValidationError, model: type[BaseModel] | None, prefix: str = "") -> list[tuple[str | None, str]]:
    """(field, description) for each problem pydantic found."""
    found = []
    for err in exc.errors():
        field = prefix
        for part in err["loc"]:
            field += f"[{part}]" if isinstance(part, int) else f".{shorten(str(part), 60)}" if field else shorten(str(part), 60)
        found.append((field or None, _describe(err, model)))
    return found


def validation_problems(
    exc: ValidationError, file: str, model: type[BaseModel] | None, prefix: str = ""
) -> list[ManifestError]:
    return [ManifestError(file, msg, field=field) for field, msg in describe_errors(exc, model, prefix)]


def load_yaml(path: Path) -> Any:
    """Parse ``path`` strictly (see :mod:`batchfuse.plan.manifest_yaml`); every problem names the line."""
    shown = str(path)
    try:
        data = read_regular(path, MAX_MANIFEST_BYTES)
    except FileProblem as exc:
        raise InputError(f"{shown}: manifest {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise InputError(f"{shown}: line {line}: not UTF-8 text{hint}; save it as UTF-8") from None
    try:
        return manifest_yaml.parse(text)
    except manifest_yaml.YamlProblem as exc:
        line = f"line {exc.line}: " if exc.line else ""
        field = f"{exc.path}: " if exc.path else ""
        raise InputError(f"{shown}: {line}{field}{exc}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(
            f"{shown}: line {line}: YAML error: control character {exc.character:#06x} is not allowed in YAML text"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            problem = f"{problem} (only plain YAML is accepted)"
        raise InputError(f"{shown}: {line}YAML error: {shorten(problem, 200)}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{shown}: YAML error: {shorten(str(exc), 200)}") from None


def load_manifest(path: Path) -> Manifest:
    """Load and validate the manifest's structure (items are checked by the planner)."""
    data = load_yaml(path)
    shown = str(path)
    if not isinstance(data, dict):
        raise InputError(f"{shown}: a manifest is a YAML mapping with job, provider and items")
    provider = data.get("provider")
    if isinstance(provider, dict):
        for secret_key in ("api_key", "key", "token", "apikey"):
            if secret_key in provider:
                raise InputError(
                    f"{shown}: provider.{secret_key}: an API key must not be written into a manifest; "
                    "set provider.api_key_env to the name of an environment variable that holds it"
                )
    output = data.get("output")
    s3 = output.get("s3") if isinstance(output, dict) else None
    if isinstance(s3, dict):
        for secret_key in S3_SECRET_KEYS:
            if secret_key in s3:
                raise InputError(
                    f"{shown}: output.s3.{secret_key}: credentials must not be written into a manifest; they come "
                    "from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE (~/.aws/credentials) or an instance role"
                )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestProblems(validation_problems(exc, shown, Manifest)) from None
