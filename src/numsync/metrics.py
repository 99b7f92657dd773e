"""Prometheus metrics, all in one place, on an injectable registry (a fresh one per test).

Names and labels are the contract's (INTERFACE.md, "Metrics"); labels never carry a number or a
URL, so cardinality stays at kinds x sources.
"""

from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

FINDING_KINDS = (
    "missing_in_vapi", "routed_elsewhere", "orphaned", "moved", "blocked", "stuck_activating", "unrouted",
    "duplicate_in_vapi", "unmanaged", "invalid_number", "source_unavailable",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter("numsync_runs", "Runs by mode and outcome.", ["mode", "outcome"], registry=r)
        self.duration = Histogram(
            "numsync_run_duration_seconds", "Wall time of a run.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600), registry=r,
        )
        self.last_success = Gauge(
            "numsync_last_success_timestamp_seconds", "Unix time of the last run that did not end in error.",
            registry=r,
        )
        self.findings = Gauge("numsync_findings", "Findings of the last run.", ["kind", "source"], registry=r)
        self.source_numbers = Gauge("numsync_source_numbers", "Numbers listed per source in the last run.",
                                    ["source"], registry=r)
        self.api_requests = Counter("numsync_api_requests", "HTTP requests to Vapi and the carriers.",
                                    ["api", "status"], registry=r)
        self.leader = Gauge("numsync_leader", "1 on the replica that runs the schedule, 0 on standbys.",
                            registry=r)
        self._lock = threading.Lock()

    def on_request(self, api: str, status: str) -> None:
        self.api_requests.labels(api=api, status=status).inc()

    def observe_run(self, *, mode: str, outcome: str, seconds: float,
                    findings: dict[tuple[str, str], int], source_numbers: dict[str, int]) -> None:
        with self._lock:
            self.runs.labels(mode=mode, outcome=outcome).inc()
            self.duration.observe(seconds)
            if outcome != "error":
                self.last_success.set(time.time())
            self.findings.clear()
            for (kind, source), count in findings.items():
                self.findings.labels(kind=kind, source=source).set(count)
            for name, count in source_numbers.items():
                self.source_numbers.labels(source=name).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
