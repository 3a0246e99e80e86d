from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from leads import services as lead_services
from leads.models import Consent, LeadEvent
from nurturing import dispatch, services
from nurturing.models import Delivery, Enrollment, Suppression
from tests.factories import FormFactory

from .factories import disqualified_segment, sequence

pytestmark = pytest.mark.django_db


def enroll(seq, *leads):
    return [services.enrollment_create(sequence=seq, lead=lead)[0] for lead in leads]


def test_due_deliveries_are_sent_with_their_message_id_and_the_next_step_waits_its_delay(
        smtp_server, make_disqualified):
    seq = sequence(steps=((0, 0), (2, 0)))
    lead = make_disqualified(email="ana@cliente.com.br", first_name="Ana")
    (enrollment,) = enroll(seq, lead)
    now = timezone.now()

    result = dispatch.dispatch_due(now=now)

    assert result.sent == 1
    ((to, message),) = smtp_server.sink.messages
    assert to == ["ana@cliente.com.br"]
    assert message["Subject"] == "Passo 1: Ana"
    delivery = Delivery.objects.get(enrollment=enrollment, step__position=1)
    assert delivery.status == "sent" and delivery.message_id == message["Message-ID"]
    assert LeadEvent.objects.filter(lead=lead, kind="email_sent", data__delivery=delivery.pk).count() == 1
    second = Delivery.objects.get(enrollment=enrollment, step__position=2)
    assert second.status == "pending" and second.due_at == now + timedelta(days=2)

    assert dispatch.dispatch_due(now=now + timedelta(days=1)).sent == 0
    assert dispatch.dispatch_due(now=now + timedelta(days=2)).sent == 1
    enrollment.refresh_from_db()
    assert enrollment.status == "completed"
    assert len(smtp_server.sink.messages) == 2
    assert dispatch.dispatch_due(now=now + timedelta(days=30)).sent == 0


def test_nothing_is_claimed_outside_the_send_window(smtp_server, make_disqualified):
    seq = sequence(all_week=False)  # Monday to Friday, 8 to 18, São Paulo
    enroll(seq, make_disqualified())
    saturday_noon = datetime(2026, 12, 5, 12, 0, tzinfo=ZoneInfo("America/Sao_Paulo"))
    assert dispatch.dispatch_due(now=saturday_noon).sent == 0
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo("America/Sao_Paulo"))
    assert dispatch.dispatch_due(now=monday).sent == 1


def test_a_temporary_refusal_retries_later_with_backoff_and_then_sends(smtp_server, make_disqualified):
    seq = sequence()
    lead = make_disqualified(email="tempfail@cliente.com.br")
    enroll(seq, lead)
    now = timezone.now()

    result = dispatch.dispatch_due(now=now)

    assert result.retried == 1 and not smtp_server.sink.messages
    delivery = Delivery.objects.get(lead=lead)
    assert delivery.status == "pending" and delivery.attempts == 1 and "451" in delivery.last_error
    assert now + timedelta(seconds=30) <= delivery.due_at <= now + timedelta(seconds=60)
    assert dispatch.dispatch_due(now=now).sent == 0  # not before its time
    assert dispatch.dispatch_due(now=delivery.due_at).sent == 1
    assert smtp_server.sink.recipients() == ["tempfail@cliente.com.br"]


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    class Fixed:
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value

    assert dispatch.backoff(1, rng=Fixed(0.0)) == 30
    assert dispatch.backoff(1, rng=Fixed(1.0)) == 60
    assert dispatch.backoff(4, rng=Fixed(1.0)) == 480
    assert dispatch.backoff(30, rng=Fixed(1.0)) == dispatch.BACKOFF_CAP


def test_a_permanent_refusal_fails_with_the_reason_and_suppresses_the_address(smtp_server, make_disqualified):
    seq = sequence(steps=((0, 0), (1, 0)))
    lead = make_disqualified(email="reject@cliente.com.br")
    (enrollment,) = enroll(seq, lead)

    result = dispatch.dispatch_due(now=timezone.now())

    assert result.failed == 1
    delivery = Delivery.objects.get(lead=lead)
    assert delivery.status == "failed" and "550" in delivery.last_error
    assert Suppression.objects.get().reason == "bounced"
    enrollment.refresh_from_db()
    assert enrollment.status == "exited"
    assert not Delivery.objects.filter(enrollment=enrollment, step__position=2).exists()


