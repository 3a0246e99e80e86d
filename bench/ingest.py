#!/usr/bin/env python
"""Ingest benchmark: form submissions per second through the public endpoint.

Posts submissions (each a new lead) for a fixed time from concurrent wrk connections to Funil under
gunicorn (2 workers x 4 threads, as the Docker image runs it) on PostgreSQL and Redis, and in the same run to a bare DRF
endpoint that inserts one row into a one-table model, in interleaved rounds (Funil, bare,
bare, Funil, ...) so that the shared host's drift weighs on both alike. Prints
submissions/s, p50 and p99 for both and their ratio.

    .venv/bin/python bench/ingest.py [--seconds 20] [--connections 4]
    .venv/bin/python bench/ingest.py --quick    # 3 s per endpoint, for CI: prints, asserts no target

Needs PostgreSQL, Redis and `wrk` (Debian package wrk). Targets on the 2-core
machine: >= 500 submissions/s, p99 <= 30 ms, >= half the bare endpoint's rate.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import figure  # noqa: E402
from bench._server import ROOT, Gunicorn, bench_env, machine, manage, recreate_database  # noqa: E402

TARGET_RATE = 500
TARGET_P99_MS = 30
TARGET_RATIO = 0.5


def run_wrk(url, seconds, connections, threads, run_name):
    env = {**os.environ, "BENCH_RUN": run_name}
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(ROOT / "bench" / "ingest.lua"), url],
        env=env, capture_output=True, text=True, check=False,
    )
    match = re.search(r"WRK_JSON (\{.*\})", result.stdout)
    if not match:
        sys.exit(f"wrk failed:\n{result.stdout}\n{result.stderr}")
    figures = json.loads(match.group(1))
    figures["rate"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def combine(runs):
    """One endpoint's rounds as one run: requests over the time they took; p50 the
    median of the rounds', p90 and p99 the worst round's (percentiles do not add up)."""
    requests = sum(run["requests"] for run in runs)
    statuses = {}
    for run in runs:
        for code, number in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + number
    return {
        "requests": requests, "rate": requests / (sum(run["duration_us"] for run in runs) / 1e6),
        "p50_us": statistics.median(run["p50_us"] for run in runs),
        "p90_us": max(run["p90_us"] for run in runs), "p99_us": max(run["p99_us"] for run in runs),
        "statuses": statuses, "errors": sum(run["errors"] for run in runs),
    }


def count(env, sql):
    code = f"from django.db import connection as c; cur=c.cursor(); cur.execute({sql!r}); print(cur.fetchone()[0])"
    out = manage(env, "shell", "-c", code, capture=True)
    return int(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per endpoint (default 20)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds per endpoint, the seconds split among them (default 4)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--gunicorn-threads", type=int, default=4, dest="gunicorn_threads",
                        help="threads per gunicorn worker (gthread when > 1; default 4, as the Docker image runs it)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/funil_bench_ingest")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--quick", action="store_true",
                        help="3 measured seconds per endpoint; the figures are printed, the targets not asserted")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3, 1
    round_seconds = max(1, round(args.seconds / args.rounds))
    if not shutil.which("wrk"):
        sys.exit("bench/ingest.py needs wrk: apt-get install wrk")

    env = bench_env(args.database_url, args.redis_url,
                    FUNIL_CAPTURE_RATE_PER_IP="100000000/min", FUNIL_CAPTURE_RATE_PER_FORM="100000000/min")
    print(f"machine: {machine()}")
    print(f"database: {args.database_url} (recreated), redis: {args.redis_url}")
    recreate_database(args.database_url)
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "shell", "-c", (
        "from leads.models import Form, Source; "
        "s,_=Source.objects.get_or_create(slug='site', defaults={'name':'Site','channel':'contact_form'}); "
        "Form.objects.get_or_create(slug='bench', defaults={'name':'Bench','source':s, 'consent_text':'Aceito',"
        "'consent_version':'v1', 'fields':['email','name','phone','company','state','budget','interest','consent']})"
    ))
    # Capture qualifies every lead against the active rules: measure it with rules, as in production.
    manage(env, "shell", "-c", (
        "from tests.scoring.factories import pallet_ruleset; from scoring.models import Ruleset; "
        "pallet_ruleset(state=Ruleset.State.ACTIVE, submission_points=5)"
    ))
    subprocess.run(["redis-cli", "-u", args.redis_url, "FLUSHDB"], capture_output=True, check=False)

    threads = f" x {args.gunicorn_threads} threads" if args.gunicorn_threads > 1 else " (sync)"
    print(f"gunicorn: {args.workers} workers{threads}")
    with Gunicorn(env, workers=args.workers, threads=args.gunicorn_threads) as server:
        targets = {
            "funil": f"{server.url}/api/v1/forms/bench/submissions/",
            "bare": f"{server.url}/bench/bare/",
        }
        for name, url in targets.items():  # warm up connections, caches and both workers
            run_wrk(url, 2, args.connections, args.threads, f"warm{name}")
        # Interleaved rounds, the order swapped each round, so that a change in the shared
        # host's speed during the run weighs on both endpoints alike.
        rounds = {name: [] for name in targets}
        for index in range(args.rounds):
            for name in (list(targets) if index % 2 == 0 else list(targets)[::-1]):
                time.sleep(1)
                rounds[name].append(run_wrk(targets[name], round_seconds, args.connections, args.threads,
                                            f"run{name}-r{index}"))
        results = {name: combine(runs) for name, runs in rounds.items()}
        for index, (funil, baseline) in enumerate(zip(rounds["funil"], rounds["bare"], strict=True), 1):
            print(f"round {index}: Funil {funil['rate']:.0f}/s, bare {baseline['rate']:.0f}/s, "
                  f"ratio {funil['rate'] / baseline['rate']:.2f}")

    leads = count(env, "SELECT count(*) FROM leads_lead WHERE email LIKE 'lead-runfunil-%'")
    processed = count(env, "SELECT count(*) FROM leads_submission WHERE payload->>'email' LIKE 'lead-runfunil-%' "
                           "AND status = 'processed'")
    stored = count(env, "SELECT count(*) FROM leads_submission WHERE payload->>'email' LIKE 'lead-runfunil-%'")
    ours, bare = results["funil"], results["bare"]
    ratio = ours["rate"] / bare["rate"]
    print()
    print(f"{'endpoint':<34}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}  statuses")
    for label, figures in (("Funil POST /forms/<slug>/submissions", ours), ("bare DRF one-row insert", bare)):
        print(f"{label:<34}{figures['requests']:>10}{figures['rate']:>10.0f}{figures['p50_us'] / 1000:>9.1f}"
              f"{figures['p90_us'] / 1000:>9.1f}{figures['p99_us'] / 1000:>9.1f}  {figures['statuses']}"
              f"{' errors=' + str(figures['errors']) if figures['errors'] else ''}")
    print()
    print(f"ratio Funil / bare: {ratio:.2f}")
    print(f"measured run: {stored} submissions stored, {processed} processed, {leads} leads created "
          f"({ours['statuses'].get('202', 0)} answers received before wrk stopped)")
    checks = [
        (f">= {TARGET_RATE} submissions/s", ours["rate"] >= TARGET_RATE),
        (f"p99 <= {TARGET_P99_MS} ms", ours["p99_us"] / 1000 <= TARGET_P99_MS),
        (f">= {TARGET_RATIO:.0%} of the bare rate", ratio >= TARGET_RATIO),
        ("every submission answered 202", set(ours["statuses"]) == {"202"} and not ours["errors"]),
        ("nothing lost: every stored submission processed into its own lead",
         stored == processed == leads >= ours["statuses"].get("202", 0)),
    ]
    for label, ok in checks:
        print(f"target {label}: {'met' if ok else 'NOT met'}")
    applies = None if args.quick else True
    figure("ingest: submissions/s (p99)", f"{ours['rate']:.0f}/s ({ours['p99_us'] / 1000:.0f} ms)",
           baseline=f"bare DRF insert {bare['rate']:.0f}/s ({bare['p99_us'] / 1000:.0f} ms)", ratio=f"{ratio:.2f}",
           target=f">= {TARGET_RATE}/s, p99 <= {TARGET_P99_MS} ms, ratio >= {TARGET_RATIO}",
           met=applies and all(ok for _label, ok in checks[:3]))
    figure("ingest: submissions lost", stored - processed, target="0", met=checks[4][1])
    # Nothing lost and every answer a 202 hold at any size; the speed targets only at full size.
    must = checks[3:] if args.quick else checks
    return 0 if all(ok for _label, ok in must) else 1


if __name__ == "__main__":
    sys.exit(main())
