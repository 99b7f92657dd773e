"""Benchmark: list each carrier source alone (Twilio, Telnyx, Vonage) against its emulation.

Why: in a ``numsync plan`` each source lists in a process of its own (in threads of one process
where forking is off), so a listing is bound by latency (pages x latency / concurrency) *and* by
the CPU it burns per record. This measures both for one carrier at a time, so a regression in
either shows up here before it disappears into the plan's wall time: wall time, requests, the
latency floor and CPU seconds (``time.process_time()`` of this process; the emulation runs in a
child process of its own) per 1,000 records, and the emulation's CPU per 1,000 records (it shares
the machine's cores).
``--together`` also lists the three at once, in threads (as the plan does where forking is
off). ``--profile`` prints the cProfile top of one listing (the consuming thread only: for the page
workers of Telnyx and Vonage use ``py-spy record --gil -f raw -- python bench/bench_carriers.py ...``).

    python bench/bench_carriers.py [--n 10000] [--latency 0.02] [--carriers twilio,telnyx,vonage]
                                   [--runs 3] [--together] [--profile] [--json FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from emulators import CREDS  # noqa: E402

from numsync.adapters.base import Source  # noqa: E402
from numsync.adapters.registry import build_source  # noqa: E402
from numsync.config import TelnyxSourceConfig, TwilioSourceConfig, VonageSourceConfig  # noqa: E402

CARRIERS = ("twilio", "telnyx", "vonage")
PAGE = {"twilio": 1000, "telnyx": 250, "vonage": 100}


def floor_seconds(api: str, n: int, latency: float, concurrency: int) -> tuple[int, float]:
    """(pages, the latency floor): page 1 alone, then the rest ``concurrency`` at a time."""
    pages = max(1, math.ceil(n / PAGE[api]))
    if concurrency <= 1:
        return pages, pages * latency
    return pages, (1 + math.ceil((pages - 1) / concurrency)) * latency


def start_emulator(api: str, n: int, latency: float, workdir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    # emulators.py splits its N over the three carriers: ask for 3N so this carrier gets N
    proc = subprocess.Popen([sys.executable, str(HERE / "emulators.py"), str(3 * n), str(latency), api,
                             str(workdir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def make_source(api: str, info: dict[str, Any], on_request: Callable[[str, str], None]) -> Source:
    cfg: Any
    if api == "twilio":
        cfg = TwilioSourceConfig(kind="twilio", name="twilio-bench", account_sid=CREDS["twilio_sid"],
                                 auth_token=CREDS["twilio_token"], base_url=info["url"])
    elif api == "telnyx":
        cfg = TelnyxSourceConfig(kind="telnyx", name="telnyx-bench", api_key=CREDS["telnyx_key"],
                                 vapi_credential_id="cred-telnyx", base_url=info["url"])
    else:
        cfg = VonageSourceConfig(kind="vonage", name="vonage-bench", api_key=CREDS["vonage_key"],
                                 api_secret=CREDS["vonage_secret"], vapi_credential_id="cred-vonage",
                                 base_url=info["url"], ca_bundle=info["ca"])
    return build_source(cfg, on_request=on_request)


class Counter:
    """on_request, thread-safe: the requests a listing really made."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_status: dict[str, int] = {}

    def __call__(self, _api: str, status: str) -> None:
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def child_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of the emulation's process so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def list_once(source: Source, expected: int) -> tuple[float, float]:
    """(wall, CPU) of one full listing; checks that every number came back exactly once."""
    ids: set[str] = set()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for rec in source.list_numbers():
        ids.add(rec.carrier_id)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if len(ids) != expected:
        raise SystemExit(f"{source.name}: listed {len(ids)} distinct numbers, expected {expected}")
    return wall, cpu


def in_flight(source: Source) -> int:
    return int(getattr(source, "_concurrency", None) or getattr(source, "concurrency", None) or 1)


