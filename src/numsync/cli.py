"""The `numsync` command. Each command is a few lines that call one function elsewhere.

Exit statuses are part of the contract: 0 in sync, 2 drift, 1 error, 75 lock held. Errors we
expect (config, database, lock, API) print one line that names the problem; anything else is
logged with a traceback (without frame locals, which could hold secrets) and exits 1.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from numsync import __version__
from numsync.errors import ConfigError, LockHeld, NumsyncError

F = TypeVar("F", bound=Callable[..., Any])

EX_TEMPFAIL = 75
log = structlog.get_logger("numsync.cli")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"numsync: error: {message}", err=True)
    sys.exit(code)


def common_options(func: F) -> F:
    """--config, --report-dir, --format, --source, -v, --log-format (the contract's common options)."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Config file (default: $NUMSYNC_CONFIG, else ./numsync.yaml)."),
        click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Write reports here instead of reports.dir."),
        click.option("--format", "formats", help="Comma-separated report formats (json,md,html,csv)."),
        click.option("--source", "sources", multiple=True, help="Only this source (repeatable)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
        click.option("--log-format", type=click.Choice(["json", "console"]),
                     help="Log format (default: console on a terminal, json otherwise)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _formats(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in ("json", "md", "html", "csv")]
    if bad or not items:
        raise ConfigError(f"--format: unknown format {', '.join(bad) or '(empty)'} (use json, md, html, csv)")
    return items


def guarded(func: F) -> F:
    """Map expected errors to one line and the contract's exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LockHeld as exc:
            _fail(str(exc), EX_TEMPFAIL)
        except NumsyncError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except click.exceptions.Exit:
            raise
        except Exception:
            log.exception("unexpected error")
            _fail("unexpected error (see the log above)")
        return None

    return wrapper  # type: ignore[return-value]


def _setup(verbose: bool, log_format: str | None, *, quiet: bool = False) -> None:
    from numsync.logs import configure_logging

    configure_logging(fmt=log_format, verbose=verbose, quiet=quiet)  # type: ignore[arg-type]


def _load(config_path: Path | None) -> Any:
    from numsync.config import load_config

    return load_config(config_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="numsync")
def main() -> None:
    """Keep the phone numbers in Vapi in agreement with the numbers your carriers say you own."""


def _progress_printer() -> Callable[[str, int, int | None], None] | None:
    if not sys.stderr.isatty():
        return None
    lock = threading.Lock()
    state: dict[str, str] = {}

    def show(api: str, done: int, total: int | None) -> None:
        with lock:
            state[api] = f"{api} {done:,}" + (f"/{total:,}" if total else "")
            sys.stderr.write("\r\x1b[2Klisting: " + "  ".join(state.values()))
            sys.stderr.flush()

    return show


def _print_summary(out: Any) -> None:
    from numsync.cli_output import summary_table

    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K")
    click.echo(summary_table(out.report))
    for path in out.paths:
        click.echo(f"report: {path}")


def _run(mode: str, config_path: Path | None, report_dir: Path | None, formats: str | None,
         sources: tuple[str, ...], verbose: bool, log_format: str | None) -> None:
    from numsync.app import run_once, settle_for_one_run

    _setup(verbose, log_format)
    config = _load(config_path)
    settle_for_one_run(config)
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:  # finish the current request, then stop
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    try:
        out = run_once(config, mode=mode, source_names=list(sources) or None, report_dir=report_dir,
                       formats=_formats(formats), progress=_progress_printer(), stop=stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_summary(out)
    if out.result.error:
        click.echo(f"numsync: {out.result.outcome}: {out.result.error}", err=True)
    sys.exit(out.result.exit_code)


@main.command()
@common_options
@guarded
def plan(config_path: Path | None, report_dir: Path | None, formats: str | None, sources: tuple[str, ...],
         verbose: bool, log_format: str | None) -> None:
    """Fetch Vapi and every source, diff, record the run and write reports. Never writes to Vapi."""
    _run("plan", config_path, report_dir, formats, sources, verbose, log_format)


@main.command()
@common_options
@guarded
def reconcile(config_path: Path | None, report_dir: Path | None, formats: str | None,
              sources: tuple[str, ...], verbose: bool, log_format: str | None) -> None:
    """Plan, then import what is missing (within policy), journaling every action."""
    _run("reconcile", config_path, report_dir, formats, sources, verbose, log_format)


@main.command()
@click.option("--run", "run_id", help="Run id (or a unique prefix); default: the last run.")
@common_options
@guarded
def report(run_id: str | None, config_path: Path | None, report_dir: Path | None, formats: str | None,
           sources: tuple[str, ...], verbose: bool, log_format: str | None) -> None:
    """Re-render a stored run's reports."""
    from numsync.app import render_stored

    _setup(verbose, log_format)
    config = _load(config_path)
    _, paths = render_stored(config, run_id, report_dir, _formats(formats))
    for path in paths:
        click.echo(f"report: {path}")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-v", "--verbose", is_flag=True)
@click.option("--log-format", type=click.Choice(["json", "console"]))
@guarded
def db_upgrade(config_path: Path | None, verbose: bool, log_format: str | None) -> None:
    """Apply database migrations."""
    import os

    from numsync.daemon.db import safe_url, upgrade

    _setup(verbose, log_format)
    url = os.environ.get("NUMSYNC_DATABASE_URL")
    if not url:
        url = _load(config_path).database_url
    rev = upgrade(url)
    click.echo(f"database {safe_url(url)} is at migration {rev}")


@main.command()
@click.option("--port", type=int, default=0, show_default=True,
              help="First port to use (Vapi; the carriers take the next three). 0: free ports.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--write-config", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the printed config to this file.")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every request.")
@guarded
def sandbox(port: int, host: str, write_config: Path | None, latency: float) -> None:
    """Serve local emulations of Vapi, Twilio, Telnyx and Vonage, and print a config for them."""
    from numsync.sandbox.demo import run_sandbox_forever

    run_sandbox_forever(port=port, host=host, write_config=write_config, latency=latency)


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("numsync-demo"), show_default=True, help="Where the demo writes its files.")
@click.option("-v", "--verbose", is_flag=True)
@click.option("--log-format", type=click.Choice(["json", "console"]))
@guarded
def demo(directory: Path, verbose: bool, log_format: str | None) -> None:
    """Sandbox + plan + reconcile + reports, end to end, with nothing but the package installed."""
    from numsync.sandbox.demo import run_demo

    _setup(verbose, log_format or "console", quiet=not verbose)
    sys.exit(run_demo(directory))


@main.command()
@common_options
@guarded
def daemon(config_path: Path | None, report_dir: Path | None, formats: str | None, sources: tuple[str, ...],
           verbose: bool, log_format: str | None) -> None:
    """Run the schedule: reconcile every schedule.reconcile_every, the drift report at schedule.report_cron."""
    from numsync.service import run_daemon

    _setup(verbose, log_format)
    config = _load(config_path)
    sys.exit(run_daemon(config, report_dir=report_dir, formats=_formats(formats),
                        source_names=list(sources) or None))


if __name__ == "__main__":  # pragma: no cover
    main()
