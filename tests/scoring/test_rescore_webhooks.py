"""Status changes made set-based (activation, rescoring, requalification) reach webhook
endpoints as the same events, with the same payload, as a one-lead change."""

import json
from decimal import Decimal

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from leads import services as lead_services
from leads import webhooks
from leads.models import Lead, LeadEvent, LeadStatus, WebhookDelivery, WebhookEndpoint
from scoring import services
from scoring.models import RescoreJob

from ..factories import FormFactory, LeadFactory, ReasonFactory, SourceFactory
from ..leads.test_webhooks import SECRET
from .factories import pallet_ruleset
from .test_rescore import PEOPLE

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoints(receiver):
    """One endpoint for qualified and disqualified leads; one that wants only conversions
    (rules never convert); a paused one that wants everything."""
    wanted = WebhookEndpoint.objects.create(name="CRM", url=receiver.url, secret=SECRET,
                                            events=["lead.qualified", "lead.disqualified"])
    WebhookEndpoint.objects.create(name="Finance", url=receiver.url, secret=SECRET, events=["lead.converted"])
    WebhookEndpoint.objects.create(name="Paused", url=receiver.url, secret=SECRET, active=False,
                                   events=list(WebhookEndpoint.EVENTS))
    return wanted


def make_leads():
    source, form = SourceFactory(), FormFactory()
    leads = [LeadFactory(email=f"p{i}@x.com.br", source=source, form=form, **person)
             for i, person in enumerate(PEOPLE)]
    Lead.objects.filter(pk=leads[0].pk).update(deal_value=Decimal("12500.50"))
    return leads


def expected_lead(lead_id):
    """What ``webhook_event_record`` would send for this lead now, as JSON gives it back."""
    lead = Lead.objects.select_related("source", "form", "reason").get(pk=lead_id)
    return json.loads(json.dumps(webhooks.lead_payload(lead), cls=DjangoJSONEncoder))


def activate_and_run(ruleset, **options):
    return services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk, **options)


@pytest.mark.parametrize("chunk_size", [2, 1000])
def test_a_rescore_writes_one_delivery_per_lead_moved_to_a_subscribed_status(
        endpoints, chunk_size, django_capture_on_commit_callbacks):
    make_leads()
    assert not WebhookDelivery.objects.exists()  # lead.created: nobody subscribed
    with django_capture_on_commit_callbacks() as callbacks:
        job = activate_and_run(pallet_ruleset(), chunk_size=chunk_size)
    assert job.status == RescoreJob.Status.DONE

    moved = dict(Lead.objects.values_list("pk", "status"))
    wanted = {pk: f"lead.{status}" for pk, status in moved.items() if status in ("qualified", "disqualified")}
    assert len(wanted) == 5 and len(moved) == 7  # 2 out of focus: nobody subscribed to that
    deliveries = list(WebhookDelivery.objects.all())
    assert {(d.lead_id, d.event) for d in deliveries} == set(wanted.items())
    assert len(deliveries) == len(wanted)
    assert {d.endpoint_id for d in deliveries} == {endpoints.pk}
    for delivery in deliveries:
        assert delivery.status == WebhookDelivery.Status.PENDING and delivery.next_attempt_at is not None
        body = json.loads(delivery.body)
        assert set(body) == {"id", "event", "created_at", "lead"}
        assert body["id"] == str(delivery.public_id)
        assert body["event"] == delivery.event
        assert body["lead"] == expected_lead(delivery.lead_id)
    assert len({d.public_id for d in deliveries}) == len(deliveries)
    # Sending is enqueued only on commit (the rescoring job's nudge is the first callback).
    assert len(callbacks) >= 2


def test_the_deliveries_are_sent_signed_by_the_sweep(endpoints, receiver):
    make_leads()
    activate_and_run(pallet_ruleset(), chunk_size=3)
    assert webhooks.webhook_deliveries_sweep() == 5
    assert WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERED).count() == 5
    for request in receiver.requests:
        assert webhooks.verify(SECRET, request["body"], request["headers"]["Funil-Signature"])
        assert json.loads(request["body"])["id"] == request["headers"]["Funil-Delivery"]


