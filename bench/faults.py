#!/usr/bin/env python
"""Fault scripts: Funil while things break. Each scenario prints what it counted
(accepted, lost, duplicated, ...) and the figures go into docs/benchmarks.md.

    .venv/bin/python bench/faults.py [--quick] [--only redis,postgres,bot,beats,worker]

- redis:    Redis killed (no persistence: queued messages are lost) for 60 s (5 s with
            --quick) while clients post form submissions, and a ruleset is activated
            during the outage. Every submission must be accepted, and the rescoring the
            activation asked for must run once Redis is back (the sweep finds it).
- postgres: PostgreSQL restarted while clients post. Clients must get 503 with
            Retry-After, never another 5xx; with their retries nothing is lost. A
            submission's raw row and lead commit together, so a cut mid-request stores
            neither (the client retries); the replay job processes any left failed.
- bot:      one address posts 1,000 submissions a minute, half with the honeypot
            filled, each with a forged X-Forwarded-For; real visitors post from other
            addresses at the same time. The bot is throttled, no lead comes from a
            honeypot hit, and every real visitor is accepted.
- beats:    two beat schedulers by mistake, each sending requalification every few
            seconds. No two requalification runs overlap.
- worker:   the worker is SIGKILLed three times while it rescores a ruleset; after
            restarts the job completes, every lead has the score the engine gives, and
            no lead was rescored twice (one 'scored' event per changed lead).

Needs PostgreSQL (DATABASE_URL's server, or 127.0.0.1:5432) for the scenarios that do
not restart it, and the redis-server and PostgreSQL server binaries for the private
servers the others start. Nothing here touches the machine's own Redis or PostgreSQL.
"""

import argparse
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._faults_infra import Celery, Poster, PrivatePostgres, PrivateRedis  # noqa: E402
from bench._report import figure, write_section  # noqa: E402
from bench._server import Gunicorn, bench_env, free_port, machine, manage, recreate_database  # noqa: E402

DEFAULT_DB = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/funil_faults")

SETUP = """
import json
from pathlib import Path
from django.db import transaction
from leads import services
from scoring.rules_io import ruleset_import
from scoring.services import ruleset_activate, rescore_job_run
source = services.source_ensure(slug="site", name="Site", channel="contact_form")
for slug in ("faults", "other"):
    if not services.Form.objects.filter(slug=slug).exists():
        services.form_create(slug=slug, name=slug, source=source,
                             fields=["name", "email", "state", "interest", "budget", "job_title", "company_size"])
data = json.loads(Path("leads/demo/paletes-sp.rules.json").read_text())
with transaction.atomic():
    job = ruleset_activate(ruleset=ruleset_import(data))
rescore_job_run(job_id=job.pk)
"""

# A second version of the rules, activated in the middle of a scenario: every lead moves.
ACTIVATE_V2 = """
import json
from pathlib import Path
from django.db import transaction
from scoring.rules_io import ruleset_import
from scoring.services import ruleset_activate
data = json.loads(Path("leads/demo/paletes-sp.rules.json").read_text())
data["thresholds"] = {"qualify": 20, "warm": 20, "hot": 50}
with transaction.atomic():
    job = ruleset_activate(ruleset=ruleset_import(data))
print("JOB", job.pk)
"""


# Work that falls due while Redis is down: leads a person disqualified, half of them
# enrolled in a one-step sequence whose emails are due during the outage, half with a
# requalification date during the outage. Beat cannot nudge anyone until Redis is back;
# the rows must still be found and worked then, once each.
DUE_DURING_OUTAGE = """
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from leads import services
from leads.models import Lead
from nurturing.models import EmailTemplate, Sequence, SequenceStep
from nurturing.services import enrollment_create
admin = User.objects.create_superuser("faults-admin", "faults-admin@example.com", "faults-password")
leads = list(Lead.objects.filter(email__startswith="{prefix}", status="qualified").order_by("id")[:{n} * 2])
assert len(leads) == {n} * 2, len(leads)
template = EmailTemplate.objects.create(name="Faults", subject="Oi {{{{ lead.first_name }}}}",
                                        html_body="<p>Novidades em paletes.</p>")
sequence = Sequence.objects.create(name="Faults", slug="faults", active=True, send_days=[0, 1, 2, 3, 4, 5, 6],
                                   send_from_hour=0, send_until_hour=24)
SequenceStep.objects.create(sequence=sequence, position=1, template=template)
start = timezone.now() + timedelta(seconds={start})
for i, lead in enumerate(leads[:{n}]):
    lead = services.lead_change_status(lead=lead, status="disqualified", actor=admin, reason="no_budget")
    enrollment_create(sequence=sequence, lead=lead, now=start + timedelta(seconds=i * {spread}))
for lead in leads[{n}:]:
    services.lead_change_status(lead=lead, status="disqualified", actor=admin, reason="no_budget",
                                requalify_at=start)
print("EMAILS", " ".join(lead.email for lead in leads[:{n}]))
print("REQUALIFY", " ".join(str(lead.pk) for lead in leads[{n}:]))
"""


