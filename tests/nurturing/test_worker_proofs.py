"""The issue's proofs: a real Celery worker process against Redis sends through a real
SMTP server (aiosmtpd on a free port); the clock is moved by passing ``now`` to the
tasks, since a separate process cannot see a frozen clock."""

import collections
import random
import signal
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import Client, override_settings

from leads import services as lead_services
from nurturing import services
from nurturing.models import Delivery, Enrollment
from nurturing.tasks import dispatch_due, enroll_entrants
from tests.conftest import CeleryWorkerProcess
from tests.factories import FormFactory

from .conftest import disqualified_lead
from .factories import disqualified_segment, sequence
from .smtp import SmtpServer

pytestmark = pytest.mark.services

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo("America/Sao_Paulo"))  # a Monday morning


@pytest.fixture
def smtp():
    with SmtpServer(pipelining=True) as server:  # the worker pipelines (the in-process tests do not)
        yield server


@pytest.fixture
def worker_factory(transactional_db, redis_url, require_postgres, smtp):
    queue = f"pytest-nurture-{uuid.uuid4().hex[:8]}"
    started = []

    def start():
        worker = CeleryWorkerProcess(redis_url, queue=queue, extra_env={
            "DJANGO_SETTINGS_MODULE": "tests.nurturing.worker_settings", "FUNIL_TEST_EMAIL_URL": smtp.url,
        })
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.kill()


