#!/usr/bin/env python
"""Mixed load: Funil as its users use it, with a rule change in the middle.

For 5 minutes (--quick: 60 s) against gunicorn on PostgreSQL, with a Celery worker
and beat running: web forms post submissions at a steady rate, sales reps browse the
inbox and lead pages and leave notes (locust, bench/locustfile.py), the nurture dispatcher
sends a one-step sequence to disqualified leads whose deliveries fall due evenly over
the run (to an SMTP sink in this process), and after a third of the run a new ruleset
is activated, which rescores every lead (1,000,000 by default; --leads to change) in
the worker. Prints throughput and p50 / p95 / p99 per request type before, during and
after the rescore, and the emails due, sent, received and duplicated.

    .venv/bin/python bench/load.py [--quick] [--leads N] [--seconds S]

Targets on the 2-core machine: no 5xx; submissions' p99 <= 100 ms and inbox p95
<= 200 ms, even while the rescore runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._faults_infra import Celery  # noqa: E402
from bench._report import figure, write_section  # noqa: E402
from bench._server import (  # noqa: E402
    PYTHON,
    ROOT,
    Gunicorn,
    bench_env,
    free_port,
    machine,
    manage,
    recreate_database,
)

DATABASE = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/funil_load")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
TARGET_SUBMISSION_P99 = 100
TARGET_INBOX_P95 = 200

SETUP = """
import json
from pathlib import Path
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.utils import timezone
from bench import _rescore_data
from leads import roles, services
from scoring.rules_io import ruleset_import
from scoring.services import ruleset_activate, rescore_job_run
_rescore_data.load(connection, {leads}, now=timezone.now(), progress=print)
source = services.source_ensure(slug="site", name="Site", channel="contact_form")
services.form_create(slug="load", name="Load", source=source,
                     fields=["name", "email", "state", "interest", "budget", "job_title", "company_size"])
roles.sync_groups()
for name in ("rep1", "rep2"):
    user = User.objects.create_user(name, password="bench-password")
    user.groups.add(Group.objects.get(name=roles.SALES_MANAGERS))
data = json.loads(Path("leads/demo/paletes-sp.rules.json").read_text())
with transaction.atomic():
    job = ruleset_activate(ruleset=ruleset_import(data))
rescore_job_run(job_id=job.pk)
with connection.cursor() as cursor:
    cursor.execute("VACUUM ANALYZE")
"""

# Disqualified leads enrolled in a one-step sequence, their deliveries due evenly from now
# to the end of the run, so that the dispatcher (beat's nurture-dispatch) works throughout.
NURTURE = """
from datetime import timedelta
from django.db import connection
from django.utils import timezone
from leads.models import Lead, LeadStatus
from nurturing.models import Delivery, EmailTemplate, Enrollment, Sequence, SequenceStep
template = EmailTemplate.objects.create(
    name="Load", subject="Novidades para {{{{ lead.company }}}}",
    html_body="<p>Olá {{{{ lead.first_name }}}},</p><p>Paletes PBR: <a href='https://example.com/paletes'>veja</a>.</p>")
sequence = Sequence.objects.create(name="Load", slug="load", active=True, send_days=[0, 1, 2, 3, 4, 5, 6],
                                   send_from_hour=0, send_until_hour=24)
step = SequenceStep.objects.create(sequence=sequence, position=1, template=template)
lead_ids = list(Lead.objects.filter(status=LeadStatus.DISQUALIFIED, email__isnull=False)
                .order_by("id").values_list("id", flat=True)[:{emails}])
now = timezone.now() + timedelta(seconds=15)
Enrollment.objects.bulk_create([Enrollment(sequence=sequence, lead_id=pk, enrolled_at=now) for pk in lead_ids],
                               batch_size=5000)
enrollments = list(Enrollment.objects.filter(sequence=sequence).values_list("pk", "lead_id"))
spread = {seconds} / max(1, len(enrollments))
Delivery.objects.bulk_create([
    Delivery(enrollment_id=pk, step=step, lead_id=lead_id, due_at=now + timedelta(seconds=i * spread))
    for i, (pk, lead_id) in enumerate(enrollments)], batch_size=5000)