def payload(number, prefix):
    return {
        "name": f"Cliente {number}", "email": f"{prefix}{number}@empresa{number % 97}.com.br", "state": "SP",
        "interest": "paletes PBR", "budget": "25000", "job_title": "Gerente de Compras", "company_size": "80",
    }


def shell(env, code):
    return manage(env, "shell", "-c", code, capture=True)


def query(env, sql):
    code = (f"from django.db import connection as c; cur = c.cursor(); cur.execute({sql!r}); "
            "import json; print('ROWS', json.dumps(cur.fetchall(), default=str))")
    out = shell(env, code)
    line = [row for row in out.splitlines() if row.startswith("ROWS ")][-1]
    return json.loads(line[5:])


def prepare(env):
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    shell(env, SETUP)


class Load:
    """Client threads posting submissions at a steady rate until stopped."""

    def __init__(self, port, *, rate, threads=4, prefix="lead", slug="faults", source_address="127.0.0.1"):
        self.port, self.rate, self.threads, self.prefix, self.slug = port, rate, threads, prefix, slug
        self.source_address = source_address
        self.stop = threading.Event()
        self.results = []
        self.lock = threading.Lock()
        self.counter = 0

    def _next(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def _run(self):
        poster = Poster(self.port, self.slug, source_address=self.source_address)
        interval = self.threads / self.rate
        while not self.stop.is_set():
            started = time.monotonic()
            number = self._next()
            status, attempts, seen = poster.post(payload(number, self.prefix))
            with self.lock:
                self.results.append((number, status, attempts, seen))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def __enter__(self):
        self.workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=180)

    def summary(self):
        final = Counter(status for _, status, _, _ in self.results)
        every = Counter(status for _, _, _, seen in self.results for status in seen)
        return {"posted": len(self.results), "final": dict(final), "every_answer": dict(every),
                "retried": sum(1 for _, _, attempts, _ in self.results if attempts > 1)}


def lead_counts(env, prefix):
    rows = query(env, f"SELECT count(*), count(DISTINCT email) FROM leads_lead WHERE email LIKE '{prefix}%'")
    subs = query(env, "SELECT count(*), count(DISTINCT idempotency_key), "
                      "count(*) FILTER (WHERE status = 'processed') FROM leads_submission")
    return {"leads": rows[0][0], "distinct_emails": rows[0][1], "submissions": subs[0][0],
            "distinct_keys": subs[0][1], "processed": subs[0][2]}


