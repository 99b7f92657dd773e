"""Benchmark: `numsync plan` over N Vapi records and N carrier numbers (three carriers), 20 ms latency.

Reports wall time, the latency floor of the critical path, requests per API against the minimum,
time in the SQL diff, and peak RSS of the numsync process. The emulations run in processes of
their own (one per API), so the figures are numsync's alone.

    python bench/bench_plan.py [--n 100000] [--latency 0.02] [--db sqlite|postgres] [--mode plan]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from emulators import CREDS  # noqa: E402
from scratch_db import scratch_database  # noqa: E402

from numsync.app import run_once, settle_for_one_run  # noqa: E402
from numsync.config import parse_config  # noqa: E402
from numsync.metrics import Metrics  # noqa: E402

PAGE = {"vapi": 1000, "twilio": 1000, "telnyx": 250, "vonage": 100}


APIS = ("vapi", "twilio", "telnyx", "vonage")


def start_emulators(n: int, latency: float, workdir: Path, apis: tuple[str, ...] = APIS,
                    numbers: str = "scattered") -> tuple[dict[str, dict[str, Any]], list[Any]]:
    procs, info = [], {}
    for api in apis:
        proc = subprocess.Popen([sys.executable, str(HERE / "emulators.py"), str(n), str(latency), api,
                                 str(workdir), numbers], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
    for proc in procs:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        data = json.loads(line)
        info[data["api"]] = data
    return info, procs


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """A process's name and the fields of /proc/PID/stat after it (None: gone, or no /proc)."""
    try:
        head, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    except (OSError, ValueError):
        return None
    return head.split("(", 1)[-1], rest.split()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (Linux only; 0 elsewhere)."""
    stat = _stat(pid)
    return (int(stat[1][11]) + int(stat[1][12])) / os.sysconf("SC_CLK_TCK") if stat else 0.0


def database_server_cpu() -> float:
    """CPU seconds PostgreSQL's processes on this machine have used so far, exited backends included
    (the postmaster counts a backend's time once it has reaped it); 0 where /proc is not.

    Processes are known by their name in /proc/PID/stat, which a backend keeps while it exits (its
    command line is gone by then, and a run's backends exit as its engine is disposed).
    """
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    total = 0
    for pid in pids:
        stat = _stat(pid)
        if stat and stat[0] == "postgres":
            total += sum(int(f) for f in stat[1][11:15])  # own and reaped children's user + system
    return total / os.sysconf("SC_CLK_TCK")


def config_text(info: dict[str, dict[str, Any]], db_url: str, reports: Path, processes: str = "auto") -> str:
    return f"""
database_url: {db_url}
performance:
  list_in_processes: {processes}
vapi:
  api_key: {CREDS['vapi_key']}
  base_url: {info['vapi']['url']}
  requests_per_second: 0
  max_concurrency: 8
sources:
  - name: twilio-bench
    kind: twilio
    account_sid: {CREDS['twilio_sid']}
    auth_token: {CREDS['twilio_token']}
    base_url: {info['twilio']['url']}
  - name: telnyx-bench
    kind: telnyx
    api_key: {CREDS['telnyx_key']}
    vapi_credential_id: cred-telnyx
    base_url: {info['telnyx']['url']}
  - name: vonage-bench
    kind: vonage
    api_key: {CREDS['vonage_key']}
    api_secret: {CREDS['vonage_secret']}
    vapi_credential_id: cred-vonage
    base_url: {info['vonage']['url']}
    ca_bundle: {info['vonage']['ca']}
policy:
  max_imports_per_run: 100000
reports:
  dir: {reports}
  formats: [json]
"""


def minimum_requests(n_vapi: int, per_carrier: int) -> dict[str, int]:
    return {
        "vapi": math.ceil(n_vapi / PAGE["vapi"]),
        "twilio": math.ceil(per_carrier / PAGE["twilio"]),
        "telnyx": math.ceil(per_carrier / PAGE["telnyx"]),
        "vonage": math.ceil(per_carrier / PAGE["vonage"]),
    }


def machine_loop() -> float:
    """Seconds a fixed pure-Python loop takes now: how fast this machine is at the moment (on a shared
    one it moves by a third over minutes, and a CPU-bound run's wall time with it)."""
    started = time.perf_counter()
    sum(range(30_000_000))
    return round(time.perf_counter() - started, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--mode", choices=["plan", "reconcile"], default="plan")
    ap.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    ap.add_argument("--peer", action="store_true", help="also time the naive peer (bench/naive_peer.py)")
    ap.add_argument("--prior-runs", type=int, default=0,
                    help="plans run first on the same database, untimed: from 1, the timed run knows what "
                         "each source listed last (a Vonage listing's first round asks for its pages at "
                         "once); from KEEP_SNAPSHOTS, it also prunes the oldest kept snapshot (steady state)")
    ap.add_argument("--processes", choices=["auto", "true", "false"], default="auto",
                    help="performance.list_in_processes (false: listings in threads, one core; for profiling)")
    ap.add_argument("--numbers", choices=["scattered", "in-order"], default="scattered",
                    help="the seeded numbers' order in the APIs' listings (emulators.py)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="numsync-bench-"))
    t_seed = time.monotonic()
    info, procs = start_emulators(args.n, args.latency, workdir, numbers=args.numbers)
    seed_seconds = time.monotonic() - t_seed
    try:
        db_url = scratch_database(args.db, workdir, "numsync_bench")  # migrated before timing
        cfg = parse_config(config_text(info, db_url, workdir / "reports", args.processes), origin="bench.yaml", env={})
        # Import the SDKs before timing, as the peer does (naive_peer.warm_imports; a long-running
        # daemon pays them once).
        for module in ("twilio", "telnyx", "vonage", "vapi"):
            importlib.import_module(f"numsync.adapters.{module}")
        # what the first client of a process imports lazily (httpx's transport, Twilio's API tree)
        for module in ("httpcore", "twilio.rest.api.v2010"):
            importlib.import_module(module)
        settle_for_one_run(cfg)  # as the CLI does before its run
        for _ in range(args.prior_runs):
            run_once(cfg, mode="plan")
        metrics = Metrics()
        loop = machine_loop()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        emu_cpu0 = {api: proc_cpu(p.pid) for api, p in zip(APIS, procs, strict=True)}
        db_cpu0 = database_server_cpu() if args.db == "postgres" else 0.0
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        out = run_once(cfg, mode=args.mode, metrics=metrics)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        listing_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
        listing_rss = kids1.ru_maxrss
        emu_cpu_by_api = {api: round(proc_cpu(p.pid) - emu_cpu0[api], 2) for api, p in zip(APIS, procs, strict=True)}
        emu_cpu = sum(emu_cpu_by_api.values())
        db_cpu = database_server_cpu() - db_cpu0 if args.db == "postgres" else 0.0
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peer = None
        if args.peer:
            urls = {k: v["url"] for k, v in info.items()}
            if args.mode == "reconcile":  # numsync imported the missing numbers: the peer gets a fresh Vapi
                fresh, fresh_procs = start_emulators(args.n, args.latency, workdir, apis=("vapi",),
                                                     numbers=args.numbers)
                procs += fresh_procs
                urls["vapi"] = fresh["vapi"]["url"]
            peer_cfg = {"urls": urls, "ca": info["vonage"]["ca"], "creds": CREDS,
                        "import": args.mode == "reconcile"}
            done = subprocess.run([sys.executable, str(HERE / "naive_peer.py"), json.dumps(peer_cfg)],
                                  capture_output=True, text=True, check=True)
            peer = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for proc in procs:
            proc.stdin.close()  # type: ignore[union-attr]
        for proc in procs:
            proc.wait(timeout=30)
    requests: dict[str, int] = {}
    for fam in metrics.registry.collect():
        if fam.name == "numsync_api_requests":
            for sample in fam.samples:
                if sample.name.endswith("_total"):
                    requests[sample.labels["api"]] = requests.get(sample.labels["api"], 0) + int(sample.value)
    n_vapi = out.report["vapi"]["numbers"]
    minimum = minimum_requests(n_vapi, info["twilio"]["per_carrier"])
    floors = {
        "vapi": (minimum["vapi"] + 1) * args.latency / 8,  # probe + pages, 8 at a time
        "twilio": minimum["twilio"] * args.latency,  # next_page_uri: one page after another
        "telnyx": (1 + math.ceil((minimum["telnyx"] - 1) / 4)) * args.latency,  # first page, then 4 at a time
        # first page, then 4 at a time; after a run, the first round is as many pages as its count fills
        "vonage": (math.ceil(minimum["vonage"] / 4) if args.prior_runs else
                   1 + math.ceil((minimum["vonage"] - 1) / 4)) * args.latency,
    }
    floor = max(floors.values())
    if args.mode == "reconcile":
        # then one create per missing number, 8 at a time (numsync's reads of the records created
        # since its listing, about one a second, are its own cost, left out of the floor)
        imports = out.report["summary"].get("missing_in_vapi", 0)
        minimum["vapi"] += imports
        floor += math.ceil(imports / 8) * args.latency
    stats = out.result.stats
    result = {
        "n": args.n, "db": args.db, "mode": args.mode, "latency_ms": args.latency * 1000, "numbers": args.numbers,
        **({"prior_runs": args.prior_runs} if args.prior_runs else {}),
        "wall_s": round(wall, 2), "floor_s": round(floor, 2), "wall_over_floor": round(wall / floor, 2),
        "snapshot_s": stats.get("snapshot_seconds"), "diff_s": stats.get("diff_seconds"),
        "prune_s": stats.get("prune_seconds"),
        "vapi_s": stats.get("vapi_seconds"), "source_s": stats.get("source_seconds"),
        "listing_cpu_s": stats.get("listing_cpu_seconds"),
        "requests": requests, "minimum_requests": minimum,
        "cpu_s": round(cpu, 2), "listing_processes_cpu_s": round(listing_cpu, 2), "emulators_cpu_s": round(emu_cpu, 2),
        "emulator_cpu_s": emu_cpu_by_api,
        "database_server_cpu_s": round(db_cpu, 2) if args.db == "postgres" else None,
        # every process of the run shares this machine's cores: the wall time can't go below this
        "cpu_floor_s": round((cpu + listing_cpu + emu_cpu + db_cpu) / (os.cpu_count() or 1), 2),
        "listing_processes_peak_rss_mb": round(listing_rss / 1024, 1),
        "peak_rss_mb": round(rss_peak / 1024, 1), "rss_before_mb": round(rss_before / 1024, 1),
        "findings": out.report["summary"], "outcome": out.result.outcome, "seed_s": round(seed_seconds, 1),
        "loop_s": loop,
    }
    if peer is not None:
        result["peer_wall_s"] = peer["wall_s"]
        result["peer_peak_rss_mb"] = peer["peak_rss_mb"]
        result["speedup_vs_peer"] = round(peer["wall_s"] / wall, 2)
        assert peer["missing"] == out.report["summary"].get("missing_in_vapi", 0), "the peer disagrees"
        if args.mode == "reconcile":
            assert peer["imported"] == stats.get("imports_done"), "the peer imported another count"
    if args.mode == "reconcile":
        result["imports_done"] = stats.get("imports_done")
        result["apply_s"] = stats.get("apply_seconds")
        result["arrival_checks"] = stats.get("arrival_checks")
    print(json.dumps(result, indent=2))
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