def bench_one(api: str, info: dict[str, Any], args: argparse.Namespace, pid: int) -> dict[str, Any]:
    counter = Counter()
    cpu0, t0 = time.process_time(), time.perf_counter()
    source = make_source(api, info, counter)  # the first one imports the adapter and its SDK
    setup_wall, setup_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = info["per_carrier"]
    try:
        first_wall, first_cpu = list_once(source, n)  # cold: lazy SDK imports, new connections
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            list_once(source, n)
            prof.disable()
            stats = pstats.Stats(prof).sort_stats("tottime")
            print(f"--- {api}: top functions by own time ---")
            stats.print_stats(25)
            stats.sort_stats("cumulative").print_stats(25)
        walls, cpus = [], []
        counter.by_status.clear()
        emu_before = child_cpu(pid)
        for _ in range(args.runs):
            wall, cpu = list_once(source, n)
            walls.append(wall)
            cpus.append(cpu)
        emu_after = child_cpu(pid)
    finally:
        source.close()
    concurrency = in_flight(source)
    pages, floor = floor_seconds(api, n, args.latency, concurrency)
    wall = statistics.median(walls)
    return {
        "carrier": api, "numbers": n, "pages": pages, "requests_per_run": counter.total / args.runs,
        "statuses": counter.by_status, "concurrency": concurrency,
        "wall_s": round(wall, 3), "best_s": round(min(walls), 3), "floor_s": round(floor, 3),
        "wall_over_floor": round(wall / floor, 2),
        "cpu_s": round(statistics.median(cpus), 3),
        "cpu_ms_per_1000": round(1000 * statistics.median(cpus) / max(n, 1) * 1000, 1),
        "emulator_cpu_ms_per_1000": None if emu_before is None or emu_after is None
        else round(1000 * (emu_after - emu_before) / args.runs / max(n, 1) * 1000, 1),
        "setup_s": round(setup_wall, 3), "setup_cpu_s": round(setup_cpu, 3),
        "first_s": round(first_wall, 3), "first_cpu_s": round(first_cpu, 3),
    }


def bench_together(infos: dict[str, dict[str, Any]], latency: float) -> dict[str, Any]:
    """All carriers at once, one thread each, as a plan lists them (no database)."""
    sources = {api: make_source(api, info, Counter()) for api, info in infos.items()}
    seconds: dict[str, float] = {}
    errors: list[BaseException] = []

    def run(api: str) -> None:
        try:
            t0 = time.perf_counter()
            list_once(sources[api], infos[api]["per_carrier"])
            seconds[api] = round(time.perf_counter() - t0, 3)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(api,)) for api in sources]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for src in sources.values():
        src.close()
    if errors:
        raise errors[0]
    floors = {api: floor_seconds(api, infos[api]["per_carrier"], latency, in_flight(sources[api]))[1]
              for api in sources}
    return {"carrier": "together", "wall_s": round(wall, 3), "per_source_s": seconds,
            "floor_s": round(max(floors.values()), 3), "wall_over_floor": round(wall / max(floors.values()), 2),
            "cpu_s": round(cpu, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="numbers per carrier")
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--carriers", default=",".join(CARRIERS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--together", action="store_true", help="also list all carriers at once in threads")
    ap.add_argument("--profile", action="store_true", help="print a cProfile top of one listing per carrier")
    ap.add_argument("--json", type=Path, help="append the results as JSON lines to this file")
    args = ap.parse_args()
    apis = [a for a in args.carriers.split(",") if a]
    unknown = set(apis) - set(CARRIERS)
    if unknown:
        raise SystemExit(f"unknown carrier(s): {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="numsync-bench-carriers-"))
    procs, infos, pids = [], {}, {}
    try:
        for api in apis:
            proc, info = start_emulator(api, args.n, args.latency, workdir)
            procs.append(proc)
            infos[api] = info
            pids[api] = proc.pid
        results = [bench_one(api, infos[api], args, pids[api]) for api in apis]
        if args.together and len(apis) > 1:
            results.append(bench_together(infos, args.latency))
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=30)
    print("| carrier | numbers | pages | requests | in flight | wall (s) | floor (s) | wall / floor "
          "| CPU (s) | CPU ms / 1,000 | emulation CPU ms / 1,000 | setup: wall / CPU (s) "
          "| first listing: wall / CPU (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if r["carrier"] == "together":
            continue
        print(f"| {r['carrier']} | {r['numbers']:,} | {r['pages']} | {r['requests_per_run']:g} | "
              f"{r['concurrency']} | {r['wall_s']:.3f} | {r['floor_s']:.3f} | {r['wall_over_floor']:.2f}x | "
              f"{r['cpu_s']:.3f} | {r['cpu_ms_per_1000']:.0f} | {r['emulator_cpu_ms_per_1000']} | "
              f"{r['setup_s']:.2f} / {r['setup_cpu_s']:.2f} | "
              f"{r['first_s']:.2f} / {r['first_cpu_s']:.2f} |")
    for r in results:
        if r["carrier"] == "together":
            print(f"\ntogether (threads): wall {r['wall_s']:.3f} s, floor {r['floor_s']:.3f} s "
                  f"({r['wall_over_floor']:.2f}x), CPU {r['cpu_s']:.3f} s, per source {r['per_source_s']}")
    print(f"\nlatency {args.latency * 1000:.0f} ms per request; wall and CPU = median of {args.runs} warm runs "
          "(setup = building the source, which imports its SDK; first listing = cold); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          "emulations run in child processes")
    if args.json:
        with args.json.open("a") as fh:
            for r in results:
                fh.write(json.dumps({"latency_ms": args.latency * 1000, **r}) + "\n")


if __name__ == "__main__":
    main()
