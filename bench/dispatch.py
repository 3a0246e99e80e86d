#!/usr/bin/env python
"""Dispatch benchmark: N due deliveries sent by one Celery worker to a local SMTP sink.

Recreates a PostgreSQL database, migrates it, loads N disqualified leads enrolled in a
one-step sequence (all due now), starts an aiosmtpd sink announcing PIPELINING in its
own (forked) process on a free port, so that the sink's CPU is neither this script's nor
the worker's, and one ``celery worker --pool solo`` against Redis, then prints in the
same run:

  (0) the sink's ceiling: this script blasting pre-rendered messages at the sink over one
      pipelined connection (``nurturing.mail``): what the sink can take at most,
  (a) the baseline: the same worker draining N no-op tasks (``nurturing.tasks.noop``),
      timed on the worker from a first to a last marker task, all enqueued while the
      worker was stopped (SIGSTOP), so that only the drain is timed,
  (b) the dispatch: one ``nurturing.tasks.dispatch_due`` nudge until every delivery is sent,
  (c) the same deliveries again with ``FUNIL_NURTURE_ASYNC_COMMIT=1`` (commits do not
      wait for the WAL flush; see docs/architecture.md for what that trades),

and prints messages/s, the ratio to the no-op rate, and the duplicates (the same
Message-ID or recipient received twice).

    .venv/bin/python bench/dispatch.py [--quick] [--deliveries 10000] [--durable-only]
        [--database-url postgres://...] [--redis-url redis://...]

Target on the 2-core machine: >= 400 messages/s, duplicates 0. ``--quick`` runs 300
deliveries and asserts nothing about time. ``Sink`` (an aiosmtpd handler) is also the
in-process sink of bench/load.py and bench/faults.py.
"""

import argparse
import collections
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import figure  # noqa: E402
from bench._server import PYTHON, ROOT, bench_env, free_port, machine, manage, recreate_database  # noqa: E402

TARGET_RATE = 400


