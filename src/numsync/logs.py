"""Logging: one structlog pipeline for our events and the libraries' (httpx, twilio, apscheduler...).

``configure_logging`` is called only from entry points. Every line passes the same processors,
so the ``run_id`` bound with contextvars reaches library lines too, and the redaction
processor sees everything: it drops secret-named keys and masks the config's secret values
anywhere in the text, as a backstop behind the adapters' own care.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .redaction import REDACTED, SECRETS, is_secret_key

__all__ = ["configure_logging", "redact_event"]

QUIET = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "twilio": logging.WARNING,
    "twilio.http_client": logging.WARNING,
    "urllib3": logging.WARNING,
    "apscheduler": logging.WARNING,
    "sqlalchemy": logging.WARNING,
    "alembic": logging.WARNING,
    "vonage": logging.ERROR,  # logs URL and body of every error response
    "vonage_http_client": logging.ERROR,
    "telnyx": logging.WARNING,
    "hpack": logging.WARNING,
}


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return SECRETS.mask(value)
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else _mask(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Mask secret-named keys and known secret values in every field of the event."""
    for key in list(event_dict):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _mask(event_dict[key])
    return event_dict


def configure_logging(
    *, fmt: Literal["json", "console"] | None = None, verbose: bool = False, stream: Any = None,
    quiet: bool = False,
) -> None:
    """Configure structlog and the standard library once; ``quiet`` keeps only warnings (the demo)."""
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    if fmt == "json":
        tail: list[Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_event,
            structlog.processors.JSONRenderer(),
        ]
    else:
        tail = [
            redact_event,
            structlog.dev.ConsoleRenderer(
                colors=getattr(stream, "isatty", lambda: False)(),
                exception_formatter=structlog.dev.plain_traceback,
            ),
        ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)  # -v is for numsync's own events; libraries stay quiet
    logging.captureWarnings(True)
