#!/usr/bin/env python
"""Dispatch benchmark: N due deliveries sent by one Celery worker to a local SMTP sink.

Recreates a PostgreSQL database, migrates it, loads N disqualified leads enrolled in a
one-step sequence (all due now), starts an aiosmtpd sink on a free port and one
``celery worker --pool solo`` against Redis, then times in the same run:

  (a) the baseline: the same worker draining N no-op tasks (``nurturing.tasks.noop``),
  (b) the dispatch: one ``nurturing.tasks.dispatch_due`` nudge until every delivery is sent,

  (c) the same deliveries again with ``FUNIL_NURTURE_ASYNC_COMMIT=1`` (commits do not
      wait for the WAL flush; see docs/architecture.md for what that trades),

and prints messages/s, the ratio to the no-op rate, and the duplicates (the same
Message-ID or recipient received twice).

    .venv/bin/python bench/dispatch.py [--quick] [--deliveries 10000]
        [--database-url postgres://...] [--redis-url redis://...]

Target on the 2-core machine: >= 400 messages/s, duplicates 0. ``--quick`` runs 300
deliveries and asserts nothing about time.
"""

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import PYTHON, ROOT, bench_env, free_port, machine, manage, recreate_database  # noqa: E402

TARGET_RATE = 400


class Sink:
    def __init__(self):
        self.lock = threading.Lock()
        self.message_ids = collections.Counter()
        self.recipients = collections.Counter()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message_id = ""
        for line in envelope.content.split(b"\r\n"):
            if not line:
                break
            if line[:11].lower() == b"message-id:":
                message_id = line[11:].strip().decode()
        with self.lock:
            self.message_ids[message_id] += 1
            for to in envelope.rcpt_tos:
                self.recipients[to] += 1
        return "250 2.0.0 Queued"

    def count(self):
        with self.lock:
            return sum(self.message_ids.values())


