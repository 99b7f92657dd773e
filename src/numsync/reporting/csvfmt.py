"""``report.csv``: one row per finding, for spreadsheets and ``csv.DictReader``.

The run id is the first column so that the CSVs of many runs can be concatenated and still
be told apart. Quoting follows RFC 4180 (``csv`` module, CRLF line ends). Spreadsheets run a
cell that starts with ``=``, ``+``, ``-``, ``@``, tab or CR as a formula, and ``detail`` or a
raw ``invalid_number`` can hold carrier-supplied text: such a cell gets a leading apostrophe
(OWASP's advice). A plain phone number such as ``+14155550100`` is no formula and is left as it is.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

from numsync.reporting.jsonfmt import FINDING_KEYS

__all__ = ["CSV_COLUMNS", "render_csv"]

CSV_COLUMNS = ("run_id", *FINDING_KEYS)  # one row per finding, led by the run it belongs to

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9][0-9 ().-]*\Z")


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def render_csv(report: Mapping[str, Any]) -> str:
    """``report.csv``: a header row, then one row per finding; ``vapi_ids`` joined with ``;``."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    run_id = _cell(report.get("run_id"))
    for f in report.get("findings") or ():
        writer.writerow(
            (
                run_id,
                _cell(f.get("kind")),
                _cell(f.get("number")),
                _cell(f.get("source")),
                _cell(";".join(str(v) for v in f.get("vapi_ids") or ())),
                _cell(f.get("carrier_id")),
                _cell(f.get("first_seen_at")),
                _cell(f.get("action")),
                _cell(f.get("action_status")),
                _cell(f.get("detail")),
            )
        )
    return buf.getvalue()