def wait_for(predicate, timeout, step=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


# --- Scenarios ------------------------------------------------------------------------------------
def scenario_redis(args):
    outage = 10 if args.quick else 60
    due = 5 if args.quick else 30  # emails due, and leads to requalify, during the outage
    database = DEFAULT_DB.rsplit("/", 1)[0] + "/funil_faults_redis"
    recreate_database(database)
    import logging

    from aiosmtpd.controller import Controller

    from bench.dispatch import Sink

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    with PrivateRedis() as redis:
        env = bench_env(database, redis.url, FUNIL_CAPTURE_RATE_PER_IP="100000/min",
                        FUNIL_CAPTURE_RATE_PER_FORM="100000/min", FUNIL_BENCH_FAST_SWEEPS="1",
                        EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}", FUNIL_BASE_URL="https://funil.example.com")
        prepare(env)
        with Gunicorn(env) as web, Celery(env, "worker"), Celery(env, "beat"):
            with Load(web.port, rate=20, prefix="redis") as load:
                time.sleep(2 + due * 2 / 20 * 1.5)  # enough leads posted to pick from
                out = shell(env, DUE_DURING_OUTAGE.format(prefix="redis", n=due, start=4,
                                                          spread=round((outage - 6) / due, 2)))
                emails = [line for line in out.splitlines() if line.startswith("EMAILS")][-1].split()[1:]
                requalify_ids = [line for line in out.splitlines() if line.startswith("REQUALIFY")][-1].split()[1:]
                redis.stop()
                down_at = time.monotonic()
                out = shell(env, ACTIVATE_V2)  # enqueueing fails: the job waits in the database
                job_id = int([line for line in out.splitlines() if line.startswith("JOB")][-1].split()[1])
                time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
                emails_at_return = sum(sink.recipients[email] for email in emails)  # by a run already under way
                redis.start()
                back_at = time.monotonic()
                time.sleep(5)
            counts = lead_counts(env, "redis")

            def job_done():
                rows = query(env, f"SELECT status FROM scoring_rescorejob WHERE id = {job_id}")
                return rows and rows[0][0] == "done"

            done = wait_for(job_done, timeout=180)
            job_after = round(time.monotonic() - back_at, 1) if done else None
            all_sent = wait_for(lambda: all(sink.recipients[email] for email in emails), timeout=120)
            emails_after = round(time.monotonic() - back_at, 1) if all_sent else None

            def requalified():
                rows = query(env, "SELECT count(*) FROM leads_lead WHERE status = 'qualified' AND id IN "
                                  f"({', '.join(requalify_ids)})")
                return rows[0][0] == len(requalify_ids)

            requalified_ok = wait_for(requalified, timeout=120)
            requalified_after = round(time.monotonic() - back_at, 1) if requalified_ok else None
            requalified_count = query(env, "SELECT count(*) FROM leads_lead WHERE status = 'qualified' AND id IN "
                                           f"({', '.join(requalify_ids)})")[0][0]
            time.sleep(10)  # a duplicate would be a second send on a later dispatcher run
    smtp.stop()
    emails_received = sum(sink.recipients[email] for email in emails)
    emails_duplicated = sum(sink.recipients[email] - 1 for email in emails if sink.recipients[email] > 1)
    summary = load.summary()
    accepted = summary["final"].get(202, 0)
    result = {
        "outage_s": outage, **summary, **counts, "accepted": accepted,
        "lost": accepted - counts["distinct_emails"], "duplicated": counts["leads"] - counts["distinct_emails"],
        "rescore_job_done_after_redis_returned_s": job_after,
        "emails_due_during_outage": len(emails), "emails_sent_before_redis_returned": emails_at_return,
        "emails_received": emails_received, "emails_duplicated": emails_duplicated,
        "all_emails_sent_after_redis_returned_s": emails_after,
        "requalifications_due_during_outage": len(requalify_ids), "requalified": requalified_count,
        "all_requalified_after_redis_returned_s": requalified_after,
    }
    ok = (accepted == summary["posted"] and result["lost"] == 0 and result["duplicated"] == 0 and done
          and emails_received == len(emails) and emails_duplicated == 0 and requalified_count == len(requalify_ids))
    return result, ok


def scenario_postgres(args):
    with PrivatePostgres() as pg, PrivateRedis() as redis:
        env = bench_env(pg.url, redis.url, FUNIL_CAPTURE_RATE_PER_IP="100000/min",
                        FUNIL_CAPTURE_RATE_PER_FORM="100000/min")
        prepare(env)
        with Gunicorn(env) as web:
            with Load(web.port, rate=30, prefix="pg") as load:
                time.sleep(3)
                restarts = 1 if args.quick else 3
                for _ in range(restarts):
                    pg.restart()
                    time.sleep(3)
            before_replay = lead_counts(env, "pg")
            # A submission whose processing failed is stored with its error; beat's replay
            # job (every 5 minutes) processes it again. Run it now rather than wait.
            manage(env, "replay_submissions")
            counts = lead_counts(env, "pg")
    summary = load.summary()
    counts["processed_late_by_replay"] = counts["processed"] - before_replay["processed"]
    accepted = summary["final"].get(202, 0)
    other_5xx = sum(n for status, n in summary["every_answer"].items() if status and status >= 500 and status != 503)
    result = {
        "restarts": restarts, **summary, **counts, "accepted": accepted, "other_5xx": other_5xx,
        "lost": accepted - counts["distinct_emails"], "duplicated": counts["leads"] - counts["distinct_emails"],
    }
    ok = other_5xx == 0 and accepted == summary["posted"] and result["lost"] == 0 and result["duplicated"] == 0
    return result, ok


def scenario_bot(args):
    database = DEFAULT_DB.rsplit("/", 1)[0] + "/funil_faults_bot"
    recreate_database(database)
    seconds = 15 if args.quick else 60
    with PrivateRedis() as redis:
        env = bench_env(database, redis.url)  # the production throttles: 30/min per address
        prepare(env)
        with Gunicorn(env) as web:
            rng = random.Random(7)
            answers = Counter()
            stop = threading.Event()

            def bot():
                poster = Poster(web.port, "faults", source_address="127.0.0.66",
                                forwarded_for=lambda: f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.0.1")
                number, due = 0, time.monotonic()
                while not stop.is_set():
                    number += 1
                    body = payload(number, "bot")
                    if number % 2:
                        body["website"] = "http://spam.example"  # the honeypot
                    status, _ = poster.post_once(body, f"bot-{number}")
                    answers[status] += 1
                    due += 60 / 1000  # 1,000 a minute
                    time.sleep(max(0.0, due - time.monotonic()))

            visitors = Counter()

            def visitor(index):
                poster = Poster(web.port, "faults", source_address=f"127.0.1.{index}")
                for number in range(3):
                    status, _, _ = poster.post(payload(index * 10 + number, "real"))
                    visitors[status] += 1
                    time.sleep(seconds / 4)

            threads = [threading.Thread(target=bot, daemon=True)]
            threads += [threading.Thread(target=visitor, args=(i,), daemon=True) for i in range(1, 21)]
            for thread in threads:
                thread.start()
            time.sleep(seconds)
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
            leads = query(env, "SELECT count(*) FILTER (WHERE email LIKE 'bot%'), "
                               "count(*) FILTER (WHERE email LIKE 'real%') FROM leads_lead")[0]
            spam = query(env, "SELECT count(*) FROM leads_submission WHERE status = 'spam'")[0][0]
    result = {
        "seconds": seconds, "bot_posts": sum(answers.values()), "bot_answers": dict(answers),
        "bot_leads": leads[0], "bot_spam_kept": spam, "visitor_posts": sum(visitors.values()),
        "visitor_answers": dict(visitors), "visitor_leads": leads[1],
    }
    allowed = answers.get(202, 0)
    # At 30/min per address the bot gets at most 30 through per clock minute (fixed windows), half of
    # them honeypot hits. A run of `seconds` touches at most ceil(seconds / 60) + 1 windows: 15 s across
    # a minute's turn let 60 through, and so does any run that happens to straddle one.
    windows = math.ceil(seconds / 60) + 1
    ok = (answers.get(429, 0) > 0 and allowed <= 30 * windows and leads[0] <= (allowed + 1) // 2
          and visitors.get(202, 0) == result["visitor_posts"] and leads[1] == result["visitor_posts"])
    return result, ok


def scenario_beats(args):
    database = DEFAULT_DB.rsplit("/", 1)[0] + "/funil_faults_beats"
    recreate_database(database)
    seconds = 30 if args.quick else 90
    with PrivateRedis() as redis:
        env = bench_env(database, redis.url, FUNIL_BENCH_FAST_SWEEPS="1")
        prepare(env)
        # Disqualified leads to requalify, so that each run takes a while.
        shell(env, "from django.db import connection; from django.utils import timezone; "
                   "from bench import _rescore_data as d; d.load(connection, 10000, now=timezone.now(), "
                   "progress=lambda *a: None)")
        with Celery(env, "worker") as worker, Celery(env, "beat") as beat_a, Celery(env, "beat") as beat_b:
            time.sleep(seconds)
        runs = query(env, "SELECT id, started_at, finished_at FROM scoring_rescorejob "
                          "WHERE kind = 'requalification' AND started_at IS NOT NULL ORDER BY started_at")
    sent = [Path(beat.log.name).read_text().count("Sending due task requalify") for beat in (beat_a, beat_b)]
    refused = Path(worker.log.name).read_text().count("'already running'")
    overlaps = 0
    for (_, _, end_a), (_, start_b, _) in zip(runs, runs[1:], strict=False):
        if end_a is None or start_b < end_a:
            overlaps += 1
    result = {"seconds": seconds, "sent_by_beat_1": sent[0], "sent_by_beat_2": sent[1],
              "requalification_runs": len(runs), "refused_while_one_ran": refused, "overlapping_runs": overlaps}
    return result, overlaps == 0 and min(sent) > 0 and refused > 0


def scenario_worker(args):
    database = DEFAULT_DB.rsplit("/", 1)[0] + "/funil_faults_worker"
    recreate_database(database)
    leads = 50_000 if args.quick else 300_000
    with PrivateRedis() as redis:
        env = bench_env(database, redis.url, FUNIL_BENCH_FAST_SWEEPS="1")
        prepare(env)
        shell(env, "from django.db import connection; from django.utils import timezone; "
                   f"from bench import _rescore_data as d; d.load(connection, {leads}, now=timezone.now(), "
                   "progress=lambda *a: None)")
        out = shell(env, ACTIVATE_V2)
        job_id = int([line for line in out.splitlines() if line.startswith("JOB")][-1].split()[1])
        kills = 0
        beat = Celery(env, "beat").start()
        try:
            for _ in range(3):
                worker = Celery(env, "worker").start()

                def started():
                    rows = query(env, f"SELECT leads_seen, status FROM scoring_rescorejob WHERE id = {job_id}")
                    return rows and (rows[0][0] > 0 or rows[0][1] == "done") and rows[0]

                state = wait_for(started, timeout=120, step=0.5)
                if state and state[1] != "done":
                    worker.kill()
                    kills += 1
                else:
                    worker.stop()
                    break
            worker = Celery(env, "worker").start()

            def finished():
                rows = query(env, f"SELECT status FROM scoring_rescorejob WHERE id = {job_id}")
                return rows and rows[0][0] == "done"

            done = wait_for(finished, timeout=1800)
            worker.stop()
        finally:
            beat.stop()
        checks = query(env, f"""
            SELECT
              (SELECT leads_seen FROM scoring_rescorejob WHERE id = {job_id}),
              (SELECT leads_changed FROM scoring_rescorejob WHERE id = {job_id}),
              (SELECT count(*) FROM leads_lead),
              (SELECT status || ' ' || left(error, 300) FROM scoring_rescorejob WHERE id = {job_id}),
              (SELECT count(*) FROM (SELECT lead_id FROM leads_leadevent
                 WHERE kind IN ('scored', 'status_changed') AND (data->>'job')::int = {job_id}
                 GROUP BY lead_id, kind HAVING count(*) > 1) twice)
        """)[0]
        verify = shell(env, f"""
from scoring import services
from scoring.models import RescoreJob, Ruleset
from leads.models import Lead
job = RescoreJob.objects.get(pk={job_id})
rules = services.ruleset_to_engine(job.ruleset)
wrong = 0
sample = Lead.objects.order_by("?")[:2000].select_related("source", "form", "reason")
for lead in sample:
    verdict = services.lead_evaluate(lead=lead, rules=rules, now=job.started_at)
    if (lead.score, lead.temperature) != (verdict.score, verdict.temperature):
        wrong += 1
print("WRONG", wrong)
""")
        wrong = int([line for line in verify.splitlines() if line.startswith("WRONG")][-1].split()[1])
    result = {"leads": leads, "kills": kills, "job_done": bool(done), "job_status": checks[3],
              "leads_seen": checks[0], "leads_changed": checks[1], "leads_total": checks[2],
              "leads_with_a_duplicate_event": checks[4],
              "sample_checked": 2000, "sample_wrong": wrong}
    ok = bool(done) and checks[0] == checks[2] and checks[4] == 0 and wrong == 0 and kills > 0
    return result, ok


SCENARIOS = {"redis": scenario_redis, "postgres": scenario_postgres, "bot": scenario_bot,
             "beats": scenario_beats, "worker": scenario_worker}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short outages and small data (CI)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    results, failed = {}, []
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        result, ok = SCENARIOS[name](args)
        result["seconds_taken"] = round(time.monotonic() - started, 1)
        results[name] = (result, ok)
        print(json.dumps(result, indent=1, default=str))
        print(f"   {'PASS' if ok else 'FAIL'}", flush=True)
        counted = {key: result[key] for key in ("accepted", "lost", "duplicated") if key in result}
        figure(f"faults: {name}", ", ".join(f"{key} {value}" for key, value in counted.items()) or "see below",
               target="nothing lost, nothing twice", met=ok)
        if not ok:
            failed.append(name)
    if not args.no_docs:
        lines = [f"Machine: {machine()}. Size: {'--quick' if args.quick else 'full'}.", "",
                 "| scenario | result | counts |", "| --- | --- | --- |"]
        for name, (result, ok) in results.items():
            counts = ", ".join(f"{key} {value}" for key, value in result.items())
            lines.append(f"| {name} | {'pass' if ok else 'FAIL'} | {counts} |")
        write_section("faults", "\n".join(lines))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
