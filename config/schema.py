"""The configuration schema: the YAML file of the contract, as strict pydantic models.

Every model forbids unknown keys, so a typo fails loudly instead of silently using a default.
Secrets are ``SecretStr``: their repr and str are masked, so they cannot reach a log line or an
exception by accident; code that must send one calls ``.get_secret_value()`` at the last moment.
"""

from __future__ import annotations

import re
import string
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "ByoSourceConfig",
    "Config",
    "ImportSettings",
    "PerformanceConfig",
    "PolicyConfig",
    "ReportsConfig",
    "ScheduleConfig",
    "ServerConfig",
    "SourceConfig",
    "TelnyxSourceConfig",
    "TwilioSourceConfig",
    "VapiConfig",
    "VonageSourceConfig",
    "parse_crontab",
    "parse_duration",
]

NAME_PLACEHOLDERS = frozenset({"source", "number", "kind", "carrier_id", "label"})
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """Read '90s', '15m', '1h30m', '2d' or a number of seconds; reject anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15m, 1h or 90s")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"'{value}' is longer than ten years") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("expected a duration such as 15m, 1h or 90s")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if text[pos : match.start()].strip():
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == 0 or text[pos:].strip():
            raise ValueError(f"'{value}' is not a duration such as 15m, 1h or 90s")
    else:
        raise ValueError("expected a duration such as 15m, 1h or 90s")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > 10 * 365 * 86400:
        raise ValueError(f"'{value}' is longer than ten years")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, Field(description="15m, 1h, 90s ...")]

# (name, lowest, highest, names) of the five crontab fields; day of week 7 is Sunday, as in cron.
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_ITEM = re.compile(r"(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/(\d+))?")


def _cron_value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.isdigit():
        value = int(text)
    elif text in names:
        value = names.index(text) + (1 if name == "month" else 0)
    else:
        raise ValueError(f"{name}: '{text}' is not a number{' or a name' if names else ''}")
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is outside {low}-{high}")
    return value


def parse_crontab(expr: str) -> tuple[frozenset[int], ...]:
    """Read a standard 5-field crontab expression into the set of values of each field.

    Standard cron meaning, which is what people copy from crontabs: day of week 0 and 7 are
    Sunday (APScheduler 3.x's own parser counts from Monday, so the service never hands it the
    raw text). A day of month and a day of week both restricted mean "either" in cron and "both"
    in APScheduler; rather than guess, that combination is refused.
    """
    fields = expr.lower().split()
    if len(fields) != 5:
        raise ValueError(f"'{expr}' is not a cron expression: expected 5 fields "
                         f"(minute hour day-of-month month day-of-week), got {len(fields)}")
    out: list[frozenset[int]] = []
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            match = _CRON_ITEM.fullmatch(item)
            if not match:
                raise ValueError(f"'{expr}': {name}: cannot read '{item}'")
            star, first, last, step = match.groups()
            if star:
                start, stop = low, high
            else:
                try:
                    start = _cron_value(first, name, low, high, names)
                    stop = _cron_value(last, name, low, high, names) if last else (high if step else start)
                except ValueError as exc:
                    raise ValueError(f"'{expr}': {exc}") from None
            if stop < start:
                raise ValueError(f"'{expr}': {name}: range '{item}' runs backwards")
            increment = int(step) if step else 1
            if increment < 1:
                raise ValueError(f"'{expr}': {name}: step must be at least 1")
            values.update(range(start, stop + 1, increment))
        if name == "day of week" and 7 in values:
            values = (values - {7}) | {0}
        out.append(frozenset(values))
    if not fields[2].startswith("*") and not fields[4].startswith("*"):
        raise ValueError(f"'{expr}': restrict the day of month or the day of week, not both "
                         "(cron reads that as either, APScheduler as both)")
    return tuple(out)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ImportSettings(_Strict):
    """How numbers found missing in Vapi are imported from one source."""

    enabled: bool = True
    assistant_id: str | None = None
    squad_id: str | None = None
    workflow_id: str | None = None
    name: str = "{source} {number}"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    take_over: bool = False
    sms_enabled: bool = False

    @model_validator(mode="after")
    def _one_destination(self) -> ImportSettings:
        given = [k for k in ("assistant_id", "squad_id", "workflow_id") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"at most one of assistant_id / squad_id / workflow_id (got {', '.join(given)})")
        return self

    @field_validator("name")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        # Only plain placeholders: an attribute, an index or a format spec would fail (or allocate
        # gigabytes) at run time on a value the config check never saw.
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(value) if f is not None or spec or conv]
            specs = [(spec, conv) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"name template is not valid: {exc}") from None
        bad = [f for f in fields if f not in NAME_PLACEHOLDERS]
        if bad or any(spec or conv for spec, conv in specs):
            raise ValueError(
                f"unknown placeholder {{{(bad or ['...'])[0]}}} in name template; use {{source}}, {{number}}, "
                "{kind}, {carrier_id} or {label}, without format specs"
            )
        return value


class _SourceBase(_Strict):
    name: str
    base_url: str | None = None
    ca_bundle: Path | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    import_: ImportSettings = Field(default_factory=ImportSettings, alias="import")
    routes_to_vapi: list[str] = Field(default_factory=list)

    @field_validator("routes_to_vapi", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # Connection ids are numeric at Telnyx; YAML reads them as ints unless quoted.
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
            raise ValueError(f"'{value}' must be lowercase letters, digits and '-'")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/.*)?", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value.rstrip("/") if value else value


class TwilioSourceConfig(_SourceBase):
    kind: Literal["twilio"]
    account_sid: str
    auth_token: SecretStr | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _credentials(self) -> TwilioSourceConfig:
        if self.auth_token is None and (self.api_key is None or self.api_secret is None):
            raise ValueError("twilio needs auth_token, or api_key and api_secret")
        if self.auth_token is not None and (self.api_key is not None or self.api_secret is not None):
            raise ValueError("twilio takes auth_token or api_key + api_secret, not both")
        if not re.fullmatch(r"AC[0-9a-zA-Z]{32}", self.account_sid):
            raise ValueError("account_sid must look like AC followed by 32 characters")
        return self


class TelnyxSourceConfig(_SourceBase):
    kind: Literal["telnyx"]
    api_key: SecretStr
    vapi_credential_id: str


class VonageSourceConfig(_SourceBase):
    kind: Literal["vonage"]
    api_key: SecretStr
    api_secret: SecretStr
    vapi_credential_id: str

    @field_validator("base_url")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("the Vonage SDK only speaks https; base_url must start with https://")
        return value


class ByoSourceConfig(_SourceBase):
    kind: Literal["byo"]
    numbers_file: Path
    vapi_credential_id: str
    e164_check: bool = True
    default_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")


SourceConfig = Annotated[
    TwilioSourceConfig | TelnyxSourceConfig | VonageSourceConfig | ByoSourceConfig,
    Field(discriminator="kind"),
]


class VapiConfig(_Strict):
    api_key: SecretStr
    base_url: str = "https://api.vapi.ai"
    ca_bundle: Path | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    page_size: int = Field(default=1000, ge=1, le=1000)
    max_concurrency: int = Field(default=8, ge=1, le=64)
    requests_per_second: float = Field(default=50.0, ge=0, description="0 turns the client-side limit off")
    max_attempts: int = Field(default=6, ge=1, le=20)
    backoff_base: float = Field(default=0.5, ge=0, le=60)
    max_retry_after: float = Field(default=60.0, ge=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/.*)?", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value.rstrip("/")


class PolicyConfig(_Strict):
    max_imports_per_run: int = Field(default=100, ge=0)
    max_orphan_fraction: float = Field(default=0.5, ge=0, le=1)
    stuck_activating_after: timedelta = timedelta(hours=1)

    _parse = field_validator("stuck_activating_after", mode="before")(parse_duration)


class ScheduleConfig(_Strict):
    reconcile_every: timedelta = timedelta(minutes=15)
    apply: bool = True
    report_cron: str = "0 2 * * *"

    _parse = field_validator("reconcile_every", mode="before")(parse_duration)

    @field_validator("report_cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        # Checked here rather than by APScheduler, which the config (imported by the engine) must
        # not import; the service builds its trigger from the same parse.
        parse_crontab(value)
        return value


ReportFormat = Literal["json", "md", "html", "csv"]


def _all_formats() -> list[ReportFormat]:
    return ["json", "md", "html", "csv"]


class ReportsConfig(_Strict):
    dir: Path = Path("./reports")
    formats: list[ReportFormat] = Field(default_factory=_all_formats)
    webhook_url: str | None = None
    keep_runs: int = Field(default=30, ge=1, description="nightly report folders kept")

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class ServerConfig(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)


class PerformanceConfig(_Strict):
    # auto: list each source (and Vapi) in a forked process of its own on Linux when the run is in
    # the main thread (the CLI), so parsing large inventories uses every core; true: from any
    # thread (the daemon); false: threads of one process.
    list_in_processes: Literal["auto"] | bool = "auto"


class Config(_Strict):
    database_url: str = "sqlite:///numsync.db"
    vapi: VapiConfig
    sources: list[SourceConfig] = Field(default_factory=list)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for src in self.sources:
            if src.name in seen:
                raise ValueError(f"two sources are named '{src.name}'")
            seen.add(src.name)
        return self

    def source(self, name: str) -> SourceConfig:
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(name)
