"""Benchmark: list 100,000 Vapi numbers with numsync's client against the emulation.

Why: the listing's correctness machinery (a probe, a createdAt bound, consistency checks) must
not cost throughput. With 20 ms of latency per request and 8 requests in flight, the floor is
pages x latency / concurrency; the client should stay within 2x of it, and its memory must not
grow with the inventory (records are streamed, not accumulated).

The emulation runs in a child process (``--serve``), so the peak RSS reported is the client's
alone. Run: ``python bench/bench_vapi_list.py [--records 100000] [--latency 0.02]``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

API_KEY = "bench-vapi-key"


def serve(records: int, latency: float) -> None:
    """Child process: seed the emulation, print its URL, serve until stdin closes."""
    from numsync.sandbox.server import EmulatorServer
    from numsync.sandbox.vapi import VapiEmulator

    emulator = VapiEmulator(api_key=API_KEY)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    providers = ("twilio", "telnyx", "vonage", "byo-phone-number", "vapi")
    for i in range(records):
        provider = providers[i % len(providers)]
        fields: dict[str, object] = {"name": f"bench {i}", "number": f"+1415{i:07d}",
                                     "assistantId": "22222222-2222-4222-8222-222222222222"}
        if provider == "twilio":
            fields.update(twilioAccountSid="ACbenchzzzzzzzzzzzzzzzzzzzzzzzzzz", twilioAuthToken="bench-token")
        elif provider != "vapi":
            fields["credentialId"] = f"cred-{provider}"
        emulator.add(provider, created_at=start + timedelta(seconds=i), **fields)
    emulator.faults.latency = latency
    with EmulatorServer(emulator) as server:
        print(json.dumps({"url": server.url}), flush=True)
        sys.stdin.read()


def run(records: int, latency: float, concurrency: int, page_size: int, runs: int) -> dict[str, float]:
    from numsync.adapters.vapi import VapiClient
    from numsync.config import VapiConfig

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--records", str(records), "--latency", str(latency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        url = json.loads(child.stdout.readline())["url"]
        cfg = VapiConfig(api_key=API_KEY, base_url=url, max_concurrency=concurrency, requests_per_second=0,
                         page_size=page_size)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        walls: list[float] = []
        for _ in range(runs):
            with VapiClient(cfg) as client:
                started = time.perf_counter()
                ids: set[str] = set()
                for record in client.iter_records():
                    ids.add(record["id"])
                walls.append(time.perf_counter() - started)
                requests = client.stats.requests
            if len(ids) != records:
                raise SystemExit(f"listed {len(ids)} distinct records, expected {records}")
        pages = math.ceil(records / page_size)
        floor = pages * latency / concurrency
        wall = statistics.median(walls)
        return {
            "records": records, "pages": pages, "requests": requests, "wall": wall, "best": min(walls),
            "floor": floor, "ratio": wall / floor, "rss_before_mb": rss_before / 1024,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.records, args.latency)
        return
    r = run(args.records, args.latency, args.concurrency, args.page_size, args.runs)
    print(f"| records | pages | requests | wall, median of {args.runs} (s) | best (s) | floor (s) | wall / floor "
          f"| peak RSS (MB) |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
          f"| {r['records']:,} | {r['pages']} | {r['requests']} | {r['wall']:.3f} | {r['best']:.3f} | "
          f"{r['floor']:.3f} | {r['ratio']:.2f}x | {r['rss_peak_mb']:.0f} (before listing: {r['rss_before_mb']:.0f}) |")
    print(f"\nlatency {args.latency * 1000:.0f} ms per request, max_concurrency {args.concurrency}, "
          f"page_size {args.page_size}; floor = pages x latency / concurrency; the emulation runs in a "
          f"child process, so the RSS is the client's")

if __name__ == "__main__":
    main()