def test_a_rerun_that_changes_nothing_sends_nothing(endpoints):
    make_leads()
    ruleset = pallet_ruleset()
    activate_and_run(ruleset, chunk_size=3)
    before = WebhookDelivery.objects.count()
    again = services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk, chunk_size=3)
    assert again.status_changes == 0
    assert WebhookDelivery.objects.count() == before == 5


def test_a_reason_change_without_a_status_change_sends_nothing(endpoints):
    lead = LeadFactory(**PEOPLE[1])  # below the threshold: disqualified
    ruleset = pallet_ruleset()
    activate_and_run(ruleset)
    assert list(WebhookDelivery.objects.values_list("lead_id", "event")) == [(lead.pk, "lead.disqualified")]
    Lead.objects.filter(pk=lead.pk).update(budget=Decimal("1000"))  # now "no budget": same status
    again = services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk)
    assert (again.leads_changed, again.status_changes) == (1, 0)
    assert Lead.objects.get(pk=lead.pk).reason.slug == "no_budget"
    assert WebhookDelivery.objects.count() == 1


def test_nothing_is_written_without_a_subscribed_endpoint():
    make_leads()
    WebhookEndpoint.objects.create(name="Finance", url="https://crm.example.com/h", secret=SECRET,
                                   events=["lead.converted", "lead.created"])
    activate_and_run(pallet_ruleset(), chunk_size=3)
    assert not WebhookDelivery.objects.exclude(event="lead.created").exists()


def test_requalification_tells_the_endpoint_the_lead_is_qualified_again(endpoints, rep):
    ruleset = pallet_ruleset()
    services.ruleset_activate(ruleset=ruleset)
    lead = LeadFactory(**PEOPLE[0])
    lead_services.lead_change_status(lead=lead, status=LeadStatus.DISQUALIFIED, actor=rep,
                                     reason=ReasonFactory(slug="later", kind="disqualified"),
                                     requalify_at=timezone.now() - timezone.timedelta(days=1))
    WebhookDelivery.objects.all().delete()
    job = services.rescore_job_run(
        job_id=services.rescore_job_create(ruleset=ruleset, kind=RescoreJob.Kind.REQUALIFICATION).pk)
    assert job.status_changes == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.lead_id, delivery.event) == (lead.pk, "lead.qualified")
    assert json.loads(delivery.body)["lead"] == expected_lead(lead.pk)


def test_a_resubmission_that_changes_the_status_sends_the_event_too(endpoints):
    """The one-lead rules path (``lead_qualify``) sends what the set-based one does."""
    services.ruleset_activate(ruleset=pallet_ruleset())
    services.forget_active_ruleset()
    lead = LeadFactory(**PEOPLE[1])  # created before the rules ran on it: still new
    services.lead_qualify(lead=lead)
    lead.refresh_from_db()
    assert lead.status == LeadStatus.DISQUALIFIED
    assert list(WebhookDelivery.objects.values_list("lead_id", "event")) == [(lead.pk, "lead.disqualified")]
    services.lead_qualify(lead=lead)  # no status change: nothing more
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_chunks_in_parallel_write_each_delivery_once(require_postgres, endpoints):
    leads = [LeadFactory(email=f"q{i}.{n}@x.com.br", **person) for n in range(3) for i, person in enumerate(PEOPLE)]
    job = activate_and_run(pallet_ruleset(), chunk_size=2, workers=2)
    assert job.leads_seen == len(leads)
    wanted = set(Lead.objects.filter(status__in=["qualified", "disqualified"]).values_list("pk", flat=True))
    assert sorted(WebhookDelivery.objects.values_list("lead_id", flat=True)) == sorted(wanted)
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.STATUS_CHANGED).count() == len(leads)
