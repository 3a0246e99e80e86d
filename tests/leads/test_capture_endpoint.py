"""The public form endpoint: POST /api/v1/forms/<slug>/submissions/."""

import json
import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from leads import services
from leads.models import Consent, Lead, LeadEvent, Submission

from ..factories import FormFactory, LeadFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/forms/contato/submissions/"
GOOD = {
    "email": " Maria.Souza@Empresa.com.BR ", "name": "Maria Souza", "phone": "(11) 98765-4321",
    "company": "Transportes Tietê", "state": "são paulo", "budget": "R$ 12.000,00", "interest": "paletes PBR",
    "utm_source": "google", "utm_campaign": "paletes-2026",
}


@pytest.fixture
def form(db):
    return FormFactory(
        fields=["email", "name", "phone", "company", "state", "budget", "interest", "message", "frota"],
        consent_text="Aceito receber contatos.", consent_version="v2",
    )


def post_json(client, body, **headers):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def test_a_json_post_is_stored_normalised_and_answered_202(client, form):
    response = post_json(client, GOOD, HTTP_USER_AGENT="pytest", HTTP_REFERER="https://site.example/contato")
    assert response.status_code == 202
    submission = Submission.objects.get(public_id=response.json()["submission"])
    assert submission.status == Submission.Status.PROCESSED
    assert submission.payload["email"] == GOOD["email"]  # kept exactly as it arrived
    assert (submission.ip, submission.user_agent, submission.referrer) == (
        "127.0.0.1", "pytest", "https://site.example/contato"
    )
    lead = submission.lead
    assert (lead.email, lead.first_name, lead.last_name, lead.phone, lead.state, lead.budget) == (
        "maria.souza@empresa.com.br", "Maria", "Souza", "+5511987654321", "SP", Decimal("12000.00")
    )
    assert (lead.source, lead.form, lead.utm_source, lead.utm_campaign) == (
        form.source, form, "google", "paletes-2026"
    )
    assert list(lead.events.values_list("kind", flat=True)) == [LeadEvent.Kind.CAPTURED]


def test_a_known_email_gets_the_same_answer_fills_empty_fields_and_overwrites_nothing(client, form):
    first = post_json(client, {"email": "ana@x.com.br", "company": "Primeira", "state": "SP", "consent": True})
    again = post_json(client, {"email": "ANA@x.com.br", "company": "Outra", "phone": "11 98765-4321", "consent": True})
    assert first.status_code == again.status_code == 202
    assert set(first.json()) == set(again.json()) == {"submission"}
    lead = Lead.objects.get()
    assert lead.company == "Primeira"
    assert lead.phone == "+5511987654321"
    resubmitted = lead.events.get(kind=LeadEvent.Kind.RESUBMITTED)
    assert resubmitted.data["filled"] == ["phone"]
    # The second submission wrote its own rows only: no second "captured", one consent each.
    assert sorted(lead.events.values_list("kind", flat=True)) == sorted(
        [LeadEvent.Kind.CAPTURED, LeadEvent.Kind.RESUBMITTED])
    submissions = list(Submission.objects.filter(lead=lead).order_by("id"))
    assert [(item.status, item.created_lead) for item in submissions] == [
        (Submission.Status.PROCESSED, True), (Submission.Status.PROCESSED, False)]
    assert sorted(Consent.objects.filter(lead=lead).values_list("submission_id", flat=True)) == [
        item.pk for item in submissions]


def test_a_later_submission_never_erases_what_a_person_entered(client, form, rep):
    lead = LeadFactory(email="bia@x.com.br", company="Certa")
    services.lead_update_contact(lead=lead, actor=rep, fields={"job_title": "Diretora"})
    post_json(client, {"email": "bia@x.com.br", "company": "", "job_title": "Estagiária"})
    lead.refresh_from_db()
    assert (lead.company, lead.job_title) == ("Certa", "Diretora")


def test_without_email_the_lead_is_deduplicated_by_phone(client, form):
    post_json(client, {"phone": "11 98765-4321", "name": "João"})
    post_json(client, {"phone": "+55 (11) 98765-4321", "company": "Pallets SA"})
    lead = Lead.objects.get()
    assert (lead.email, lead.first_name, lead.company) == (None, "João", "Pallets SA")