class Sink:
    """An aiosmtpd handler that counts Message-IDs and recipients; it announces ESMTP
    PIPELINING (aiosmtpd reads pipelined commands in order)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.message_ids = collections.Counter()
        self.recipients = collections.Counter()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

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

    def duplicates(self):
        with self.lock:
            return sum(c - 1 for c in self.message_ids.values() if c > 1) + \
                sum(c - 1 for c in self.recipients.values() if c > 1)

    def reset(self):
        with self.lock:
            self.message_ids.clear()
            self.recipients.clear()


def _serve_sink(port, conn):
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    conn.send("ready")
    while True:
        command = conn.recv()
        if command == "stop":
            controller.stop()
            conn.send(True)
            return
        conn.send(getattr(sink, command)())


class SinkProcess:
    """The Sink in a forked process on a free port; asked for its counts through a pipe."""

    def __init__(self):
        self.port = free_port()
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_serve_sink, args=(self.port, child), daemon=True)

    def start(self):
        self.process.start()
        if not self.conn.poll(30) or self.conn.recv() != "ready":
            sys.exit("the SMTP sink did not start")
        return self

    def _ask(self, command):
        self.conn.send(command)
        return self.conn.recv()

    def count(self):
        return self._ask("count")

    def duplicates(self):
        return self._ask("duplicates")

    def reset(self):
        self._ask("reset")

    def stop(self):
        self._ask("stop")
        self.process.join(10)


class _Prerendered:
    """Quacks like an EmailMessage for nurturing.mail's backend, with its bytes made in
    advance: blasting these measures the sink and the protocol, not the rendering."""

    encoding = None
    from_email = "news@paletes.example"

    def __init__(self, to, data):
        self.to, self.data = to, data

    def recipients(self):
        return [self.to]

    def message(self):
        return self

    def as_bytes(self, linesep="\r\n"):
        return self.data


def sink_ceiling(sink, n, sample):
    """Messages/s the sink takes from one pipelined connection of this process."""
    from nurturing.mail import EmailBackend

    head, _, body = sample.partition(b"\r\n\r\n")
    head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"message-id:"))
    messages = [_Prerendered(f"blast{i}@sink.example", head + f"\r\nMessage-ID: <blast{i}@sink.example>"
                             .encode() + b"\r\n\r\n" + body) for i in range(n)]
    backend = EmailBackend(host="127.0.0.1", port=sink.port, username="", password="", use_tls=False,
                           use_ssl=False, timeout=30)
    t = time.monotonic()
    results = []
    for start in range(0, n, 200):
        results += backend.send_each(messages[start:start + 200])
    seconds = time.monotonic() - t
    backend.close()
    if any(results):
        sys.exit(f"the sink refused the blast: {next(r for r in results if r)}")
    wait_for(lambda: sink.count() >= n, 30, "the sink")
    sink.reset()
    return n / seconds


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
    parser.add_argument("--durable-only", action="store_true", help="skip (c), the async-commit run")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/funil_bench_dispatch"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"))
    args = parser.parse_args()
    n = args.deliveries or (300 if args.quick else 10_000)

    sink = SinkProcess().start()  # forked first: no threads or connections to inherit
    port = sink.port

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
    print(f"loaded {n} due deliveries in {time.monotonic() - t:.1f} s", flush=True)
    ceiling = sink_ceiling(sink, min(n, 5000), sample_message())
    print(f"sink ceiling: {ceiling:.0f} messages/s", flush=True)

    queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    worker, log = start_worker(env, queue)
    try:
        # Warm the worker up (Django setup, connections) before timing anything.
        record_heartbeat.apply_async(kwargs={"name": "bench-warm"}, queue=queue)
        wait_for(lambda: WorkerHeartbeat.objects.filter(name="bench-warm").exists(), 60, "the worker")

        # (a) Baseline: the same worker drains n no-op tasks between two markers, all
        # enqueued while it is stopped; timed by the markers' clocks (the drain only).
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            t = time.monotonic()
            record_heartbeat.apply_async(kwargs={"name": "bench-noop-start"}, queue=queue)
            for i in range(n):
                noop.apply_async(args=[i], queue=queue)
            record_heartbeat.apply_async(kwargs={"name": "bench-noop-done"}, queue=queue)
            enqueue_s = time.monotonic() - t
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_for(lambda: WorkerHeartbeat.objects.filter(name="bench-noop-done").exists(), 600, "the no-op tasks")
        marks = dict(WorkerHeartbeat.objects.filter(name__startswith="bench-noop-").values_list("name", "last_seen"))
        noop_s = (marks["bench-noop-done"] - marks["bench-noop-start"]).total_seconds()
        noop_rate = n / noop_s

        # (b) Dispatch with durable commits (the default).
        strict = run_dispatch(queue, sink, n, Delivery, dispatch_due, worker.pid)
    finally:
        stop(worker, log)
    relaxed = None
    if not args.durable_only:
        reset(sink)
        # (c) The same deliveries again, with FUNIL_NURTURE_ASYNC_COMMIT=1 (a fresh worker).
        queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
        worker, log = start_worker({**env, "FUNIL_NURTURE_ASYNC_COMMIT": "1"}, queue)
        try:
            record_heartbeat.apply_async(kwargs={"name": "bench-warm-2"}, queue=queue)
            wait_for(lambda: WorkerHeartbeat.objects.filter(name="bench-warm-2").exists(), 60, "the worker")
            relaxed = run_dispatch(queue, sink, n, Delivery, dispatch_due, worker.pid)
        finally:
            stop(worker, log)
    sink.stop()

    print(f"machine: {machine()} (shared with other work at the time)")
    print(f"deliveries: {n}, one worker (--pool solo), PostgreSQL + Redis, aiosmtpd sink (PIPELINING) in its "
          f"own process on 127.0.0.1; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"sink ceiling: {ceiling:.0f} messages/s (this script blasting {min(n, 5000)} pre-rendered messages "
          "over one pipelined connection)")
    print(f"baseline: {n} no-op tasks drained in {noop_s:.2f} s = {noop_rate:.0f} tasks/s "
          f"(enqueued beforehand in {enqueue_s:.2f} s, not timed)")
    ok = True
    runs = [("dispatch, durable commits (default)", strict)]
    if relaxed is not None:
        runs.append(("dispatch, FUNIL_NURTURE_ASYNC_COMMIT=1", relaxed))
    for label, (rate, seconds, sent, received, duplicates, cpu_ms) in runs:
        print(f"{label}: {sent} sent, {received} received in {seconds:.2f} s = {rate:.0f} messages/s, "
              f"{rate / noop_rate:.2f}x the no-op rate, duplicates {duplicates}"
              + ("" if args.quick else f", target {'met' if rate >= TARGET_RATE else 'NOT met'}"))
        print(f"  CPU per message: worker {cpu_ms[0]} ms, sink {cpu_ms[1]} ms")
        figure(f"dispatch: {label}, {n:,} deliveries", f"{rate:.0f} msg/s, {duplicates} duplicated",
               baseline=f"no-op tasks {noop_rate:.0f}/s", ratio=f"{rate / noop_rate:.2f}",
               target=f">= {TARGET_RATE} msg/s, 0 duplicated",
               met=None if args.quick else rate >= TARGET_RATE and duplicates == 0 and received == n)
        ok = ok and duplicates == 0 and sent == n and received == n
    print(f"target: >= {TARGET_RATE} messages/s, duplicates 0")
    if not args.quick:
        ok = ok and max(rate for _label, (rate, *_rest) in runs) >= TARGET_RATE
    print("result:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def cpu_seconds(pid):
    """User + system CPU seconds of a local process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_dispatch(queue, sink, n, Delivery, dispatch_due, worker_pid):  # noqa: N803 - the model class
    """One nudge; the worker claims, renders, sends and records every delivery. Also the
    CPU the worker and the sink spent per message: on a shared machine, the figure that
    other people's load changes least."""
    before = (cpu_seconds(worker_pid), cpu_seconds(sink.process.pid))
    t = time.monotonic()
    dispatch_due.apply_async(kwargs={"batch_size": 200, "time_budget": 900.0}, queue=queue)
    wait_for(lambda: not Delivery.objects.exclude(status="sent").exists(), 1800, "the dispatch")
    seconds = time.monotonic() - t
    wait_for(lambda: sink.count() >= n, 30, "the sink")
    after = (cpu_seconds(worker_pid), cpu_seconds(sink.process.pid))
    cpu_ms = [round((b - a) * 1000 / n, 2) for a, b in zip(before, after, strict=True)]
    return (n / seconds, seconds, Delivery.objects.filter(status="sent").count(), sink.count(), sink.duplicates(),
            cpu_ms)


def reset(sink):
    from leads.models import LeadEvent
    from nurturing.models import Delivery, Enrollment

    LeadEvent.objects.filter(kind="email_sent").delete()
    Enrollment.objects.update(status="active", exit_reason="", ended_at=None)
    Delivery.objects.update(status="pending", claim_token="", claimed_at=None, sent_at=None, message_id="",
                            recorded=False)
    sink.reset()


def sample_message():
    """The bytes of one bench delivery as the dispatcher renders it (for the sink's ceiling)."""
    from nurturing.emails import build_message
    from nurturing.models import Delivery

    delivery = Delivery.objects.select_related("lead", "step__template").first()
    message, _ = build_message(template=delivery.step.template, lead=delivery.lead, to=delivery.lead.email,
                               delivery_id=delivery.pk)
    return message.message().as_bytes(linesep="\r\n")


def stop(worker, log):
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


if __name__ == "__main__":
    main()