def test_suppressed_out_of_focus_and_unconsented_leads_get_nothing(smtp_server, make_disqualified):
    seq = sequence()
    ok = make_disqualified(email="ok@cliente.com.br")
    unsubscribed = make_disqualified(email="saiu@cliente.com.br")
    erased = make_disqualified(email="apagado@cliente.com.br")
    qualified = make_disqualified(email="qualificado@cliente.com.br")
    form = FormFactory(slug="lgpd", consent_required=True)
    no_consent = make_disqualified(email="semconsentimento@cliente.com.br", form=form)
    consented = make_disqualified(email="consentiu@cliente.com.br", form=form)
    Consent.objects.create(lead=consented, form=form, action="granted", version="1")
    withdrew = make_disqualified(email="retirou@cliente.com.br", form=form)
    Consent.objects.create(lead=withdrew, form=form, action="granted", version="1")
    Consent.objects.create(lead=withdrew, form=form, action="withdrawn", version="1")
    enroll(seq, ok, unsubscribed, erased, qualified, no_consent, consented, withdrew)
    services.suppression_add(email="SAIU@cliente.com.br", reason="unsubscribed")
    Enrollment.objects.filter(lead=unsubscribed).update(status="active")  # as if it slipped in later
    Delivery.objects.filter(lead=unsubscribed).update(status="pending")
    services.suppression_add(email="apagado@cliente.com.br", reason="erased")
    Enrollment.objects.filter(lead=erased).update(status="active")
    Delivery.objects.filter(lead=erased).update(status="pending")
    lead_services.lead_change_status(lead=qualified, status="qualified")

    dispatch.dispatch_due(now=timezone.now())

    assert sorted(smtp_server.sink.recipients()) == ["consentiu@cliente.com.br", "ok@cliente.com.br"]
    assert Delivery.objects.get(lead=no_consent).last_error == "no_consent"
    assert Delivery.objects.get(lead=qualified).status == "cancelled"
    assert Enrollment.objects.get(lead=qualified).exit_reason == "qualified"


def test_the_suppression_list_keeps_only_a_keyed_hash_and_survives_the_leads_erasure(make_disqualified):
    lead = make_disqualified(email="titular@cliente.com.br")
    services.suppression_add(email="titular@cliente.com.br", reason="erased")
    lead.delete()
    row = Suppression.objects.get()
    assert "titular" not in row.email_hash and len(row.email_hash) == 64
    from nurturing.selectors import is_suppressed

    assert is_suppressed(" Titular@Cliente.com.br ")
    assert not is_suppressed("outra@cliente.com.br")
    services.suppression_add(email="titular@cliente.com.br", reason="unsubscribed")
    assert Suppression.objects.get().reason == "erased"


def test_stale_claims_go_back_to_pending_and_stale_sends_become_uncertain_never_resent(
        smtp_server, make_disqualified):
    seq = sequence()
    claimed, sending = make_disqualified(), make_disqualified()
    enroll(seq, claimed, sending)
    long_ago = timezone.now() - timedelta(hours=1)
    Delivery.objects.filter(lead=claimed).update(status="claimed", claim_token="dead", claimed_at=long_ago)
    Delivery.objects.filter(lead=sending).update(status="sending", claim_token="dead", claimed_at=long_ago,
                                                 message_id="<x@y>")

    assert services.deliveries_sweep_stale() == {"released": 1, "uncertain": 1, "recorded": 0}
    dispatch.dispatch_due(now=timezone.now())

    assert smtp_server.sink.recipients() == [claimed.email]
    uncertain = Delivery.objects.get(lead=sending)
    assert uncertain.status == "uncertain"
    # A person checked the provider's log: it did not arrive. Send again.
    assert services.deliveries_resend(deliveries=Delivery.objects.filter(pk=uncertain.pk)) == 1
    dispatch.dispatch_due(now=timezone.now())
    assert sorted(smtp_server.sink.recipients()) == sorted([claimed.email, sending.email])


def test_a_fresh_claim_is_not_swept(make_disqualified):
    seq = sequence()
    enroll(seq, make_disqualified())
    Delivery.objects.update(status="claimed", claim_token="alive", claimed_at=timezone.now())
    assert services.deliveries_sweep_stale() == {"released": 0, "uncertain": 0, "recorded": 0}


def test_an_unreachable_server_releases_the_claims_for_a_retry(make_disqualified, settings):
    from .smtp import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    enroll(sequence(), make_disqualified())

    result = dispatch.dispatch_due(now=timezone.now())

    assert result.retried == 1
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_error.startswith("connect")


def test_a_broken_template_fails_the_delivery_with_the_reason(smtp_server, make_disqualified):
    seq = sequence()
    step = seq.steps.get()
    step.template.html_body = "{% if %}"
    step.template.save()
    enroll(seq, make_disqualified())
    assert dispatch.dispatch_due(now=timezone.now()).failed == 1
    assert Delivery.objects.get().last_error.startswith("template:")


