#!/usr/bin/env python
"""Triage benchmark: server time of the inbox and the lead page over N leads.

Recreates a PostgreSQL database, migrates it, loads N realistic leads and their
timeline with COPY (``bench/_rescore_data.py``), gives half of the qualified leads to
ten reps, then times in the same run, 200 requests each, through Django's whole stack
(middleware, session, view, template; in process, so the figure is server time
without the network), as a sales rep:

  (1) the default inbox (qualified, mine or unassigned, hottest first),
  (2) a filtered view (hot, São Paulo, one source, mine or unassigned),
  (3) a search (common and rare words, accents, a phone number),
  (4) a page deep in the list (keyset cursor, 200 random depths in the last 40%),
  (5) the lead page (200 random qualified leads),

and, as the baseline, (6) the same deep pages fetched with OFFSET (the same filters,
total and template, LIMIT 50 OFFSET n as Django's Paginator runs it), called
without middleware. Prints p50 and
p95 of each and the ratio (6)/(4).

    .venv/bin/python bench/triage.py [--leads 1000000] [--quick] [--reuse-data] [--database-url postgres://...]

``--reuse-data`` keeps the database when it already holds the same number of leads and
the reps of a previous run (migrations are still applied), so measuring a change
back to back does not reload a million leads each time. The table also gives the
SQL statements each page ran (counted on the warm-up requests, outside the timing).

Target on the 2-core machine: p95 <= 100 ms for every page at 1M leads, at any depth.
``--quick`` loads 20,000 leads and checks no target. The inbox remembers a person's total
for ``FUNIL_INBOX_TOTAL_SECONDS`` (30 s), so repeated pages mostly skip counting; run with
``FUNIL_INBOX_TOTAL_SECONDS=0`` to time a count on every page.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import figure  # noqa: E402
from bench._server import bench_env, machine, manage, recreate_database  # noqa: E402

MILLION = 1_000_000
TARGET_P95_MS = 100
REPS = 10
SEARCHES = ["silva", "joão", "transportes", "logistica", "Araújo Ltda", "fernanda", "metalúrgica", "agro",
            "987650123", "beatriz rocha", "gabriela", "atacadão", "(11) 90001-2345", "zzzz-nobody"]


def percentile(values, fraction):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def assign_reps(connection):
    """Ten reps; half of the qualified leads belong to one of them, the rest unassigned."""
    from django.contrib.auth.models import Group

    from leads import roles
    from tests.factories import UserFactory

    sales = Group.objects.get(name=roles.SALES)
    reps = []
    for n in range(REPS):
        user = UserFactory(username=f"rep{n}", first_name=f"Rep {n}")
        user.groups.add(sales)
        reps.append(user)
    ids = [user.pk for user in reps]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE leads_lead SET owner_id = (%s::int[])[1 + (id %% %s)] WHERE status = 'qualified' AND id %% 2 = 0",
            [ids, REPS],
        )
        cursor.execute("ANALYZE leads_lead")
    return reps


def existing_leads(database_url):
    """Leads in the database of a previous run (with its reps), else None."""
    import psycopg2

    try:
        conn = psycopg2.connect(database_url)
    except psycopg2.OperationalError:
        return None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass('leads_lead') IS NOT NULL AND to_regclass('auth_user') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return None
            cursor.execute("SELECT count(*) FROM auth_user WHERE username = ANY(%s)",
                           [[f"rep{n}" for n in range(REPS)]])
            if cursor.fetchone()[0] != REPS:
                return None
            cursor.execute("SELECT count(*) FROM leads_lead")
            return cursor.fetchone()[0]
    finally:
        conn.close()


def statements_per_request(client, urls):
    """SQL statements each of ``urls`` ran (outside the timed requests)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            client.get(url, secure=True)
        counts.append(len(queries))
    return counts


def time_requests(client, urls):
    durations = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url, secure=True)
        durations.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            sys.exit(f"{url} answered {response.status_code}")
    return durations


