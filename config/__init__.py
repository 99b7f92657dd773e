"""Configuration: the contract's YAML file, validated strictly (unknown keys are errors)."""

from .loader import find_config_path, load_config, parse_config
from .schema import (
    ByoSourceConfig,
    Config,
    ImportSettings,
    PerformanceConfig,
    PolicyConfig,
    ReportsConfig,
    ScheduleConfig,
    ServerConfig,
    SourceConfig,
    TelnyxSourceConfig,
    TwilioSourceConfig,
    VapiConfig,
    VonageSourceConfig,
    parse_duration,
)

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
    "find_config_path",
    "load_config",
    "parse_config",
    "parse_duration",
]