def test_the_beat_job_enrolls_segment_entrants_once_and_respects_reentry(make_disqualified):
    segment = disqualified_segment()
    seq = sequence(segment=segment, steps=((0, 0),))
    leads = [make_disqualified() for _ in range(5)]
    no_email = make_disqualified(email=None, phone="+5511987654321")

    assert services.enroll_all() == {"nutricao": {"enrolled": 5, "exited": 0}}
    assert services.enroll_all() == {"nutricao": {"enrolled": 0, "exited": 0}}
    assert not Enrollment.objects.filter(lead=no_email).exists()
    assert Delivery.objects.filter(status="pending").count() == 5

    first = leads[0]
    services.enrollments_exit(enrollments=Enrollment.objects.filter(lead=first), reason="test",
                              status=Enrollment.Status.COMPLETED)
    assert services.enroll_all()["nutricao"]["enrolled"] == 0  # no re-entry by default
    seq.allow_reentry = True
    seq.save()
    assert services.enroll_all()["nutricao"]["enrolled"] == 0  # still the same stay in the segment
    lead_services.lead_change_status(lead=first, status="qualified")
    lead_services.lead_change_status(lead=first, status="disqualified", reason="no_budget")
    assert services.enroll_all()["nutricao"]["enrolled"] == 1  # entered the segment again


def test_the_beat_job_ends_enrollments_whose_lead_qualified(make_disqualified):
    seq = sequence(segment=disqualified_segment())
    lead = make_disqualified()
    services.enroll_all()
    lead_services.lead_change_status(lead=lead, status="qualified")
    assert services.enroll_all()["nutricao"] == {"enrolled": 0, "exited": 1}
    assert Enrollment.objects.get(sequence=seq, lead=lead).status == "exited"
    assert Delivery.objects.get(lead=lead).status == "cancelled"


def test_the_jobs_run_by_hand_as_a_management_command(smtp_server, make_disqualified):
    import io
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    sequence(segment=disqualified_segment())
    make_disqualified()
    out = io.StringIO()
    call_command("nurture", "enroll", stdout=out)
    assert json.loads(out.getvalue()) == {"nutricao": {"enrolled": 1, "exited": 0}}
    out = io.StringIO()
    call_command("nurture", "dispatch", "--now", timezone.now().isoformat(), stdout=out)
    assert json.loads(out.getvalue())["sent"] == 1
    out = io.StringIO()
    call_command("nurture", "sweep", stdout=out)
    assert json.loads(out.getvalue())["released"] == 0
    with pytest.raises(CommandError):
        call_command("nurture", "dispatch", "--now", "yesterday")


def test_the_sweep_finishes_the_bookkeeping_of_a_send_whose_worker_died_after_it(make_disqualified):
    seq = sequence(steps=((0, 0), (2, 0)))
    lead = make_disqualified()
    (enrollment,) = enroll(seq, lead)
    sent_at = timezone.now() - timedelta(hours=1)
    Delivery.objects.update(status="sent", sent_at=sent_at, claimed_at=sent_at, message_id="<m@x>", recorded=False)

    assert services.deliveries_sweep_stale()["recorded"] == 1
    assert services.deliveries_sweep_stale()["recorded"] == 0

    assert LeadEvent.objects.filter(lead=lead, kind="email_sent").count() == 1
    second = Delivery.objects.get(enrollment=enrollment, step__position=2)
    assert second.status == "pending" and second.due_at == sent_at + timedelta(days=2)


def test_server_answers_are_classified_by_whether_the_message_can_have_left():
    import smtplib

    assert isinstance(dispatch.classify(smtplib.SMTPRecipientsRefused({"a@b": (451, b"later")})), dispatch.Transient)
    refused = dispatch.classify(smtplib.SMTPRecipientsRefused({"a@b": (550, b"no such user")}))
    assert isinstance(refused, dispatch.Permanent) and refused.bounced
    assert isinstance(dispatch.classify(smtplib.SMTPDataError(452, b"full")), dispatch.Transient)
    assert isinstance(dispatch.classify(smtplib.SMTPDataError(554, b"spam")), dispatch.Permanent)
    assert isinstance(dispatch.classify(ConnectionRefusedError()), dispatch.Transient)
    assert isinstance(dispatch.classify(smtplib.SMTPServerDisconnected("gone")), dispatch.Uncertain)
    assert isinstance(dispatch.classify(TimeoutError()), dispatch.Uncertain)


