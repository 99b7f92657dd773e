"""Writing the reports of a run to disk, every format or none.

Report files are read while runs write them (a web server, a sidecar shipping them, an
operator's browser), so each file is replaced atomically: written to a temporary file in the
same directory, flushed to disk, then ``os.replace``d over the old one. Every format is rendered
before the first file is written, so a renderer that fails leaves the previous run's reports
all in place rather than a mix of two runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from numsync.reporting.context import ReportContext
from numsync.reporting.csvfmt import render_csv
from numsync.reporting.htmlfmt import render_html
from numsync.reporting.jsonfmt import render_json
from numsync.reporting.markdown import render_markdown

__all__ = ["EXTENSIONS", "FORMATS", "render", "uses_context", "write_reports"]

FORMATS = ("json", "md", "html", "csv")
EXTENSIONS = {"json": "json", "md": "md", "html": "html", "csv": "csv"}

_RENDERERS: dict[str, Callable[[Mapping[str, Any], ReportContext], str]] = {
    "json": lambda report, _ctx: render_json(report),
    "md": render_markdown,
    "html": render_html,
    "csv": lambda report, _ctx: render_csv(report),
}


# The formats that show what changed since earlier runs (a ``ReportContext``); the others ignore it.
_SHOW_CONTEXT = frozenset({"md", "html"})


def uses_context(formats: Sequence[str]) -> bool:
    """Whether any of ``formats`` shows the comparison with earlier runs: reading it from the
    database is up to five queries, of no use to a JSON or CSV report."""
    return not _SHOW_CONTEXT.isdisjoint(_normalise(formats))


def _normalise(formats: Sequence[str]) -> list[str]:
    """Formats as given, trimmed, lower-cased and each once; an unknown one is a ValueError."""
    if isinstance(formats, str):
        formats = formats.split(",")
    out: list[str] = []
    for raw in formats:
        fmt = raw.strip().lower()
        if fmt not in _RENDERERS:
            raise ValueError(f"unknown report format {raw!r}; known formats: {', '.join(FORMATS)}")
        if fmt not in out:
            out.append(fmt)
    return out


def render(report: Mapping[str, Any], ctx: ReportContext, fmt: str) -> str:
    """One format's text (``fmt`` one of ``FORMATS``)."""
    (name,) = _normalise([fmt])
    return _RENDERERS[name](report, ctx)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a file someone else placed; 0o666 lets the umask decide,
    # as a plain open() would, so reports stay readable by whoever reads the directory.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _sync_dir(directory: Path) -> None:
    """Make the renames durable; best effort, since not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_reports(
    report: Mapping[str, Any], ctx: ReportContext, directory: Path | str, formats: Sequence[str]
) -> list[Path]:
    """Write ``report.<ext>`` for each format into ``directory`` (created if needed); return the paths."""
    names = _normalise(formats)
    rendered = [(name, _RENDERERS[name](report, ctx).encode("utf-8")) for name in names]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in rendered:
        path = directory / f"report.{EXTENSIONS[name]}"
        _write_atomic(path, data)
        paths.append(path)
    _sync_dir(directory)
    return paths
