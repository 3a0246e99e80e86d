"""The lead's rights: consent ledger, export, erasure, suppression, retention, audit."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from leads import privacy, services
from leads.models import AuditLog, Consent, Lead, LeadEvent, Submission
from nurturing.models import Suppression

from ..factories import FormFactory, LeadFactory, ReasonFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/forms/contato/submissions/"
EMAIL = "zuleica.quintanilha@exemplo.com.br"
FIRST, LAST = "Zuleica", "Quintanilha"
PHONE_DIGITS = "987650123"
PAYLOAD = {"email": "Zuleica.Quintanilha@Exemplo.com.br", "name": f"{FIRST} {LAST}", "phone": f"(11) {PHONE_DIGITS}",
           "company": "Quintanilha Paletes", "state": "SP", "interest": "paletes", "consent": "on",
           "message": f"Sou a {FIRST}, ligue no {PHONE_DIGITS}"}


@pytest.fixture
def form(db):
    return FormFactory(fields=["email", "name", "phone", "company", "state", "interest", "message"],
                       consent_text="Aceito receber e-mails de marketing.", consent_version="v3")


def submit(client, payload, **headers):
    response = client.post(URL, data=json.dumps(payload), content_type="application/json",
                           REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT=f"Browser of {FIRST}", **headers)
    assert response.status_code in (201, 202), response.content
    return Lead.objects.get(email=EMAIL) if Lead.objects.filter(email=EMAIL).exists() else None


@pytest.fixture
def person(client, form, manager):
    """A lead captured through the public endpoint twice, noted about, edited in admin."""
    submit(client, PAYLOAD)
    lead = submit(client, {**PAYLOAD, "message": f"De novo, {LAST}"})
    services.lead_add_note(lead=lead, author=manager, text=f"Falei com {FIRST} {LAST} no {PHONE_DIGITS}")
    services.lead_update_contact(lead=lead, actor=manager, fields={"job_title": f"Diretora {LAST}"})
    LogEntry.objects.log_actions(user_id=manager.pk, queryset=[lead], action_flag=CHANGE, change_message="edited",
                                 single_object=True)
    return Lead.objects.get(pk=lead.pk)


def tables_holding(*needles):
    """(table, column, needle) for every column of every table whose text contains a needle."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            for column in connection.introspection.get_table_description(cursor, table):
                quoted_t, quoted_c = connection.ops.quote_name(table), connection.ops.quote_name(column.name)
                for needle in needles:
                    cursor.execute(
                        f"SELECT COUNT(*) FROM {quoted_t} WHERE LOWER(CAST({quoted_c} AS TEXT)) LIKE %s",
                        [f"%{needle.lower()}%"],
                    )
                    if cursor.fetchone()[0]:
                        found.append((table, column.name, needle))
    return found


NEEDLES = (EMAIL, "zuleica.quintanilha", FIRST, LAST, PHONE_DIGITS)


def test_the_fixture_really_spreads_the_person_over_many_tables(person):
    tables = {table for table, _column, _needle in tables_holding(*NEEDLES)}
    assert {"leads_lead", "leads_submission", "leads_leadevent", "django_admin_log"} <= tables


def test_after_erasure_no_table_holds_the_email_name_or_phone(person, manager):
    privacy.lead_erase(lead=person, actor=manager, via="test")
    assert tables_holding(*NEEDLES) == []
    lead = Lead.objects.get(pk=person.pk)
    assert lead.email is None and lead.first_name == "" and lead.phone == ""
    # Kept, without personal data: the status, the timeline's shape, the consent proof.
    assert lead.status == person.status and lead.source_id == person.source_id and lead.state == "SP"
    assert LeadEvent.objects.filter(lead=lead, kind=LeadEvent.Kind.CAPTURED).count() == 1
    consent = Consent.objects.get(lead=lead, action=Consent.Action.GRANTED, submission__isnull=False,
                                  submission__created_lead=True)
    assert consent.version == "v3" and consent.ip is None
    assert Submission.objects.filter(lead=lead).count() == 2
    assert all(payload == {} for payload in Submission.objects.filter(lead=lead).values_list("payload", flat=True))
    entry = AuditLog.objects.get(action=AuditLog.Action.ERASE)
    assert entry.actor == manager and entry.lead_ref == lead.pk


def test_a_person_who_comes_back_after_erasure_is_suppressed_until_fresh_consent(client, person, manager):
    privacy.lead_erase(lead=person, actor=manager)
    assert privacy.is_suppressed(EMAIL) and privacy.is_suppressed("  ZULEICA.Quintanilha@exemplo.com.br ")
    assert Suppression.objects.get().email_hash == privacy.email_hash(EMAIL) != EMAIL

    back = submit(client, {"email": EMAIL, "name": "Z"})  # no consent ticked
    assert back.pk != person.pk
    assert privacy.is_suppressed(EMAIL), "no nurture email without fresh consent"

    submit(client, {"email": EMAIL, "consent": "on"})  # consents again
    assert not privacy.is_suppressed(EMAIL)