@pytest.mark.django_db(transaction=True)
def test_async_commits_apply_to_the_dispatch_only_and_are_reset_after_it(require_postgres, smtp_server, settings,
                                                                        make_disqualified):
    from django.db import connection

    settings.FUNIL_NURTURE_ASYNC_COMMIT = True
    seq = sequence(steps=((0, 0), (1, 0)))
    enroll(seq, make_disqualified(), make_disqualified())

    statements = []

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert dispatch.dispatch_due(now=timezone.now()).sent == 2

    sqls = [sql for sql, _params in statements]
    relaxed_at = sqls.index("SET synchronous_commit = off")
    reset_at = sqls.index("RESET synchronous_commit")
    marks = {params[0] for sql, params in statements[relaxed_at:reset_at]
             if sql.startswith('UPDATE "nurturing_delivery" SET "status"')}
    assert {"sending", "sent"} <= marks
    assert len(smtp_server.sink.messages) == 2
    assert Delivery.objects.filter(status="sent", recorded=True).count() == 2
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


class WorkerDies(BaseException):
    """Stands for a SIGKILL: nothing after it runs in the dispatcher's except clauses."""


def dying_backend(server, *, after):
    """The pipelining backend, killed after ``after`` messages of a group reached the server."""
    from nurturing.mail import EmailBackend

    class Dying(EmailBackend):
        def send_each(self, email_messages):
            if len(server.sink.messages) + len(email_messages) > after:
                super().send_each(email_messages[:after - len(server.sink.messages)])
                raise WorkerDies
            return super().send_each(email_messages)

    return Dying(host="127.0.0.1", port=server.port, username="", password="", use_tls=False, use_ssl=False,
                 timeout=10)


@pytest.mark.parametrize("group", [1, 20])
@pytest.mark.django_db(transaction=True)
def test_a_worker_dying_mid_group_leaves_at_most_one_group_uncertain_and_sends_nothing_twice(
        group, settings, make_disqualified):
    from .smtp import SmtpServer

    settings.FUNIL_NURTURE_SENDING_GROUP = group
    seq = sequence()
    total = 60
    enroll(seq, *[make_disqualified(email=f"g{n}@cliente.com.br") for n in range(total)])
    with SmtpServer(pipelining=True) as server:
        with pytest.raises(WorkerDies):
            dispatch.dispatch_due(now=timezone.now(), batch_size=50, connection=dying_backend(server, after=27))
        assert len(server.sink.messages) == 27
        sending = Delivery.objects.filter(status="sending")
        # Only the group being sent is 'sending'; the groups before it were written 'sent'.
        assert sending.count() == sending_count(group)
        assert Delivery.objects.filter(status="sent").count() == 27 // group * group

        services.deliveries_sweep_stale(older_than=timedelta(0))
        dispatch.dispatch_due(now=timezone.now(), connection=dispatch_backend(server))

        recipients = [to for tos, _ in server.sink.messages for to in tos]
        assert len(recipients) == len(set(recipients)), "a message was sent twice"
        uncertain = Delivery.objects.filter(status="uncertain")
        assert uncertain.count() == sending_count(group)
        assert Delivery.objects.filter(status="sent").count() == total - uncertain.count()
        # The uncertain ones that reached the server are known by their Message-ID.
        received = {message["Message-ID"] for _, message in server.sink.messages}
        assert set(Delivery.objects.filter(status="sent").values_list("message_id", flat=True)) <= received
        assert len(received) == Delivery.objects.filter(status="sent").count() + \
            uncertain.filter(message_id__in=received).count()


def sending_count(group):
    return min(group, 50 - 27 // group * group)


def dispatch_backend(server):
    from nurturing.mail import EmailBackend

    return EmailBackend(host="127.0.0.1", port=server.port, username="", password="", use_tls=False,
                        use_ssl=False, timeout=10)


def test_a_group_is_marked_sending_in_one_statement_and_its_answers_in_the_next_commit(
        smtp_server, settings, make_disqualified):
    from django.db import connection

    settings.FUNIL_NURTURE_SENDING_GROUP = 20
    enroll(sequence(), *[make_disqualified() for _ in range(45)])
    statements = []

    def record(execute, sql, params, many, context):
        if sql.startswith('UPDATE "nurturing_delivery" SET "status"'):
            statements.append(params[0])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert dispatch.dispatch_due(now=timezone.now()).sent == 45

    assert statements.count("sending") == 3  # groups of 20, 20 and 5
    assert statements.count("sent") == 3
    assert len(smtp_server.sink.messages) == 45
