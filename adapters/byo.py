"""SIP-trunk ("bring your own") numbers: a CSV file stands in for a carrier inventory API.

The file needs a ``number`` column; every other column is kept as a label. Rows that cannot be
read are reported with their line number, because the person fixing the file needs the line.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from numsync.config import ByoSourceConfig
from numsync.errors import ProtocolError

from .base import Source, SourceRecord, VapiOwner, to_e164

__all__ = ["ByoSource", "build"]


class ByoSource:
    kind = "byo"
    numbers_per_round_trip = sys.maxsize  # a local file

    def __init__(self, cfg: ByoSourceConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    def owner(self) -> VapiOwner:
        return VapiOwner("byo-phone-number", "credentialId", self.cfg.vapi_credential_id)

    def _fail(self, message: str) -> ProtocolError:
        return ProtocolError(f"source {self.name}: {message}", api=self.name, operation="list")

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        path = Path(self.cfg.numbers_file)
        try:
            handle = path.open(newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            raise self._fail(f"numbers_file {path} does not exist") from None
        except OSError as exc:
            raise self._fail(f"cannot read numbers_file {path}: {exc.strerror}") from None
        with handle:
            reader = csv.DictReader(handle)
            try:
                fields = reader.fieldnames or []
            except (csv.Error, UnicodeDecodeError) as exc:
                raise self._fail(f"{path}: not a readable CSV file ({exc.__class__.__name__})") from None
            header = {f.strip().lower(): f for f in fields if f}
            if "number" not in header:
                raise self._fail(f"{path}: line 1: no 'number' column (columns: {', '.join(fields) or 'none'})")
            col = header["number"]
            try:
                for row in reader:
                    if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                        continue  # a blank line
                    yield self._record(path, reader.line_num, row, col)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise self._fail(f"{path}: line {reader.line_num}: unreadable row ({exc})") from None

    def _record(self, path: Path, line: int, row: dict[str, Any], col: str) -> SourceRecord:
        # A bad row is not a bad file: it becomes an invalid_number finding naming its line.
        raw = (row.get(col) or "").strip()
        labels = {k: str(v) for k, v in row.items() if k != col and k and v not in (None, "")}
        if None in row:
            labels["problem"] = "more fields than the header has"
            return SourceRecord(number=raw or "(empty)", e164=None, carrier_id=f"line {line}", labels=labels)
        if not raw:
            return SourceRecord(number="(empty)", e164=None, carrier_id=f"line {line}", labels=labels)
        # Without the E.164 check, numbers are compared and imported as written.
        e164 = to_e164(raw, default_region=self.cfg.default_region) if self.cfg.e164_check else raw
        return SourceRecord(number=raw, e164=e164, carrier_id=f"line {line}", status=None, labels=labels,
                            routing=None, routed_elsewhere=False)

    def still_owned(self, numbers: Sequence[str]) -> None:
        """Nothing to ask: the file is read whole, and is the inventory."""

    def import_body(self, e164: str) -> dict[str, Any]:
        return {
            "provider": "byo-phone-number",
            "number": e164,
            "credentialId": self.cfg.vapi_credential_id,
            "numberE164CheckEnabled": self.cfg.e164_check,
        }

    def close(self) -> None:
        return None


def build(cfg: ByoSourceConfig, *, on_request: Callable[[str, str], None] | None = None) -> Source:
    return ByoSource(cfg)