def load(n):
    from django.db import connection
    from django.utils import timezone

    from leads.models import Lead, LeadStatus, Source
    from nurturing.models import Delivery, EmailTemplate, Enrollment, Sequence, SequenceStep

    source = Source.objects.create(slug="bench", name="Bench")
    template = EmailTemplate.objects.create(
        name="Bench", subject="Novidades para {{ lead.company }}",
        html_body="<p>Olá {{ lead.first_name }},</p><p>Paletes PBR para a {{ lead.company }}: "
                  '<a href="https://example.com/paletes">veja</a> ou <a href="https://example.com/contato">fale '
                  "conosco</a>.</p><ul><li>PBR</li><li>Sob medida</li></ul>",
    )
    sequence = Sequence.objects.create(name="Bench", slug="bench", active=True,
                                       send_days=[0, 1, 2, 3, 4, 5, 6], send_from_hour=0, send_until_hour=24)
    step = SequenceStep.objects.create(sequence=sequence, position=1, template=template)
    now = timezone.now()
    Lead.objects.bulk_create([
        Lead(email=f"lead{i}@cliente{i % 97}.com.br", first_name="Ana", last_name=f"Souza {i}",
             company=f"Empresa {i}", state="SP", status=LeadStatus.DISQUALIFIED, source=source)
        for i in range(n)
    ], batch_size=2000)
    lead_ids = list(Lead.objects.values_list("pk", flat=True))
    Enrollment.objects.bulk_create([Enrollment(sequence=sequence, lead_id=pk, enrolled_at=now) for pk in lead_ids],
                                   batch_size=2000)
    Delivery.objects.bulk_create([
        Delivery(enrollment_id=pk, step=step, lead_id=lead_id, due_at=now)
        for pk, lead_id in Enrollment.objects.values_list("pk", "lead_id")
    ], batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def start_worker(env, queue):
    log = open(ROOT / ".data" / f"bench-dispatch-{queue}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--queues", queue,
         "--hostname", f"{queue}@%h", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    return process, log


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deliveries", type=int, default=None)
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/funil_bench_dispatch"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"))
    args = parser.parse_args()
    n = args.deliveries or (300 if args.quick else 10_000)

    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()

    (ROOT / ".data").mkdir(exist_ok=True)
    recreate_database(args.database_url)
    env = bench_env(args.database_url, args.redis_url, EMAIL_URL=f"smtp://127.0.0.1:{port}",
                    FUNIL_BASE_URL="https://funil.example.com",
                    DEFAULT_FROM_EMAIL="Paletes <news@paletes.example>", LOG_LEVEL="WARNING")
    manage(env, "migrate", "--no-input", "-v", "0")
    os.environ.update({key: value for key, value in env.items() if key not in os.environ or key in (
        "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "EMAIL_URL",
        "FUNIL_BASE_URL", "DEFAULT_FROM_EMAIL", "SECURE_SSL_REDIRECT")})
    import django

    django.setup()
    from nurturing.models import Delivery, WorkerHeartbeat
    from nurturing.tasks import dispatch_due, noop, record_heartbeat

    t = time.monotonic()
    load(n)
    print(f"loaded {n} due deliveries in {time.monotonic() - t:.1f} s")

    queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    worker, log = start_worker(env, queue)
    try:
        # Warm the worker up (Django setup, connections) before timing anything.
        record_heartbeat.apply_async(kwargs={"name": "bench-warm"}, queue=queue)
        wait_for(lambda: WorkerHeartbeat.objects.filter(name="bench-warm").exists(), 60, "the worker")

        # (a) Baseline: the same worker drains n no-op tasks, then a marker.
        t = time.monotonic()
        for i in range(n):
            noop.apply_async(args=[i], queue=queue)
        enqueue_s = time.monotonic() - t
        record_heartbeat.apply_async(kwargs={"name": "bench-noop-done"}, queue=queue)
        wait_for(lambda: WorkerHeartbeat.objects.filter(name="bench-noop-done").exists(), 600, "the no-op tasks")
        noop_s = time.monotonic() - t
        noop_rate = n / noop_s

        # (b) Dispatch with durable commits (the default).
        strict = run_dispatch(queue, sink, n, Delivery, dispatch_due)
    finally:
        stop(worker, log)
    reset(sink)
    # (c) The same deliveries again, with FUNIL_NURTURE_ASYNC_COMMIT=1 (a fresh worker).
    queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    worker, log = start_worker({**env, "FUNIL_NURTURE_ASYNC_COMMIT": "1"}, queue)
    try:
        record_heartbeat.apply_async(kwargs={"name": "bench-warm-2"}, queue=queue)
        wait_for(lambda: WorkerHeartbeat.objects.filter(name="bench-warm-2").exists(), 60, "the worker")
        relaxed = run_dispatch(queue, sink, n, Delivery, dispatch_due)
    finally:
        stop(worker, log)
        controller.stop()

    print(f"machine: {machine()} (shared with other work at the time)")
    print(f"deliveries: {n}, one worker (--pool solo), PostgreSQL + Redis, aiosmtpd sink on 127.0.0.1")
    print(f"baseline: {n} no-op tasks drained in {noop_s:.2f} s = {noop_rate:.0f} tasks/s "
          f"(enqueueing took {enqueue_s:.2f} s of it)")
    ok = True
    for label, (rate, seconds, sent, received, duplicates) in (
            ("dispatch, durable commits (default)", strict),
            ("dispatch, FUNIL_NURTURE_ASYNC_COMMIT=1", relaxed)):
        print(f"{label}: {sent} sent, {received} received in {seconds:.2f} s = {rate:.0f} messages/s, "
              f"{rate / noop_rate:.2f}x the no-op rate, duplicates {duplicates}"
              + ("" if args.quick else f", target {'met' if rate >= TARGET_RATE else 'NOT met'}"))
        ok = ok and duplicates == 0 and sent == n and received == n
    print(f"target: >= {TARGET_RATE} messages/s, duplicates 0")
    if not args.quick:
        ok = ok and max(strict[0], relaxed[0]) >= TARGET_RATE
    print("result:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def run_dispatch(queue, sink, n, Delivery, dispatch_due):  # noqa: N803 - the model class
    """One nudge; the worker claims, renders, sends and records every delivery."""
    t = time.monotonic()
    dispatch_due.apply_async(kwargs={"batch_size": 200, "time_budget": 900.0}, queue=queue)
    wait_for(lambda: not Delivery.objects.exclude(status="sent").exists(), 1800, "the dispatch")
    seconds = time.monotonic() - t
    wait_for(lambda: sink.count() >= n, 30, "the sink")
    duplicates = sum(c - 1 for c in sink.message_ids.values() if c > 1) + \
        sum(c - 1 for c in sink.recipients.values() if c > 1)
    return n / seconds, seconds, Delivery.objects.filter(status="sent").count(), sink.count(), duplicates


def reset(sink):
    from leads.models import LeadEvent
    from nurturing.models import Delivery, Enrollment

    LeadEvent.objects.filter(kind="email_sent").delete()
    Enrollment.objects.update(status="active", exit_reason="", ended_at=None)
    Delivery.objects.update(status="pending", claim_token="", claimed_at=None, sent_at=None, message_id="",
                            recorded=False)
    with sink.lock:
        sink.message_ids.clear()
        sink.recipients.clear()


def stop(worker, log):
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


if __name__ == "__main__":
    main()