def test_unknown_or_never_suppressed_addresses_are_not_suppressed(db):
    assert not privacy.is_suppressed("someone@else.com.br")
    assert not privacy.is_suppressed("")


def test_withdrawing_consent_is_on_the_ledger_and_suppresses_until_consent_again(client, person, manager):
    privacy.consent_withdraw(lead=person, actor=manager, note="pediu por telefone")
    ledger = list(privacy.consent_ledger(person))
    assert [c.action for c in ledger] == ["granted", "granted", "withdrawn"]
    assert ledger[0].text == "Aceito receber e-mails de marketing." and ledger[0].ip == "203.0.113.9"
    assert privacy.is_suppressed(EMAIL)
    submit(client, {"email": EMAIL, "consent": "on"})
    assert not privacy.is_suppressed(EMAIL)
    assert AuditLog.objects.filter(action=AuditLog.Action.CONSENT_WITHDRAWN, lead_ref=person.pk).exists()


def test_the_export_holds_fields_submissions_timeline_and_consent(person, manager):
    data = privacy.lead_export(lead=person, actor=manager, via="test")
    assert data["lead"]["email"] == EMAIL and data["lead"]["first_name"] == FIRST
    assert len(data["submissions"]) == 2 and data["submissions"][0]["payload"]["name"] == f"{FIRST} {LAST}"
    assert data["submissions"][0]["ip"] == "203.0.113.9"
    assert {e["kind"] for e in data["timeline"]} >= {"captured", "resubmitted", "note", "updated"}
    assert [c["version"] for c in data["consent"]] == ["v3", "v3"]
    assert data["suppressed"] is False
    json.dumps(data)  # JSON-ready as it is
    assert AuditLog.objects.get(action=AuditLog.Action.EXPORT).lead_ref == person.pk


def test_export_lead_command_prints_the_json_and_audits(person):
    out = StringIO()
    call_command("export_lead", EMAIL.upper(), stdout=out)
    assert json.loads(out.getvalue())["lead"]["id"] == person.pk
    assert AuditLog.objects.get(action=AuditLog.Action.EXPORT).via == "command"
    with pytest.raises(CommandError):
        call_command("export_lead", "nobody@x.com.br", stdout=StringIO())


def test_erase_lead_command(person):
    out = StringIO()
    call_command("erase_lead", EMAIL, stdout=out)
    assert "erased" in out.getvalue()
    assert tables_holding(*NEEDLES) == []
    call_command("erase_lead", "never-seen@x.com.br", stdout=StringIO())
    assert privacy.is_suppressed("never-seen@x.com.br")


def test_managers_export_and_erase_from_the_pages(client, person, manager):
    client.force_login(manager)
    page = client.get(reverse("insights:lead-privacy", args=[person.pk]))
    assert page.status_code == 200 and "Aceito receber e-mails de marketing." in page.content.decode()
    export = client.get(reverse("insights:lead-export", args=[person.pk]))
    assert export.status_code == 200 and json.loads(export.content)["lead"]["email"] == EMAIL
    assert "attachment" in export["Content-Disposition"]
    erase_url = reverse("insights:lead-erase", args=[person.pk])
    assert client.get(erase_url).status_code == 200
    client.post(erase_url, {})  # without the confirmation nothing happens
    assert Lead.objects.get(pk=person.pk).email == EMAIL
    response = client.post(erase_url, {"confirm": "erase"})
    assert response.status_code == 302 and Lead.objects.get(pk=person.pk).email is None
    assert AuditLog.objects.get(action=AuditLog.Action.ERASE).via == "page"


def test_reps_and_marketers_may_not_export_or_erase(client, person, rep, marketer):
    for user in (rep, marketer):
        client.force_login(user)
        assert client.get(reverse("insights:lead-export", args=[person.pk])).status_code == 403
        assert client.post(reverse("insights:lead-erase", args=[person.pk]), {"confirm": "erase"}).status_code == 403
    assert Lead.objects.get(pk=person.pk).email == EMAIL and not AuditLog.objects.exists()


def test_the_api_exports_by_id_and_email_and_erases(client, person, manager, rep):
    token = Token.objects.create(user=manager)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    response = client.get(f"/api/v1/lead-rights/{person.pk}/", **auth)
    assert response.status_code == 200 and response.json()["lead"]["email"] == EMAIL
    response = client.get("/api/v1/lead-rights/by-email/", {"email": EMAIL}, **auth)
    assert response.status_code == 200 and response.json()["lead"]["id"] == person.pk
    assert client.get("/api/v1/lead-rights/by-email/", **auth).status_code == 400
    assert client.get("/api/v1/lead-rights/by-email/", {"email": "x@y.com.br"}, **auth).status_code == 404
    assert client.get("/api/v1/lead-rights/999999/", **auth).status_code == 404
    rep_auth = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=rep).key}"}
    assert client.post(f"/api/v1/lead-rights/{person.pk}/erase/", **rep_auth).status_code == 403
    assert client.get(f"/api/v1/lead-rights/{person.pk}/").status_code == 401
    response = client.post(f"/api/v1/lead-rights/{person.pk}/erase/", {"note": "ticket 42"},
                           content_type="application/json", **auth)
    assert response.status_code == 200 and response.json() == {"id": person.pk, "erased": True}
    assert tables_holding(*NEEDLES) == []