with connection.cursor() as cursor:
    cursor.execute("ANALYZE nurturing_delivery")
print("DUE", len(enrollments))
"""

DELIVERIES = """
import json
from django.db.models import Count
from nurturing.models import Delivery
print("D", json.dumps(dict(Delivery.objects.values_list("status").annotate(n=Count("id")).order_by())))
"""

ACTIVATE = """
import json
from pathlib import Path
from django.db import transaction
from scoring.rules_io import ruleset_import
from scoring.services import ruleset_activate
data = json.loads(Path("leads/demo/paletes-sp.rules.json").read_text())
data["thresholds"] = {"qualify": 30, "warm": 30, "hot": 60}
with transaction.atomic():
    job = ruleset_activate(ruleset=ruleset_import(data))
print("JOB", job.pk)
"""


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def job_times(env, job_id):
    code = (f"from scoring.models import RescoreJob; j = RescoreJob.objects.get(pk={job_id}); "
            "print('T', j.status, j.started_at.timestamp() if j.started_at else 0, "
            "j.finished_at.timestamp() if j.finished_at else 0, j.leads_seen)")
    out = manage(env, "shell", "-c", code, capture=True)
    _, status, started, finished, seen = [line for line in out.splitlines() if line.startswith("T ")][-1].split()
    return status, float(started), float(finished), int(seen)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 leads for 60 s (CI)")
    parser.add_argument("--leads", type=int)
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--emails", type=int, help="nurture deliveries due during the run "
                        "(default: 20,000, or 400 with --quick)")
    parser.add_argument("--rescore-workers", type=int, default=1,
                        help="FUNIL_RESCORE_WORKERS for the worker (default 1, the setting's default)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    leads = args.leads or (20_000 if args.quick else 1_000_000)
    seconds = args.seconds or (60 if args.quick else 300)
    emails = args.emails if args.emails is not None else (400 if args.quick else 20_000)

    import logging

    from aiosmtpd.controller import Controller

    from bench.dispatch import Sink

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()

    recreate_database(DATABASE)
    env = bench_env(DATABASE, REDIS, FUNIL_CAPTURE_RATE_PER_IP="1000000/min",
                    FUNIL_CAPTURE_RATE_PER_FORM="1000000/min", EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
                    FUNIL_BASE_URL="https://funil.example.com", DEFAULT_FROM_EMAIL="Paletes <news@paletes.example>",
                    FUNIL_RESCORE_WORKERS=str(args.rescore_workers))
    print(f"Loading {leads:,} leads ...", flush=True)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")  # production settings serve the manifest
    manage(env, "shell", "-c", SETUP.format(leads=leads))
    out = manage(env, "shell", "-c", NURTURE.format(emails=emails, seconds=seconds), capture=True)
    due = int([line for line in out.splitlines() if line.startswith("DUE")][-1].split()[1])

    log = Path(tempfile.mkstemp(prefix="funil-load-", suffix=".tsv")[1])
    with Gunicorn(env, workers=3) as web, Celery(env, "worker"), Celery(env, "beat"):
        locust_env = {**env, "BENCH_REQUEST_LOG": str(log), "BENCH_LEAD_COUNT": str(leads)}
        locust = subprocess.Popen(
            [str(Path(PYTHON).parent / "locust"), "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
             "--users", "14", "--spawn-rate", "14", "--run-time", f"{seconds}s", "--host", web.url,
             "--only-summary", "--loglevel", "WARNING"],
            cwd=ROOT, env=locust_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(seconds / 3)
        out = manage(env, "shell", "-c", ACTIVATE, capture=True)
        job_id = int([line for line in out.splitlines() if line.startswith("JOB")][-1].split()[1])
        print(f"Activated a new ruleset at {seconds / 3:.0f} s: rescoring job #{job_id}", flush=True)
        _, stderr = locust.communicate(timeout=seconds + 120)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            job_status, started, finished, seen = job_times(env, job_id)
            if job_status in ("done", "failed"):
                break
            time.sleep(5)
        # What was due by the end of the load has had a minute to leave (beat's next nudge).
        time.sleep(60)
    # Counted once beat and the worker have stopped (a warm shutdown finishes the sends in
    # hand): counted while they still ran, the sink went on receiving messages the states
    # read a moment earlier showed as claimed or sending.
    out = manage(env, "shell", "-c", DELIVERIES, capture=True)
    smtp.stop()
    delivery_states = json.loads([line for line in out.splitlines() if line.startswith("D ")][-1][2:])
    received = sink.count()
    duplicated = sum(n - 1 for n in sink.recipients.values() if n > 1)
    if locust.returncode not in (0, 1):  # 1: some requests failed (counted below)
        sys.exit(f"locust failed:\n{stderr}")

    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    phases = defaultdict(lambda: defaultdict(list))
    statuses = defaultdict(lambda: defaultdict(int))
    first = min(float(row[0]) for row in rows)
    last = max(float(row[0]) for row in rows)
    for stamp, name, ms, status in rows:
        stamp = float(stamp)
        phase = "before" if stamp < started else ("during" if not finished or stamp <= finished else "after")
        phases[phase][name].append(float(ms))
        statuses[name][status] += 1
    spans = {"before": started - first, "during": (finished or last) - started, "after": last - (finished or last)}
    five_xx = sum(count for by in statuses.values() for status, count in by.items() if status.startswith("5"))

    lines = [f"Machine: {machine()}. {leads:,} leads; {seconds} s of load; gunicorn 2 workers x 4 threads, one Celery "
             f"worker (concurrency 2) and beat, PostgreSQL and Redis on the same machine. The rescoring job "
             f"(#{job_id}, {job_status}) of all {seen:,} leads, on {args.rescore_workers} database "
             f"connection{'s' if args.rescore_workers > 1 else ''} (FUNIL_RESCORE_WORKERS), ran for "
             f"{finished - started:.1f} s.", "",
             "| phase | request | count | per s | p50 ms | p95 ms | p99 ms |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for phase in ("before", "during", "after"):
        for name, values in sorted(phases[phase].items()):
            rate = len(values) / spans[phase] if spans[phase] > 0 else 0
            lines.append(f"| {phase} | {name} | {len(values)} | {rate:.1f} | {statistics.median(values):.0f} | "
                         f"{percentile(values, 0.95):.0f} | {percentile(values, 0.99):.0f} |")
    during = phases["during"]
    sub_p99 = percentile(during.get("submission", []), 0.99)
    inbox_p95 = percentile(during.get("inbox", []), 0.95)
    lines += ["", f"Answers by status: {dict((name, dict(by)) for name, by in statuses.items())}.",
              f"5xx: {five_xx} (target 0). During the rescore: submissions p99 {sub_p99} ms (target <= "
              f"{TARGET_SUBMISSION_P99}), inbox p95 {inbox_p95} ms (target <= {TARGET_INBOX_P95}).",
              f"Nurture emails: {due:,} due over the run; deliveries by state at the end {delivery_states}; "
              f"{received:,} received by the SMTP sink, {duplicated} duplicated."]
    print("\n".join(lines))
    full = not args.quick
    figure("load: 5xx answers", five_xx, target="0", met=five_xx == 0)
    figure("load: submission p99 during the rescore", f"{sub_p99} ms", target=f"<= {TARGET_SUBMISSION_P99} ms",
           met=(sub_p99 is not None and sub_p99 <= TARGET_SUBMISSION_P99) if full else None)
    figure("load: inbox p95 during the rescore", f"{inbox_p95} ms", target=f"<= {TARGET_INBOX_P95} ms",
           met=(inbox_p95 is not None and inbox_p95 <= TARGET_INBOX_P95) if full else None)
    figure("load: nurture emails received / sent, duplicated", f"{received:,} / {delivery_states.get('sent', 0):,}, "
           f"{duplicated}", target="received = sent, 0 duplicated",
           met=received == delivery_states.get("sent", 0) and duplicated == 0)
    if not args.no_docs:
        write_section("load", "\n".join(lines), title="Mixed load")
    log.unlink()


if __name__ == "__main__":
    main()
