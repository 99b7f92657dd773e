"""Which adapter serves which ``kind``: a plain dict, so adding a carrier is one line here.

Adapters are imported lazily: a config with only SIP trunks never pays for importing three SDKs,
and a broken SDK install only breaks the sources that use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from numsync.config import SourceConfig

from .base import Source

__all__ = ["FACTORIES", "build_source", "load_adapter"]

FACTORIES: dict[str, str] = {
    "twilio": "numsync.adapters.twilio",
    "telnyx": "numsync.adapters.telnyx",
    "vonage": "numsync.adapters.vonage",
    "byo": "numsync.adapters.byo",
}


def build_source(cfg: SourceConfig, *, on_request: Callable[[str, str], None] | None = None) -> Source:
    module = importlib.import_module(FACTORIES[cfg.kind])
    source: Source = module.build(cfg, on_request=on_request)
    return source


def load_adapter(kind: str) -> None:
    """Import ``kind``'s adapter (and its SDK) now rather than at its first build."""
    importlib.import_module(FACTORIES[kind])