def test_erasing_twice_is_harmless(person, manager):
    privacy.lead_erase(lead=person, actor=manager)
    privacy.lead_erase(lead=person, actor=manager)
    assert Suppression.objects.count() == 1


# --- Retention ---------------------------------------------------------------------------


@pytest.fixture
def aged():
    reason = ReasonFactory()
    old = timezone.now() - timedelta(days=400)
    leads = {}
    for name, status in (("stale_dq", "disqualified"), ("stale_oof", "out_of_focus"), ("old_qualified", "qualified"),
                         ("fresh_dq", "disqualified")):
        lead = LeadFactory(email=f"{name}@velho.com.br", first_name=name, phone=f"+55119{len(leads):08d}")
        lead = services.lead_change_status(lead=lead, status=status,
                                           reason=reason if status != "qualified" else None)
        if name != "fresh_dq":
            Lead.objects.filter(pk=lead.pk).update(last_activity_at=old, created_at=old)
            LeadEvent.objects.filter(lead=lead).update(created_at=old)
        leads[name] = lead
    return leads


def test_purge_stale_is_a_dry_run_by_default(aged):
    out = StringIO()
    call_command("purge_stale", "--older-than", "365", stdout=out)
    assert "2 stale leads would be anonymised" in out.getvalue()
    assert Lead.objects.filter(email__isnull=False).count() == 4 and not AuditLog.objects.exists()


def test_purge_stale_apply_anonymises_only_stale_disqualified_and_out_of_focus_leads(aged):
    out = StringIO()
    call_command("purge_stale", "--older-than", "365", "--apply", stdout=out)
    assert "2 stale leads anonymised" in out.getvalue()
    remaining = set(Lead.objects.filter(email__isnull=False).values_list("first_name", flat=True))
    assert remaining == {"old_qualified", "fresh_dq"}
    assert tables_holding("stale_dq@velho", "stale_oof@velho") == []
    assert privacy.is_suppressed("stale_dq@velho.com.br")
    entry = AuditLog.objects.get(action=AuditLog.Action.PURGE)
    assert entry.count == 2 and entry.detail == {"older_than_days": 365}
    call_command("purge_stale", "--older-than", "365", "--apply", stdout=StringIO())  # nothing left to do
    assert AuditLog.objects.filter(action=AuditLog.Action.PURGE).count() == 1


def test_purge_stale_in_small_chunks_gives_the_same_result(aged):
    assert privacy.leads_purge_stale(older_than_days=365, apply=True, chunk_size=1) == 2


def test_recent_activity_on_the_timeline_keeps_a_lead(aged):
    services.lead_add_note(lead=aged["stale_dq"], author=UserFactory(is_superuser=True), text="ligou")
    Lead.objects.filter(pk=aged["stale_dq"].pk).update(last_activity_at=timezone.now() - timedelta(days=400))
    assert privacy.leads_purge_stale(older_than_days=365) == 1


def test_purge_stale_refuses_a_bad_number_of_days(db):
    with pytest.raises(CommandError):
        call_command("purge_stale", "--older-than", "0", stdout=StringIO())


def test_the_retention_purge_is_scheduled_in_beat_but_disabled(transactional_db):
    from django_celery_beat.models import PeriodicTask

    from config.celery import app
    from nurturing.schedulers import EditableDatabaseScheduler

    EditableDatabaseScheduler(app=app)
    task = PeriodicTask.objects.get(name="purge-stale-leads")
    assert task.task == "leads.tasks.purge_stale" and task.enabled is False
    assert json.loads(task.kwargs) == {"older_than_days": 730}


# --- Audit -------------------------------------------------------------------------------


def test_the_audit_log_is_readable_by_superusers_only(client, person, manager):
    privacy.lead_export(lead=person, actor=manager)
    url = reverse("admin:leads_auditlog_changelist")
    client.force_login(manager)
    assert client.get(url).status_code == 403
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    response = client.get(url)
    assert response.status_code == 200 and "Export of a person" in response.content.decode()
    assert client.get(reverse("admin:leads_auditlog_add")).status_code == 403


def test_admin_history_of_an_erased_lead_no_longer_names_the_person(person, manager):
    privacy.lead_erase(lead=person, actor=manager)
    entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(Lead), object_id=str(person.pk))
    assert FIRST not in entry.object_repr and EMAIL not in entry.object_repr


def test_erased_leads_keep_counting_in_the_funnel(person, manager):
    from leads import reports

    period = reports.Period(start=timezone.localdate() - timedelta(days=1), end=timezone.localdate())
    before = reports.dashboard(period=period).total
    privacy.lead_erase(lead=person, actor=manager)
    after = reports.dashboard(period=period).total
    assert (after.captured, after.qualified) == (before.captured, before.qualified)