def test_a_plain_html_form_post_is_redirected_with_303(client, form, settings):
    settings.FUNIL_SENDER_NAME = "Paletes Teste"
    response = client.post(URL, data={"email": "c@x.com.br", "name": "Caio"})
    assert response.status_code == 303
    assert response["Location"] == "/f/contato/thanks/"
    thanks = client.get(response["Location"])
    assert thanks.status_code == 200
    # The visitor is on the company's site: its name, not the CRM's, heads the page.
    assert "<title>Thank you · Paletes Teste</title>" in thanks.content.decode()
    assert '<span class="brand">Paletes Teste</span>' in thanks.content.decode()
    services.form_update(form=form, success_url="https://site.example/obrigado")  # as admin and the API do
    response = client.post(URL, data={"email": "d@x.com.br"})
    assert (response.status_code, response["Location"]) == (303, "https://site.example/obrigado")


def test_multipart_is_accepted(client, form):
    response = client.post(URL, data={"email": "m@x.com.br"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 202
    assert Lead.objects.filter(email="m@x.com.br").exists()


def test_bad_fields_get_a_400_naming_each_field_and_the_submission_is_kept(client, form):
    response = post_json(client, {"email": "nope", "phone": "123", "state": "Atlântida", "budget": "muito"})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"email", "phone", "state", "budget"}
    submission = Submission.objects.get()
    assert submission.status == Submission.Status.INVALID
    assert not Lead.objects.exists()


def test_a_required_field_missing_is_named(client, form):
    form.required_fields = ["email", "company"]
    form.save()
    response = post_json(client, {"email": "r@x.com.br"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"company": ["This field is required."]}


def test_a_lead_needs_an_email_or_a_phone(client, form):
    response = post_json(client, {"name": "Sem Contato"})
    assert response.status_code == 400
    assert "email" in response.json()["errors"]


def test_an_html_form_with_bad_fields_gets_a_readable_400_page(client, form):
    response = client.post(URL, data={"email": "nope"})
    assert response.status_code == 400
    assert b"email" in response.content and response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"'])
def test_malformed_json_is_a_400_and_is_still_kept(client, form, body):
    response = client.post(URL, data=body, content_type="application/json")
    assert response.status_code == 400
    assert Submission.objects.get().status == Submission.Status.INVALID


def test_unknown_or_inactive_forms_are_404_and_other_methods_405(client, form):
    assert client.post("/api/v1/forms/nada/submissions/", data={}).status_code == 404
    form.active = False
    form.save()
    assert post_json(client, GOOD).status_code == 404
    assert client.get(URL).status_code in (404, 405)
    form.active = True
    form.save()
    assert client.get(URL).status_code == 405
    assert client.put(URL, data="{}", content_type="application/json").status_code == 405


def test_a_filled_honeypot_is_answered_normally_kept_as_spam_and_creates_nothing(client, form):
    response = post_json(client, {**GOOD, "website": "http://spam.example"})
    assert response.status_code == 202
    assert Submission.objects.get().status == Submission.Status.SPAM
    assert not Lead.objects.exists()


def test_unknown_keys_are_dropped_and_noted_allowed_custom_keys_become_attributes(client, form):
    post_json(client, {**GOOD, "frota": "12 caminhões", "hack": "x"})
    submission = Submission.objects.get()
    assert submission.dropped_keys == ["hack"]
    assert submission.lead.attributes == {"frota": "12 caminhões"}


def test_consent_is_recorded_with_its_text_version_time_and_ip(client, form):
    post_json(client, {**GOOD, "consent": "on"})
    consent = Consent.objects.get()
    expected = ("v2", "Aceito receber contatos.", "127.0.0.1", form)
    assert (consent.version, consent.text, consent.ip, consent.form) == expected


def test_a_form_requiring_consent_refuses_without_it(client, form):
    form.consent_required = True
    form.save()
    response = post_json(client, GOOD)
    assert response.json()["errors"] == {"consent": ["Consent is required."]}


def test_an_idempotency_key_replays_the_first_answer_and_creates_nothing(client, form):
    first = post_json(client, GOOD, HTTP_IDEMPOTENCY_KEY="abc-1")
    second = post_json(client, {**GOOD, "company": "Mudou"}, HTTP_IDEMPOTENCY_KEY="abc-1")
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert Submission.objects.count() == 1
    assert Lead.objects.get().events.count() == 1


def test_too_many_posts_from_one_address_get_429_with_retry_after(client, form, settings):
    settings.FUNIL_CAPTURE_RATE_PER_IP = "3/min"
    statuses = [post_json(client, {"email": f"t{i}@x.com.br"}).status_code for i in range(4)]
    assert statuses == [202, 202, 202, 429]
    assert int(post_json(client, GOOD)["Retry-After"]) > 0
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert post_json(other, GOOD).status_code == 202


def test_a_forged_forwarded_for_header_does_not_dodge_the_throttle(client, form, settings):
    settings.FUNIL_CAPTURE_RATE_PER_IP = "2/min"
    codes = [post_json(client, {"email": f"f{i}@x.com.br"}, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
             for i in range(3)]
    assert codes == [202, 202, 429]


def test_a_body_over_the_limit_is_413(client, form, settings):
    settings.FUNIL_CAPTURE_MAX_BODY_BYTES = 1000
    response = post_json(client, {**GOOD, "message": "x" * 2000})
    assert response.status_code == 413
    assert not Lead.objects.exists()


def test_cors_preflight_allows_only_the_forms_origins(client, form):
    form.allowed_origins = "https://www.paletes.example\nhttps://lp.paletes.example/"
    form.save()
    ok = client.options(URL, HTTP_ORIGIN="https://lp.paletes.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, idempotency-key")
    assert ok["Access-Control-Allow-Origin"] == "https://lp.paletes.example"
    assert "idempotency-key" in ok["Access-Control-Allow-Headers"]
    denied = client.options(URL, HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert "Access-Control-Allow-Origin" not in denied
    assert post_json(client, GOOD, HTTP_ORIGIN="https://evil.example").status_code == 403
    allowed = post_json(client, GOOD, HTTP_ORIGIN="https://www.paletes.example")
    assert (allowed.status_code, allowed["Access-Control-Allow-Origin"]) == (202, "https://www.paletes.example")


def test_a_processing_failure_keeps_the_submission_and_replay_processes_it(client, form, monkeypatch):
    from django.core.management import call_command

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "_score_new", broken)
    response = post_json(client, GOOD)
    assert response.status_code == 202
    submission = Submission.objects.get()
    assert submission.status == Submission.Status.FAILED
    assert "disk on fire" in submission.errors["__all__"]
    assert not Lead.objects.exists()

    monkeypatch.undo()
    call_command("replay_submissions", stdout=open("/dev/null", "w"))  # noqa: SIM115
    submission.refresh_from_db()
    assert submission.status == Submission.Status.PROCESSED
    assert submission.lead.email == "maria.souza@empresa.com.br"


@pytest.mark.django_db(transaction=True)
def test_a_database_error_after_the_lead_was_written_rolls_back_only_the_processing(client, form, monkeypatch):
    """Stored raw and processed in one transaction: a failure half-way through processing
    (the lead, its events and its consent already written) takes back what processing
    wrote, and the raw submission still commits, with its error, for the replay."""
    from django.core.management import call_command

    def broken_webhooks(lead, event):
        assert Lead.objects.filter(pk=lead.pk).exists()  # the lead row was written
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")  # aborts the transaction on PostgreSQL

    monkeypatch.setattr(services, "_webhook", broken_webhooks)
    response = post_json(client, GOOD)
    assert response.status_code == 202
    submission = Submission.objects.get()  # committed: this test runs outside a test transaction
    assert submission.status == Submission.Status.FAILED
    assert "no_such_table" in submission.errors["__all__"]
    assert submission.payload["email"] == GOOD["email"]
    assert not Lead.objects.exists() and not LeadEvent.objects.exists() and not Consent.objects.exists()

    monkeypatch.undo()
    call_command("replay_submissions", "--stuck-after", "0", stdout=open("/dev/null", "w"))  # noqa: SIM115
    submission.refresh_from_db()
    assert submission.status == Submission.Status.PROCESSED
    assert submission.lead.events.filter(kind=LeadEvent.Kind.CAPTURED).count() == 1


def test_a_capture_never_scores_with_a_ruleset_that_is_no_longer_active(client, form):
    """Each worker caches the active ruleset, but capture checks its id in the
    submission's own transaction: a worker whose copy predates an activation reloads."""
    from scoring import services as scoring
    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    old = pallet_ruleset(state=Ruleset.State.ACTIVE)
    post_json(client, {**GOOD, "email": "a@x.com.br"})
    stale_copy = dict(scoring._cache)
    assert stale_copy["value"][0].pk == old.pk
    new = scoring.ruleset_duplicate(ruleset=old)
    scoring.ruleset_activate(ruleset=new)
    scoring._cache.update(stale_copy)  # as another worker still holds it, seconds old
    post_json(client, {**GOOD, "email": "b@x.com.br"})
    change = Lead.objects.get(email="b@x.com.br").events.get(kind=LeadEvent.Kind.STATUS_CHANGED)
    assert change.data["ruleset"] == new.pk


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_an_activation_rescoring_waits_for_captures_that_read_the_previous_ruleset(require_postgres):
    """A capture that read the old ruleset's id commits before the activation's
    rescoring fixes its last lead id, so the lead it scored is rescored."""
    from django.db import transaction

    from scoring import services as scoring
    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    old = pallet_ruleset(state=Ruleset.State.ACTIVE)
    LeadFactory()
    new = scoring.ruleset_duplicate(ruleset=old)
    has_read, release, captured = threading.Event(), threading.Event(), {}

    def capture():
        try:
            with transaction.atomic():
                captured["ruleset"] = scoring.active_ruleset_id()
                has_read.set()
                release.wait(30)
                captured["lead"] = LeadFactory().pk  # scored, say, with the old ruleset
        finally:
            connection.close()

    def rescore(job_id):
        try:
            scoring.rescore_job_run(job_id=job_id, workers=1)
        finally:
            connection.close()

    capturing = threading.Thread(target=capture)
    capturing.start()
    assert has_read.wait(30)
    job = scoring.ruleset_activate(ruleset=new)
    rescoring = threading.Thread(target=rescore, args=(job.pk,))
    rescoring.start()
    for _ in range(300):  # until the job waits on the capture's lock (or has finished without it)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            if cursor.fetchone()[0] or not rescoring.is_alive():
                break
        threading.Event().wait(0.1)
    release.set()
    capturing.join()
    rescoring.join()
    job.refresh_from_db()
    assert captured["ruleset"] == old.pk
    assert job.status == "done" and job.last_id >= captured["lead"]


@pytest.mark.services
def test_the_throttle_counts_address_and_form_in_redis(client, form, settings, redis_url):
    import redis

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    settings.REDIS_URL = redis_url
    redis.Redis.from_url(redis_url).flushdb()
    settings.FUNIL_CAPTURE_RATE_PER_IP = "3/min"
    assert [post_json(client, {"email": f"r{i}@x.com.br"}).status_code for i in range(4)] == [202, 202, 202, 429]
    settings.FUNIL_CAPTURE_RATE_PER_IP = "100/min"
    settings.FUNIL_CAPTURE_RATE_PER_FORM = "5/min"  # 4 counted already on this form (the 429 too)
    other = Client(REMOTE_ADDR="10.0.0.9")
    codes = [post_json(other, {"email": f"o{i}@x.com.br"}).status_code for i in range(2)]
    assert codes == [202, 429]
    assert 0 < int(post_json(other, GOOD)["Retry-After"]) <= 60
    redis.Redis.from_url(redis_url).flushdb()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_posts_with_one_email_leave_exactly_one_lead(require_postgres, settings):
    settings.FUNIL_CAPTURE_RATE_PER_IP = "1000/min"
    FormFactory(fields=["email", "name", "company"])
    barrier = threading.Barrier(50)
    statuses = []

    def submit(i):
        try:
            barrier.wait(timeout=30)
            response = post_json(Client(), {"email": "race@x.com.br", "name": f"Pessoa {i}", "company": f"C{i}"})
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 50
    assert Lead.objects.filter(email="race@x.com.br").count() == 1
    lead = Lead.objects.get()
    assert lead.events.filter(kind=LeadEvent.Kind.CAPTURED).count() == 1
    assert lead.events.filter(kind=LeadEvent.Kind.RESUBMITTED).count() == 49
    assert Submission.objects.filter(status=Submission.Status.PROCESSED).count() == 50
    assert uuid.UUID(str(Submission.objects.first().public_id))


def test_a_new_lead_is_qualified_by_the_active_rules_in_the_same_request(client, form):
    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    pallet_ruleset(state=Ruleset.State.ACTIVE)
    form.fields = [*form.fields, "job_title", "company_size"]
    form.save()
    post_json(client, {**GOOD, "job_title": "Diretora de Operações", "company_size": "51-200"})
    lead = Lead.objects.get()
    assert (lead.status, lead.status_set_by, lead.score, lead.temperature) == ("qualified", "rules", 50, "warm")
    assert lead.qualified_at is not None
    change = lead.events.get(kind=LeadEvent.Kind.STATUS_CHANGED)
    assert (change.from_status, change.to_status) == ("new", "qualified")
    assert [line["name"] for line in change.data["explanation"]] == ["Decisor", "Empresa média"]
    assert change.data["explanation"][0]["seen"] == "Diretora de Operações"

    again = post_json(client, {"email": GOOD["email"], "budget": "", "state": "RJ"})  # fills nothing
    assert again.status_code == 202, again.content
    latest = Submission.objects.order_by("id").last()
    assert latest.status == "processed", latest.errors
    lead.refresh_from_db()
    assert lead.status == "qualified"
    assert lead.events.filter(kind=LeadEvent.Kind.SCORED).count() == 1


def test_a_lead_outside_the_area_is_out_of_focus_at_capture(client, form):
    from scoring.models import Ruleset

    from ..scoring.factories import pallet_ruleset

    pallet_ruleset(state=Ruleset.State.ACTIVE)
    post_json(client, {**GOOD, "state": "Bahia"})
    lead = Lead.objects.get()
    assert (lead.status, lead.reason.slug) == ("out_of_focus", "outside_service_area")


@pytest.mark.parametrize(("language", "expected"), [
    ("pt-BR", ["<strong>E-mail</strong>: Insira um endereço de email válido.",  # DRF's catalogue says this one
               "<strong>Telefone</strong>: Informe um número de telefone válido.",
               "<strong>Orçamento</strong>: Informe um valor, por exemplo 5000, 5.000,00 ou 5k."]),
    ("en", ["<strong>Email</strong>: Enter a valid email address.",
            "<strong>Phone</strong>: Enter a valid phone number.",
            "<strong>Budget</strong>: Enter an amount, e.g. 5000, 5.000,00 or 5k."]),
])
def test_a_plain_form_post_with_errors_is_answered_in_the_visitors_language_with_field_names(
        client, form, settings, language, expected):
    settings.FUNIL_SENDER_NAME = "Paletes Teste"
    response = client.post(URL, data={"email": "maria@", "phone": "123", "budget": "muito"},
                           HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 400
    page = response.content.decode()
    for line in expected:
        assert line in page
    assert '<span class="brand">Paletes Teste</span>' in page
    # What is stored stays as written, whatever the visitor's language: the API's default and the admin's.
    assert Submission.objects.get().errors["email"] == "Enter a valid email address."
    api = client.post(URL, data=json.dumps({"email": "maria@"}), content_type="application/json",
                      HTTP_ACCEPT_LANGUAGE=language)
    assert api.json()["errors"]["email"] == [expected[0].split(": ", 1)[1]]
