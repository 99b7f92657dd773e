"""Tests of numsync.reporting: each format rendered from realistic reports, read back as a consumer would.

The JSON is validated against the strict schema in tests/schemas, the CSV is read with
``csv.DictReader``, the SVG is parsed as XML, and the HTML and Markdown are checked for the
things a reader relies on (escaping, new/resolved marks, groups, the in-sync state).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from numsync.reporting import (
    CSV_COLUMNS,
    FORMATS,
    ReportContext,
    build_context,
    history_entry,
    render,
    render_csv,
    render_html,
    render_json,
    render_markdown,
    slack_summary,
    write_reports,
)
from numsync.reporting.kinds import KINDS
from numsync.reporting.markdown import MAX_ROWS

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "report.schema.json").read_text())
HOSTILE = '<script>alert("x")</script> & | `tick` [link](http://evil) =cmd'
SVG_NS = "{http://www.w3.org/2000/svg}"


def finding(kind: str, number: str | None, source: str | None, **kw: Any) -> dict[str, Any]:
    out = {
        "kind": kind,
        "number": number,
        "source": source,
        "vapi_ids": [],
        "carrier_id": None,
        "first_seen_at": "2025-03-01T02:00:00Z",
        "action": "none",
        "action_status": "none",
        "detail": None,
    }
    out.update(kw)
    return out


def summary_of(findings: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    return counts


def rich_report() -> dict[str, Any]:
    """Every finding kind, a failed and a suspect source, null source and number, hostile text."""
    findings = [
        finding(
            "missing_in_vapi",
            "+14155550100",
            "twilio-main",
            carrier_id="PN0001",
            action="import",
            action_status="planned",
            first_seen_at="2025-03-02T02:00:05Z",
        ),
        finding(
            "missing_in_vapi",
            "+14155550101",
            "twilio-main",
            carrier_id="PN0002",
            action="import",
            action_status="failed",
            detail='Vapi said "400: bad number", retry later',
        ),
        finding(
            "missing_in_vapi",
            "+4930123456",
            "trunk-a",
            action="import",
            action_status="skipped",
            detail="over policy.max_imports_per_run",
        ),
        finding(
            "routed_elsewhere",
            "+14155550102",
            "twilio-main",
            carrier_id="PN0003",
            detail="voice_url is https://example.com/voice",
        ),
        finding("orphaned", "+14155550103", "twilio-main", vapi_ids=["pn-orph-1"]),
        finding("moved", "+14155550104", "twilio-main", vapi_ids=["pn-moved-1"], detail="owned by trunk-a"),
        finding("blocked", "+14155550105", "twilio-main", vapi_ids=["pn-blocked-1"]),
        finding(
            "stuck_activating",
            "+14155550106",
            "twilio-main",
            vapi_ids=["pn-stuck-1"],
            detail="activating since 2025-03-02T00:00:00Z",
        ),
        finding("unrouted", "sip:support@example.sip.vapi.ai", None, vapi_ids=["pn-sip-1"]),
        finding("duplicate_in_vapi", "+14155550107", "twilio-main", vapi_ids=["pn-dup-1", "pn-dup-2"]),
        finding(
            "unmanaged",
            "+14155550108",
            None,
            vapi_ids=["pn-unmanaged-1"],
            detail="twilio account AC...ffff is not configured",
        ),
        finding("invalid_number", HOSTILE, "trunk-a", detail='line 7, comma, "quote"\nnewline'),
        finding("source_unavailable", None, "telnyx-main", detail="Telnyx answered 503 three times"),
        finding(
            "source_unavailable",
            None,
            "vonage-main",
            detail="inventory empty while Vapi holds 12 records of it",
        ),
    ]
    return {
        "schema_version": 1,
        "run_id": "run-20250302-0200",
        "mode": "reconcile",
        "started_at": "2025-03-02T02:00:00Z",
        "finished_at": "2025-03-02T02:01:12Z",
        "outcome": "error",
        "vapi": {"numbers": 1234},
        "sources": [
            {"name": "twilio-main", "kind": "twilio", "status": "ok", "numbers": 1200, "error": None},
            {
                "name": "telnyx-main",
                "kind": "telnyx",
                "status": "failed",
                "numbers": None,
                "error": "Telnyx answered 503 three times",
            },
            {
                "name": "vonage-main",
                "kind": "vonage",
                "status": "suspect",
                "numbers": 0,
                "error": "inventory empty while Vapi holds 12 records",
            },
            {"name": "trunk-a", "kind": "byo", "status": "ok", "numbers": 40, "error": None},
        ],
        "summary": summary_of(findings),
        "findings": findings,
    }


def empty_report() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "run_id": "run-empty",
        "mode": "plan",
        "started_at": "2025-03-02T02:00:00.123456Z",
        "finished_at": "2025-03-02T02:00:03Z",
        "outcome": "in_sync",
        "vapi": {"numbers": 0},
        "sources": [{"name": "twilio-main", "kind": "twilio", "status": "ok", "numbers": 0, "error": None}],
        "summary": {},
        "findings": [],
    }


def big_report(n: int = 10_000) -> dict[str, Any]:
    report = rich_report()
    findings = [
        finding(
            "missing_in_vapi" if i % 3 else "orphaned",
            f"+1415{i:07d}",
            "twilio-main",
            vapi_ids=[] if i % 3 else [f"pn-{i}"],
            carrier_id=f"PN{i:032x}" if i % 3 else None,
            detail=f"row {i} <b>bold</b>",
        )
        for i in range(n)
    ]
    report["findings"] = findings
    report["summary"] = summary_of(findings)
    return report


def rich_context(report: dict[str, Any]) -> ReportContext:
    new_keys = frozenset((f["kind"], f["number"], f["source"]) for f in report["findings"][:3])
    resolved = [finding("orphaned", "+14155559999", "twilio-main", vapi_ids=["pn-gone"], detail=HOSTILE)]
    history = [
        {
            "run_id": f"run-{i}",
            "started_at": f"2025-02-{i + 1:02d}T02:00:00Z",
            "outcome": "drift" if i % 4 else "in_sync",
            "counts": {"missing_in_vapi": i % 5, "orphaned": i % 3, "blocked": 1 if i > 20 else 0},
        }
        for i in range(28)
    ]
    return ReportContext(new_keys=new_keys, resolved=resolved, previous_run_id="run-27", history=history)


def svg_of(page: str) -> ET.Element:
    match = re.search(r"<svg.*?</svg>", page, re.S)
    assert match, "the page has no inline SVG"
    return ET.fromstring(match.group(0))  # noqa: S314 - our own output, and parsing it is the check


def series_kinds(svg: ET.Element) -> list[str]:
    return [g.get("data-kind", "") for g in svg.iter(f"{SVG_NS}g") if g.get("class") == "series"]


# -- JSON and the schema ---------------------------------------------------------------------------


class TestJson:
    def test_schema_is_valid_draft_2020_12(self) -> None:
        jsonschema.Draft202012Validator.check_schema(SCHEMA)

    @pytest.mark.parametrize("make", [rich_report, empty_report])
    def test_output_validates_and_round_trips(self, make: Any) -> None:
        report = make()
        text = render_json(report)
        assert text.endswith("}\n")
        assert text.startswith('{\n  "schema_version": 1,\n  "run_id"')
        loaded = json.loads(text)
        jsonschema.Draft202012Validator(SCHEMA).validate(loaded)
        assert loaded == report

    def test_keys_follow_the_contract_order_whatever_the_input_order(self) -> None:
        report = rich_report()
        shuffled = {k: report[k] for k in reversed(list(report))}
        shuffled["findings"] = [{k: f[k] for k in reversed(list(f))} for f in report["findings"]]
        shuffled["sources"] = [{k: s[k] for k in reversed(list(s))} for s in report["sources"]]
        shuffled["summary"] = dict(sorted(report["summary"].items()))
        loaded = json.loads(render_json(shuffled))
        assert list(loaded) == list(report)
        assert list(loaded["findings"][0]) == list(report["findings"][0])
        assert list(loaded["sources"][0]) == ["name", "kind", "status", "numbers", "error"]
        assert list(loaded["summary"]) == [k for k in KINDS if k in report["summary"]]
        assert render_json(shuffled) == render_json(report)

    def test_keys_the_contract_adds_later_are_kept_after_the_known_ones(self) -> None:
        report = empty_report()
        report["future_field"] = {"x": 1}
        assert list(json.loads(render_json(report)))[-1] == "future_field"

    def test_non_ascii_is_written_as_text(self) -> None:
        report = rich_report()
        report["findings"][0]["detail"] = "Zürich ☎"
        assert "Zürich ☎" in render_json(report)

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            ((), {"extra": 1}),
            (("mode",), "apply"),
            (("outcome",), "ok"),
            (("started_at",), "2025-03-02T02:00:00+00:00"),
            (("vapi", "numbers"), -1),
            (("vapi", "numbers"), 1.5),
            (("summary",), {"not_a_kind": 1}),
            (("sources", 0, "status"), "down"),
            (("sources", 0, "error"), "an ok source has no error"),
            (("sources", 1, "error"), None),
            (("findings", 0, "kind"), "lost"),
            (("findings", 0, "number"), None),
            (("findings", 0, "action_status"), "none"),
            (("findings", 4, "action"), "import"),
            (("findings", 0, "surprise"), True),
            (("findings", 9, "vapi_ids"), ["pn-dup-1"]),
            (("findings", 10, "source"), "twilio-main"),
            (("findings", 12, "source"), None),
            (("findings", 1, "first_seen_at"), "yesterday"),
        ],
    )
    def test_schema_rejects(self, path: tuple[Any, ...], value: Any) -> None:
        report = json.loads(render_json(rich_report()))
        target = report
        for step in path[:-1]:
            target = target[step]
        if path:
            target[path[-1]] = value
        else:
            report.update(value)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(SCHEMA).validate(report)


# -- CSV -------------------------------------------------------------------------------------------


class TestCsv:
    def test_round_trips_through_dictreader(self) -> None:
        report = rich_report()
        text = render_csv(report)
        assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert len(rows) == len(report["findings"])
        for row, f in zip(rows, report["findings"], strict=True):
            assert row["run_id"] == report["run_id"]
            assert row["kind"] == f["kind"]
            assert row["source"] == (f["source"] or "")
            assert row["vapi_ids"] == ";".join(f["vapi_ids"])
            assert row["carrier_id"] == (f["carrier_id"] or "")
            assert row["first_seen_at"] == f["first_seen_at"]
            assert (row["action"], row["action_status"]) == (f["action"], f["action_status"])
            if f["kind"] != "invalid_number":
                assert row["number"] == (f["number"] or "")
                assert row["detail"] == (f["detail"] or "")
        assert rows[11]["detail"] == 'line 7, comma, "quote"\nnewline'

    def test_formula_cells_are_defused_but_phone_numbers_are_not(self) -> None:
        report = empty_report()
        report["findings"] = [
            finding("invalid_number", '=HYPERLINK("http://x")', "twilio-main", detail="@SUM(A1)"),
            finding("missing_in_vapi", "+14155550100", "twilio-main", detail="-notes"),
        ]
        rows = list(csv.DictReader(io.StringIO(render_csv(report), newline="")))
        assert rows[0]["number"] == '\'=HYPERLINK("http://x")'
        assert rows[0]["detail"] == "'@SUM(A1)"
        assert rows[1]["number"] == "+14155550100"
        assert rows[1]["detail"] == "'-notes"

    def test_empty_report_has_only_the_header(self) -> None:
        assert render_csv(empty_report()) == ",".join(CSV_COLUMNS) + "\r\n"


# -- Markdown --------------------------------------------------------------------------------------


class TestMarkdown:
    def test_title_sources_summary_and_groups(self) -> None:
        report = rich_report()
        md = render_markdown(report, rich_context(report))
        assert md.splitlines()[0] == "# numsync report: error"
        assert "| telnyx-main | telnyx | **failed** | - | Telnyx answered 503 three times |" in md
        for kind in KINDS:
            assert f"(`{kind}`)" in md
        assert "| `missing_in_vapi` | 3 | 3 |" in md
        assert "## Resolved since the previous run: 1" in md
        assert md.count("| **new** |") == 3
        assert "Compared with the previous run `run-27`." in md

    def test_hostile_text_cannot_break_tables_or_become_markup(self) -> None:
        report = rich_report()
        md = render_markdown(report, ReportContext())
        assert "<script>" not in md
        assert r"\<script\>" in md
        # every table row has the same number of unescaped pipes as its header
        for block in md.split("\n\n"):
            rows = [line for line in block.splitlines() if line.startswith("|")]
            if rows:
                widths = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
                assert len(widths) == 1, block

    def test_groups_are_capped_with_a_note_and_new_rows_come_first(self) -> None:
        report = big_report(MAX_ROWS * 2)
        new_last = report["findings"][-1]
        ctx = ReportContext(new_keys=frozenset({(new_last["kind"], new_last["number"], new_last["source"])}))
        md = render_markdown(report, ctx)
        missing = sum(1 for f in report["findings"] if f["kind"] == "missing_in_vapi")
        assert f"... and {missing - MAX_ROWS} more" in md
        assert new_last["number"] in md

    def test_in_sync(self) -> None:
        md = render_markdown(empty_report(), ReportContext())
        assert md.startswith("# numsync report: in sync\n")
        assert "**In sync**" in md
        assert "No findings." in md
        assert "## Findings" not in md


# -- HTML ------------------------------------------------------------------------------------------


class TestHtml:
    def test_hostile_input_renders_as_text(self) -> None:
        report = rich_report()
        report["run_id"] = 'run-"><script>alert(1)</script>'
        report["sources"][1]["error"] = "<img src=x onerror=alert(1)>"
        page = render_html(report, rich_context(report))
        assert page.count("<script") == 1  # ours, at the end of the page
        assert "<img" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page

    def test_self_contained(self) -> None:
        page = render_html(rich_report(), ReportContext())
        assert not re.search(r"<(link|iframe|object|embed|img)\b", page)
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
        assert "@import" not in page
        assert "url(" not in page
        assert 'content="default-src &#x27;none&#x27;;' in page

    def test_sections_badges_and_resolved(self) -> None:
        report = rich_report()
        ctx = rich_context(report)
        page = render_html(report, ctx)
        for kind in KINDS:
            assert f'id="kind-{kind}"' in page
        assert page.count('class="badge new"') == len(ctx.new_keys)
        assert page.count('<tr class="f') == len(report["findings"])
        assert 'id="resolved"' in page
        assert "+14155559999" in page
        assert "twilio-main" in page
        assert "Telnyx answered 503 three times" in page
        assert "took 1 min 12 s" in page

    def test_zero_findings_is_a_clear_in_sync_state(self) -> None:
        page = render_html(empty_report(), ReportContext())
        assert "<b>In sync.</b>" in page
        assert "No findings: nothing to do." in page
        assert 'id="resolved"' not in page
        svg = svg_of(page)
        assert series_kinds(svg) == []
        assert "No findings in this run" in ET.tostring(svg, encoding="unicode")

    def test_chart_has_one_series_per_kind_present_with_titles(self) -> None:
        report = rich_report()
        ctx = rich_context(report)
        svg = svg_of(render_html(report, ctx))
        present = {k for h in ctx.history for k, n in h["counts"].items() if n} | set(report["summary"])
        kinds = series_kinds(svg)
        assert sorted(kinds) == sorted(present)
        assert kinds == [k for k in KINDS if k in present]
        assert svg.find(f"{SVG_NS}title") is not None
        for g in svg.iter(f"{SVG_NS}g"):
            if g.get("class") == "series":
                assert g.find(f"{SVG_NS}title") is not None
                assert all(r.find(f"{SVG_NS}title") is not None for r in g.iter(f"{SVG_NS}rect"))
        outcomes = next(g for g in svg.iter(f"{SVG_NS}g") if g.get("class") == "outcomes")
        assert len(outcomes.findall(f"{SVG_NS}rect")) == len(ctx.history) + 1
        legend = next(g for g in svg.iter(f"{SVG_NS}g") if g.get("class") == "legend")
        assert len(legend.findall(f"{SVG_NS}text")) == len(present)

    def test_chart_keeps_thirty_runs_and_does_not_repeat_the_current_one(self) -> None:
        report = empty_report()
        history = [history_entry(report | {"run_id": f"r{i}"}) for i in range(40)] + [history_entry(report)]
        svg = svg_of(render_html(report, ReportContext(history=history)))
        outcomes = next(g for g in svg.iter(f"{SVG_NS}g") if g.get("class") == "outcomes")
        assert len(outcomes.findall(f"{SVG_NS}rect")) == 30

    def test_ten_thousand_findings_render_fast_and_big_groups_collapse(self) -> None:
        report = big_report(10_000)
        start = time.perf_counter()
        page = render_html(report, rich_context(report))
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"render_html took {elapsed:.2f}s"
        assert page.count('<tr class="f') == 10_000
        assert '<details class="group"><summary>twilio-main' in page  # collapsed: no "open"

    def test_unknown_future_kind_still_renders(self) -> None:
        report = empty_report()
        report["outcome"] = "drift"
        report["findings"] = [finding("number_ported_out", "+14155550100", "twilio-main")]
        page = render_html(report, ReportContext())
        assert 'id="kind-number_ported_out"' in page
        assert series_kinds(svg_of(page)) == ["number_ported_out"]


# -- Slack -----------------------------------------------------------------------------------------

SECRETISH = re.compile(
    r"(AC|SK)[0-9a-f]{32}|xox[abpr]-|KEY[0-9A-Z]{20,}|[A-Za-z0-9+/_-]{40,}|auth_token|api_secret|api_key"
)


def all_strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in all_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in all_strings(v)]
    return []


class TestSlack:
    def test_carries_outcome_counts_new_resolved_and_sources(self) -> None:
        report = rich_report()
        msg = slack_summary(report, rich_context(report), report_url="https://reports.example.com/r/1")
        json.dumps(msg)
        assert msg["text"].startswith("numsync reconcile: error, 14 findings (3 new, 1 resolved)")
        text = "\n".join(all_strings(msg["blocks"]))
        for kind, n in report["summary"].items():
            assert f"`{kind}`: *{n}*" in text
        assert "*New since the previous report*" in text
        assert "+14155550100" in text
        assert "*Resolved since the previous report*" in text
        assert "+14155559999" in text
        assert ":x: *telnyx-main* (telnyx): failed" in text
        assert ":warning: *vonage-main* (vonage): suspect" in text
        assert {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open the report"},
            "url": "https://reports.example.com/r/1",
        } in msg["blocks"][-2]["elements"]

    def test_no_secret_looking_values_and_no_url_credentials(self) -> None:
        report = big_report(500)
        msg = slack_summary(
            report, rich_context(report), report_url="https://admin:hunter2@reports.example.com/r/1?x=1"
        )
        for s in all_strings(msg):
            assert not SECRETISH.search(s), s
        assert "hunter2" not in json.dumps(msg)
        assert "https://reports.example.com/r/1?x=1" in json.dumps(msg)

    def test_hostile_text_is_escaped_for_mrkdwn(self) -> None:
        report = rich_report()
        report["findings"][0]["number"] = "<!channel> <http://evil|click>"
        key = ("missing_in_vapi", report["findings"][0]["number"], "twilio-main")
        msg = slack_summary(report, ReportContext(new_keys=frozenset({key})))
        text = json.dumps(msg)
        assert "<!channel>" not in text
        assert "&lt;!channel&gt;" in text

    def test_stays_within_slack_limits_for_a_huge_report(self) -> None:
        report = big_report(10_000)
        report["sources"] = [
            {"name": f"src-{i}", "kind": "byo", "status": "failed", "numbers": None, "error": "x" * 500}
            for i in range(80)
        ]
        ctx = ReportContext(
            new_keys=frozenset((f["kind"], f["number"], f["source"]) for f in report["findings"]),
            resolved=report["findings"][:5000],
        )
        msg = slack_summary(report, ctx, report_url="file:///tmp/report.html")
        assert len(msg["blocks"]) <= 50
        for block in msg["blocks"]:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000
            assert block["type"] != "actions"  # a file: URL is no button
        assert "... and 9,990 more" in json.dumps(msg)

    def test_in_sync(self) -> None:
        msg = slack_summary(empty_report(), ReportContext())
        assert msg["text"] == "numsync plan: in sync, 0 findings, run run-empty"
        assert "*No findings*" in json.dumps(msg)


# -- write_reports ---------------------------------------------------------------------------------


class TestWriteReports:
    def test_writes_every_format_into_a_new_directory(self, tmp_path: Path) -> None:
        report = rich_report()
        out = tmp_path / "a" / "b"
        paths = write_reports(report, rich_context(report), out, FORMATS)
        assert paths == [out / f"report.{ext}" for ext in ("json", "md", "html", "csv")]
        assert json.loads(paths[0].read_text(encoding="utf-8")) == report
        assert paths[3].read_bytes() == render_csv(report).encode("utf-8")  # CRLF kept as is
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)

    def test_format_list_is_forgiving_about_case_spaces_and_repeats(self, tmp_path: Path) -> None:
        paths = write_reports(empty_report(), ReportContext(), tmp_path, [" JSON", "json", "md "])
        assert [p.name for p in paths] == ["report.json", "report.md"]

    def test_unknown_format_is_rejected_by_name_before_anything_is_written(self, tmp_path: Path) -> None:
        out = tmp_path / "reports"
        with pytest.raises(ValueError, match="'pdf'"):
            write_reports(empty_report(), ReportContext(), out, ["json", "pdf"])
        assert not out.exists()
        with pytest.raises(ValueError, match="'xml'"):
            render(empty_report(), ReportContext(), "xml")

    def test_a_failing_renderer_leaves_the_previous_reports_intact(self, tmp_path: Path) -> None:
        write_reports(empty_report(), ReportContext(), tmp_path, ["md", "json"])
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        broken = rich_report()
        broken["vapi"]["numbers"] = float("nan")  # JSON cannot carry NaN: render_json raises
        with pytest.raises(ValueError, match="JSON compliant"):
            write_reports(broken, ReportContext(), tmp_path, ["md", "json"])
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    def test_a_failing_write_leaves_no_temporary_file(self, tmp_path: Path) -> None:
        (tmp_path / "report.html").mkdir()  # os.replace cannot put a file over a directory
        with pytest.raises(OSError):
            write_reports(empty_report(), ReportContext(), tmp_path, ["json", "html"])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]
        assert (tmp_path / "report.html").is_dir()


# -- ReportContext from the previous report --------------------------------------------------------


class TestBuildContext:
    def test_new_and_resolved(self) -> None:
        previous = rich_report()
        previous["run_id"] = "run-prev"
        previous["started_at"] = "2025-03-01T02:00:00Z"
        current = copy.deepcopy(rich_report())
        gone = current["findings"].pop(4)  # orphaned on twilio-main, a judged source: resolved
        added = finding("blocked", "+14155550199", "trunk-a", vapi_ids=["pn-b"], first_seen_at="2025-03-02T02:00:30Z")
        hidden = finding(
            "orphaned", "+14155550177", "twilio-main", vapi_ids=["pn-h"], first_seen_at="2025-02-01T00:00:00Z"
        )  # kept its date while its source was down
        current["findings"] += [added, hidden]
        ctx = build_context(current, previous, history=[history_entry(previous)])
        assert ctx.previous_run_id == "run-prev"
        assert ctx.new_keys == {("blocked", "+14155550199", "trunk-a")}
        assert ctx.resolved == [gone]
        assert [h["run_id"] for h in ctx.history] == ["run-prev"]

    def test_findings_of_unjudged_sources_are_not_resolved(self) -> None:
        previous = rich_report()
        previous["findings"].append(finding("orphaned", "+1999", "telnyx-main", vapi_ids=["pn-t"]))
        previous["findings"].append(finding("orphaned", "+1998", "unselected", vapi_ids=["pn-u"]))
        previous["findings"].append(finding("unmanaged", "+1997", None, vapi_ids=["pn-n"]))
        ctx = build_context(rich_report(), previous)
        assert [f["number"] for f in ctx.resolved] == ["+1997"]

    def test_first_run(self) -> None:
        ctx = build_context(rich_report(), None)
        assert ctx == ReportContext()


def test_every_renderer_is_deterministic() -> None:
    report = rich_report()
    for fmt in FORMATS:
        assert render(report, rich_context(report), fmt) == render(copy.deepcopy(report), rich_context(report), fmt)