def deep_positions(rep, count, rng):
    """(offset, score, id) of ``count`` random rows in the last 40% of the rep's inbox."""
    from django.db.models import Q

    from leads.models import Lead

    keys = list(
        Lead.objects.filter(status="qualified").filter(Q(owner=rep) | Q(owner__isnull=True))
        .order_by("-score", "-id").values_list("score", "id")
    )
    offsets = [rng.randrange(int(len(keys) * 0.6), len(keys) - 1) for _ in range(count)]
    return [(offset, *keys[offset - 1]) for offset in offsets], len(keys)


def cursor_url(score, pk):
    """The inbox's own next-page link after the row (score, pk)."""
    import json

    from rest_framework.pagination import Cursor

    from leads.views import InboxPagination

    paginator = InboxPagination()
    paginator.base_url = "/leads/"
    return paginator.encode_cursor(Cursor(offset=0, reverse=False, position=json.dumps([str(score), pk])))


def offset_page(request, offset):
    """The baseline: the inbox's filters, total (remembered as the inbox does) and template,
    rows fetched with OFFSET."""
    from django.shortcuts import render

    from leads import selectors, views
    from leads.filters import LeadFilterSet

    query, is_default = views.inbox_filters(request)
    filterset = LeadFilterSet(query, queryset=selectors.lead_list_for(request.user), request=request)
    leads = filterset.qs
    rows = list(leads[offset:offset + 50])  # what Django's Paginator.page() runs: LIMIT 50 OFFSET n
    total, exact, _counted_at = selectors.lead_count_remembered(leads, user=request.user, filters=query)
    context = {"query": query, "is_default": is_default, "filterset": filterset, "rows": rows, "total": total,
               "exact": exact, "next_url": None, "previous_url": None, "filter_query": "", "fresh_since": None,
               "page_size": 50, "poll_seconds": 10, "checked": set(), **views._choices(request.user)}
    return render(request, "leads/inbox.html", context)


