"""`make bench`: every benchmark, one table, written to bench/RESULTS.md.

Plan and reconcile at 10,000 / 100,000 / 1,000,000 numbers (Vapi + three carriers, 20 ms latency;
1% of the numbers missing in Vapi, which reconcile imports) on SQLite and PostgreSQL, with the
naive peer timed on the same emulators. Each size runs in a fresh process so peak RSS is that
size's own.

    python bench/run.py [--sizes 10000,100000,1000000] [--dbs sqlite,postgres] [--modes plan,reconcile]
                        [--no-peer] [--repeat 3] [--repeat-million 3]

Sizes below 1,000,000 run ``--repeat`` times (the peer beside each run), a plan of 1,000,000
``--repeat-million`` times (the peer, 3-4 minutes, beside the first only), and the table shows the
run with the median wall time, with the range: on a shared 2-core machine one run's wall time
moves by a third from one minute to the next, and the ratio to the peer measured in the same run
moves far less. Each run also times a fixed pure-Python loop just before it ("loop s"), which
says how fast the machine was then.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}{mem}), Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dbs", default="sqlite,postgres")
    ap.add_argument("--modes", default="plan,reconcile")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--render", type=Path, help="only render the table from this JSON-lines file of results")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size below 1,000,000 (the median is shown)")
    ap.add_argument("--repeat-million", type=int, default=3,
                    help="plans of 1,000,000 numbers (the median is shown; the peer runs beside the first)")
    ap.add_argument("--prior-runs", type=int, default=1,
                    help="untimed plans before each timed run, on its database: 1 is a run after a run, "
                         "numsync's usual case as a service or a nightly report")
    ap.add_argument("--first-runs", default="10000",
                    help="sizes also timed as the first run on a fresh database (plan, SQLite, beside the peer); "
                         "'' for none")
    args = ap.parse_args()
    results_file = args.render or Path(tempfile.mkstemp(suffix=".jsonl")[1])
    plan = [] if args.render else itertools.product(args.modes.split(","), args.dbs.split(","))
    first_runs = [] if args.render else [int(x) for x in args.first_runs.split(",") if x.strip()]
    for n in first_runs:
        cmd = [sys.executable, str(HERE / "bench_plan.py"), "--n", str(n), "--db", "sqlite", "--mode", "plan",
               "--json", str(results_file)] + ([] if args.no_peer else ["--peer"])
        for _ in range(max(1, args.repeat)):
            print("bench:", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    for mode, db in plan:
        for n in (int(x) for x in args.sizes.split(",")):
            cmd = [sys.executable, str(HERE / "bench_plan.py"), "--n", str(n), "--db", db, "--mode", mode,
                   "--prior-runs", str(args.prior_runs), "--json", str(results_file)]
            times = args.repeat if n < 1_000_000 else args.repeat_million if mode == "plan" else 1
            for i in range(max(1, times)):
                peer = ["--peer"] if not args.no_peer and db == "sqlite" and (n < 1_000_000 or i == 0) else []
                print("bench:", " ".join(cmd[1:] + peer), flush=True)
                subprocess.run(cmd + peer, check=True, stdout=subprocess.DEVNULL)
    runs: dict[tuple[str, str, int], list[dict]] = {}
    for line in results_file.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            mode = r.get("mode", "plan") + ("" if r.get("prior_runs") else ", first run")
            runs.setdefault((mode, r["db"], r["n"]), []).append(dict(r, mode=mode))
    rows = []
    for group in runs.values():
        group.sort(key=lambda r: r["wall_s"])
        median = dict(group[(len(group) - 1) // 2])
        if "speedup_vs_peer" not in median:  # the peer ran beside another run of this size
            beside = next((r for r in group if "speedup_vs_peer" in r), None)
            if beside is not None:
                median.update(peer_wall_s=beside["peer_wall_s"], speedup_vs_peer=beside["speedup_vs_peer"],
                              peer_beside=beside["wall_s"])
        median["runs"] = len(group)
        median["loops"] = [r["loop_s"] for r in group if "loop_s" in r]
        median["wall_range"] = (group[0]["wall_s"], group[-1]["wall_s"])
        speedups = sorted(r["speedup_vs_peer"] for r in group if "speedup_vs_peer" in r)
        if speedups:
            median["speedup_range"] = (speedups[0], speedups[-1])
        rows.append(median)
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}. Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `make bench`.",
        "Emulated latency 20 ms per request; each API's emulation runs in its own process; numsync's",
        "figures are for `numsync plan` and `numsync reconcile` (its main process and the listing processes",
        "it forks). 1% of the numbers are missing in Vapi; reconcile imports them. The numbers are scattered",
        "over their ranges, as an account's are in the order the APIs list them (when each was bought).",
        "Floor = the latency floor",
        "of the critical path (the slowest API's pages x latency / its concurrency; for reconcile, plus one",
        "create per import, 8 at a time). Requests are numsync's, against the minimum (pages of the largest",
        "size each API allows, and one create per import; Vapi's minimum leaves out its one probe request;",
        "numsync also reads the records created since its listing, about once a second, before creating).",
        "CPU: numsync's main process / its listing processes together / the emulations (which share the",
        "machine's cores) / on PostgreSQL, the database server's processes (on the same machine too).",
        "CPU floor: all of that CPU divided by the machine's cores: with everything on one machine the",
        "wall time can't go below it, and where it is above the latency floor the run is CPU-bound here.",
        "Each timed run follows one untimed plan on its database (`--prior-runs 1`), as numsync runs as a",
        "service or a nightly report: it knows what each source listed last, so Vonage's listing asks for",
        "its first round's pages at once (its floor counts that round). Rows marked 'first run' are a",
        "plan on a fresh database, where Vonage's page 1 is asked for alone.",
        "Peak RSS: the main",
        "process / the largest listing process (forked copies share their pages with the parent until written).",
        "The naive peer (bench/naive_peer.py) lists the same emulators sequentially with the official SDKs",
        "and `requests`, diffs in Python sets and, for reconcile, creates each missing number in Vapi, one",
        "POST after another. Both sides import everything before their clocks start, what the SDKs",
        "import on first use included (numsync's adapters never touch Telnyx's resource modules, which",
        "the peer's client.phone_numbers imports: 0.5 s a process here). Ratios matter more than",
        "seconds on a shared machine.",
        "Sizes run more than once show the run with the median wall time; runs gives their number and",
        "the range of wall times (and of speed-ups over the peer, each measured beside its own run; at",
        "1,000,000 numbers the peer ran beside one plan only, whose wall time the speed-up is against).",
        "Loop s: a fixed pure-Python loop timed just before each run, lowest-highest: how fast the",
        "machine was (its speed moves over minutes; a run's wall time moves with it).",
        "",
        "| mode | numbers | db | wall s | floor s | wall/floor | CPU floor s | diff s "
        "| CPU s main / listing / emulators / database "
        "| requests (min) | peak RSS MB | naive peer s | speed-up | runs: wall range (speed-up range) | loop s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        req = ", ".join(f"{k} {r['requests'].get(k, 0)} ({r['minimum_requests'][k]})"
                        for k in ("vapi", "twilio", "telnyx", "vonage"))
        peer = f"{r['peer_wall_s']}" if "peer_wall_s" in r else "-"
        speed = f"{r['speedup_vs_peer']}x" if "speedup_vs_peer" in r else "-"
        if "peer_beside" in r:
            speed += f" (against {r['peer_beside']} s)"
        cpu = f"{r.get('cpu_s', '-')} / {r.get('listing_processes_cpu_s', '-')} / {r.get('emulators_cpu_s', '-')}"
        if r.get("database_server_cpu_s") is not None:
            cpu += f" / {r['database_server_cpu_s']}"
        rss = f"{r['peak_rss_mb']} / {r.get('listing_processes_peak_rss_mb', '-')}"
        spread = "1"
        if r.get("runs", 1) > 1:
            low, high = r["wall_range"]
            spread = f"{r['runs']}: {low}-{high} s"
            if "speedup_range" in r:
                spread += f" ({r['speedup_range'][0]}-{r['speedup_range'][1]}x)"
        loops = "-"
        if r.get("loops"):
            low, high = min(r["loops"]), max(r["loops"])
            loops = f"{low}" if low == high else f"{low}-{high}"
        lines.append(f"| {r.get('mode', 'plan')} | {r['n']:,} | {r['db']} | {r['wall_s']} | {r['floor_s']} | "
                     f"{r['wall_over_floor']} | {r.get('cpu_floor_s', '-')} | "
                     f"{r['diff_s']} | {cpu} | {req} | {rss} | {peer} | {speed} | {spread} | {loops} |")
    by_db: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_db.setdefault((r.get("mode", "plan"), r["db"]), []).append(r)
    lines += ["", "Growth (time ratio per 10x numbers; linear is 10x):", ""]
    for (mode, db), rs in by_db.items():
        rs.sort(key=lambda r: r["n"])
        steps = [f"{a['n']:,}->{b['n']:,}: {b['wall_s'] / a['wall_s']:.1f}x" for a, b in itertools.pairwise(rs)]
        lines.append(f"- {mode}, {db}: " + ("; ".join(steps) or "one size only"))
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
