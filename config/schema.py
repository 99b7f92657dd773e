"""The configuration schema: the YAML file of the contract, as strict pydantic models.

Every model forbids unknown keys, so a typo fails loudly instead of silently using a default.
Secrets are ``SecretStr``: their repr and str are masked, so they cannot reach a log line or an
exception by accident; code that must send one calls ``.get_secret_value()`` at the last moment.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "ByoSourceConfig",
    "Config",
    "ImportSettings",
    "PolicyConfig",
    "ReportsConfig",
    "ScheduleConfig",
    "ServerConfig",
    "SourceConfig",
    "TelnyxSourceConfig",
    "TwilioSourceConfig",
    "VapiConfig",
    "VonageSourceConfig",
    "parse_duration",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """Read '90s', '15m', '1h30m', '2d' or a number of seconds; reject anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15m, 1h or 90s")
    if isinstance(value, int | float):
        seconds = float(value)
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
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, Field(description="15m, 1h, 90s ...")]


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
        try:
            value.format(source="s", number="+1", kind="k", carrier_id="c", label="l")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"unknown placeholder {exc} in name template; use {{source}}, {{number}}, {{kind}}, "
                "{carrier_id} or {label}"
            ) from None
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


class ReportsConfig(_Strict):
    dir: Path = Path("./reports")
    formats: list[Literal["json", "md", "html", "csv"]] = Field(
        default_factory=lambda: ["json", "md", "html", "csv"]
    )
    webhook_url: str | None = None
    keep_runs: int = Field(default=30, ge=1, description="nightly report folders kept")

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class ServerConfig(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)


class Config(_Strict):
    database_url: str = "sqlite:///numsync.db"
    vapi: VapiConfig
    sources: list[SourceConfig] = Field(default_factory=list)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)

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