def load_leads(connection, n, seed):
    """COPY ``n`` leads and their timeline, build the trigram indexes, VACUUM ANALYZE,
    and give half of the qualified leads to the reps (returned)."""
    from django.db import transaction
    from django.utils import timezone

    from bench import _rescore_data
    from leads.models import Lead

    with connection.cursor() as cursor:
        # The loader predates the quality-rating fields; Django gives them no database default.
        cursor.execute("ALTER TABLE leads_lead ALTER COLUMN fit SET DEFAULT '', ALTER COLUMN fit_note SET DEFAULT ''")
        # The trigram indexes are built once after the load, faster than row by row during it.
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes "
                       "WHERE tablename IN ('leads_lead', 'leads_leadsearch') AND indexdef LIKE '%%gin_trgm_ops%%'")
        trigram_indexes = cursor.fetchall()
        for name, _definition in trigram_indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    start = time.perf_counter()
    with transaction.atomic():
        _rescore_data.load(connection, n, now=timezone.now(), seed=seed)
    loaded = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _name, definition in trigram_indexes:
            cursor.execute(definition)
        cursor.execute("VACUUM ANALYZE leads_lead")
        cursor.execute("VACUUM ANALYZE leads_leadsearch")
        cursor.execute("VACUUM ANALYZE leads_leadevent")
    reps = assign_reps(connection)
    qualified = Lead.objects.filter(status="qualified").count()
    print(f"loaded {n:,} leads ({qualified:,} qualified, half of them owned by {REPS} reps) with COPY "
          f"in {loaded:.1f} s; trigram indexes ({len(trigram_indexes)}) and VACUUM ANALYZE in "
          f"{time.perf_counter() - start - loaded:.1f} s")
    return reps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=MILLION, help="leads to load (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 leads, no targets checked")
    parser.add_argument("--requests", type=int, default=200, help="requests per page (default 200)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/funil_triage_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="only for the settings")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--reuse-data", action="store_true",
                        help="keep the database when it already holds the same number of leads and the reps")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.leads

    env = bench_env(args.database_url, args.redis_url, DJANGO_ALLOW_ASYNC_UNSAFE="true")
    print(f"machine: {machine()}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    reuse = args.reuse_data and existing_leads(args.database_url) == n
    if reuse:
        print(f"database: {args.database_url} (reused: {n:,} leads already loaded)")
    else:
        print(f"database: {args.database_url} (recreated)")
        recreate_database(args.database_url)
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "collectstatic", "--noinput", "-v0")  # production settings: hashed static files
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client, RequestFactory

    from leads.models import Lead

    if reuse:
        reps = list(get_user_model().objects.filter(username__in=[f"rep{i}" for i in range(REPS)])
                    .order_by("username"))
    else:
        reps = load_leads(connection, n, args.seed)
    rep = reps[0]

    rng = random.Random(args.seed)
    count = args.requests
    client = Client(HTTP_HOST="localhost")
    client.force_login(rep)
    positions, inbox_size = deep_positions(rep, count, rng)
    lead_ids = list(Lead.objects.filter(status="qualified").values_list("id", flat=True))
    pages = {
        "(1) default inbox": ["/leads/"] * count,
        "(2) filtered view": ["/leads/?status=qualified&temperature=hot&state=SP&source=site"
                              "&owner=me_or_unassigned"] * count,
        "(3) search": [f"/leads/?status=qualified&q={SEARCHES[i % len(SEARCHES)]}" for i in range(count)],
        "(4) deep page, keyset": [cursor_url(score, pk) for _offset, score, pk in positions],
        "(5) lead page": [f"/leads/{pk}/" for pk in rng.sample(lead_ids, min(count, len(lead_ids)))],
    }
    statements = {}
    for label, urls in pages.items():  # warm up: caches, the first connection, the planner
        time_requests(client, urls[:5])
        statements[label] = statements_per_request(client, urls[:5])
    results = {label: time_requests(client, urls) for label, urls in pages.items()}

    factory = RequestFactory()
    baseline = []
    for offset, _score, _pk in positions:
        request = factory.get("/leads/", HTTP_HOST="localhost", secure=True)
        request.user = rep
        request.session = {}
        request._messages = []
        started = time.perf_counter()
        offset_page(request, offset)
        baseline.append((time.perf_counter() - started) * 1000)
    results["(6) baseline: deep page, OFFSET"] = baseline

    print(f"\nrep's default inbox: {inbox_size:,} leads; deep pages at offsets "
          f"{min(p[0] for p in positions):,}..{max(p[0] for p in positions):,}; {count} requests each\n")
    print(f"{'page':<36}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'SQL/request':>13}")
    for label, durations in results.items():
        counts = statements.get(label)
        sql = "-" if not counts else (f"{min(counts)}" if min(counts) == max(counts)
                                      else f"{min(counts)}-{max(counts)}")
        print(f"{label:<36}{statistics.median(durations):>10.1f}{percentile(durations, 0.95):>10.1f}"
              f"{max(durations):>10.1f}{sql:>13}")
    keyset, offset = results["(4) deep page, keyset"], results["(6) baseline: deep page, OFFSET"]
    print(f"\nratio OFFSET / keyset at depth: p50 {statistics.median(offset) / statistics.median(keyset):.1f}x, "
          f"p95 {percentile(offset, 0.95) / percentile(keyset, 0.95):.1f}x")
    for label, durations in results.items():
        if label.startswith("(6)"):
            continue
        p95 = percentile(durations, 0.95)
        baseline = ratio = ""
        if label.startswith("(4)"):
            baseline = f"OFFSET p95 {percentile(offset, 0.95):.0f} ms"
            ratio = f"{percentile(offset, 0.95) / p95:.1f}x faster"
        figure(f"triage: {label[4:]} p95, {n:,} leads", f"{p95:.0f} ms", baseline=baseline, ratio=ratio,
               target=f"<= {TARGET_P95_MS} ms", met=None if args.quick else p95 <= TARGET_P95_MS)
    if args.quick:
        print("--quick: targets not checked")
        return
    for label, durations in results.items():
        if label.startswith("(6)"):
            continue
        p95 = percentile(durations, 0.95)
        print(f"target p95 <= {TARGET_P95_MS} ms for {label} at {n:,} leads: "
              f"{'met' if p95 <= TARGET_P95_MS else 'NOT met'} ({p95:.1f} ms)")


if __name__ == "__main__":
    main()