def wait_until(condition, *, timeout=120, what="", worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\nworker log:\n{worker.log()[-4000:]}" if worker else ""))


def drained(now):
    # Sent but not yet recorded: the worker is still writing the batch's bookkeeping
    # (timeline events, next steps, completions).
    return not Delivery.objects.filter(status="pending", due_at__lte=now).exists() and \
        not Delivery.objects.filter(status__in=["claimed", "sending"]).exists() and \
        not Delivery.objects.filter(status="sent", recorded=False).exists()


def run_dispatch(worker, now, **kwargs):
    dispatch_due.apply_async(kwargs={"now": now.isoformat(), **kwargs}, queue=worker.queue)
    wait_until(lambda: drained(now), what=f"dispatch at {now}", worker=worker)


@override_settings(FUNIL_BASE_URL="https://funil.example.com")
def test_300_leads_in_a_3_step_sequence_receive_exactly_900_messages(worker_factory, smtp):
    seq = sequence(segment=disqualified_segment(), steps=((0, 0), (2, 0), (3, 0)), name="Sem orçamento",
                   slug="sem-orcamento")
    clean = [disqualified_lead(email=f"lead{n}@cliente.com.br") for n in range(300)]
    will_qualify = [disqualified_lead(email=f"qualifica{n}@cliente.com.br") for n in range(10)]
    suppressed = {}
    for reason, count in (("unsubscribed", 3), ("bounced", 2), ("complained", 2), ("erased", 2)):
        for n in range(count):
            lead = disqualified_lead(email=f"{reason}{n}@cliente.com.br")
            services.suppression_add(email=lead.email, reason=reason)
            suppressed[lead.email] = reason
    form = FormFactory(slug="com-consentimento", consent_required=True)
    for n in range(3):
        suppressed[disqualified_lead(email=f"semconsentimento{n}@cliente.com.br", form=form).email] = "no_consent"

    worker = worker_factory()
    enroll_entrants.apply_async(kwargs={"now": T0.isoformat()}, queue=worker.queue)
    wait_until(lambda: Enrollment.objects.filter(sequence=seq).count() == 310 + len(suppressed), worker=worker,
               what="enrollment")

    run_dispatch(worker, T0)
    assert len(smtp.sink.messages) == 310
    for lead in will_qualify:
        lead_services.lead_change_status(lead=lead, status="qualified")
    run_dispatch(worker, T0 + timedelta(days=2, minutes=1))
    run_dispatch(worker, T0 + timedelta(days=5, minutes=2))
    run_dispatch(worker, T0 + timedelta(days=30))

    received = collections.Counter(smtp.sink.recipients())
    assert sum(received[lead.email] for lead in clean) == 900
    assert all(received[lead.email] == 3 for lead in clean)
    assert all(received[lead.email] == 1 for lead in will_qualify)
    assert not any(received[email] for email in suppressed)
    assert sum(received.values()) == 910

    subjects = collections.defaultdict(list)
    message_ids = set()
    for (to,), message in smtp.sink.messages:
        subjects[to].append(message["Subject"].split(":")[0])
        message_ids.add(message["Message-ID"])
        https_part, mailto_part = [part.strip().strip("<>") for part in message["List-Unsubscribe"].split(",")]
        assert https_part.startswith("https://funil.example.com/n/u/")
        assert mailto_part.startswith("mailto:unsubscribe@paletes.example?subject=")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["From"] == "Paletes Exemplo <news@paletes.example>"
    assert subjects[clean[7].email] == ["Passo 1", "Passo 2", "Passo 3"]
    assert len(message_ids) == 910
    assert set(Delivery.objects.filter(status="sent").values_list("message_id", flat=True)) == message_ids
    assert Enrollment.objects.filter(sequence=seq, status="completed").count() == 300
    assert set(Enrollment.objects.filter(lead__in=will_qualify).values_list("exit_reason", flat=True)) == \
        {"qualified"}
    assert Delivery.objects.filter(status="suppressed").count() == len(suppressed)
    assert "Passo 1" in smtp.sink.messages[0][1]["Subject"]


def test_one_click_unsubscribe_from_a_received_message_stops_the_next_steps(worker_factory, smtp):
    seq = sequence(steps=((0, 0), (1, 0)))
    leads = [disqualified_lead(email=f"um{n}@cliente.com.br") for n in range(3)]
    for lead in leads:
        services.enrollment_create(sequence=seq, lead=lead, now=T0)
    worker = worker_factory()
    run_dispatch(worker, T0)
    (_, message), = [item for item in smtp.sink.messages if item[0] == [leads[0].email]]
    https_part = message["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    path = "/" + https_part.split("/", 3)[3]

    response = Client(enforce_csrf_checks=True).post(path, data="List-Unsubscribe=One-Click",
                                                     content_type="application/x-www-form-urlencoded")
    assert 200 <= response.status_code < 300
    run_dispatch(worker, T0 + timedelta(days=3))

    received = collections.Counter(smtp.sink.recipients())
    assert received[leads[0].email] == 1
    assert received[leads[1].email] == received[leads[2].email] == 2


def test_sigkill_during_dispatch_five_times_sends_nothing_twice_and_loses_nothing_silently(worker_factory, smtp):
    """The guarantee is at most once. Each kill can leave at most the one group
    (FUNIL_NURTURE_SENDING_GROUP, 20 by default) that was between 'sending' and 'sent': it
    becomes 'uncertain' (never re-sent by itself); everything else is sent exactly once
    after the restarts."""
    from django.conf import settings

    group = settings.FUNIL_NURTURE_SENDING_GROUP
    seq = sequence(steps=((0, 0),))
    total = 400
    for n in range(total):
        services.enrollment_create(sequence=seq, lead=disqualified_lead(email=f"k{n}@cliente.com.br"), now=T0)
    rng = random.Random(6)
    kills = 0
    while kills < 5:
        worker = worker_factory()
        before = len(smtp.sink.messages)
        dispatch_due.apply_async(kwargs={"now": T0.isoformat(), "batch_size": 25}, queue=worker.queue)
        target = before + rng.randint(5, 40)
        wait_until(lambda target=target: len(smtp.sink.messages) >= target or drained(T0),
                   worker=worker, what="sending")
        assert not drained(T0), "dispatch finished before the kill: the test needs more deliveries"
        worker.kill(signal.SIGKILL)
        kills += 1
        # What beat's sweep does after the claim timeout (the worker is dead: nothing is fresh).
        services.deliveries_sweep_stale(older_than=timedelta(0))
    worker = worker_factory()
    run_dispatch(worker, T0)
    worker.kill()

    received = collections.Counter(message["Message-ID"] for _, message in smtp.sink.messages)
    recipients = collections.Counter(smtp.sink.recipients())
    assert max(recipients.values()) == 1, "a message was sent twice"
    statuses = collections.Counter(Delivery.objects.values_list("status", flat=True))
    assert set(statuses) <= {"sent", "uncertain"} and sum(statuses.values()) == total
    assert statuses["uncertain"] <= kills * group
    sent_ids = set(Delivery.objects.filter(status="sent").values_list("message_id", flat=True))
    assert sent_ids <= set(received), "a delivery marked sent never reached the server"
    uncertain = list(Delivery.objects.filter(status="uncertain"))
    assert set(received) - sent_ids <= {d.message_id for d in uncertain}
    assert len(received) == statuses["sent"] + sum(1 for d in uncertain if d.message_id in received)

    print(f"after {kills} kills: {dict(statuses)}; uncertain that reached the server: "
          f"{sum(1 for d in uncertain if d.message_id in received)}")

    # What a person does with the uncertain ones: look each Message-ID up in the server's
    # log (here: the sink), mark the ones that arrived, resend the others.
    arrived = Delivery.objects.filter(pk__in=[d.pk for d in uncertain if d.message_id in received])
    lost = Delivery.objects.filter(pk__in=[d.pk for d in uncertain if d.message_id not in received])
    services.deliveries_mark_sent(deliveries=arrived)
    services.deliveries_resend(deliveries=lost)
    worker = worker_factory()
    run_dispatch(worker, T0)
    recipients = collections.Counter(smtp.sink.recipients())
    assert len(recipients) == total and max(recipients.values()) == 1
    assert Delivery.objects.filter(status="sent").count() == total
