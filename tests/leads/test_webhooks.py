"""Outbound webhooks against a real HTTP server on 127.0.0.1 (the network edge, not a mock)."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from leads import services, webhooks
from leads.models import LeadStatus, WebhookDelivery, WebhookEndpoint

from ..factories import LeadFactory, ReasonFactory, UserFactory

pytestmark = pytest.mark.django_db
SECRET = "s3cret-s3cret-s3cret"


class Receiver:
    """A real HTTP server that records what it is sent and answers ``status``."""

    def __init__(self):
        self.requests = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok" if receiver.status < 300 else b"broken")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(receiver):
    owner = UserFactory(username="mkt", email="mkt@example.com")
    return WebhookEndpoint.objects.create(name="CRM", url=receiver.url, secret=SECRET, owner=owner,
                                          events=["lead.qualified", "lead.converted"])


def deliver_all():
    return [webhooks.webhook_deliver(delivery_id=pk) for pk in WebhookDelivery.objects.values_list("pk", flat=True)]


def test_a_status_change_is_delivered_signed_to_the_subscribed_endpoint(endpoint, receiver,
                                                                        django_capture_on_commit_callbacks):
    lead = LeadFactory(email="ana@cliente.com.br")  # lead.created: not subscribed
    assert not WebhookDelivery.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED)
    assert len(callbacks) == 1  # the send is enqueued only after commit
    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "lead.qualified" and delivery.status == WebhookDelivery.Status.PENDING

    assert deliver_all() == [WebhookDelivery.Status.DELIVERED]
    [request] = receiver.requests
    body = json.loads(request["body"])
    assert body["event"] == "lead.qualified" and body["lead"]["email"] == "ana@cliente.com.br"
    assert request["headers"]["Funil-Event"] == "lead.qualified"
    assert request["headers"]["Funil-Delivery"] == str(delivery.public_id) == body["id"]
    assert webhooks.verify(SECRET, request["body"], request["headers"]["Funil-Signature"])
    assert not webhooks.verify("another-secret-123", request["body"], request["headers"]["Funil-Signature"])
    assert not webhooks.verify(SECRET, request["body"] + b" ", request["headers"]["Funil-Signature"])
    delivery.refresh_from_db()
    assert (delivery.response_status, delivery.response_body, delivery.attempts) == (200, "ok", 1)


def test_an_old_signature_is_refused_by_the_verifier():
    header = webhooks.sign(SECRET, b"{}", 1_000_000)
    assert webhooks.verify(SECRET, b"{}", header, now=1_000_100)
    assert not webhooks.verify(SECRET, b"{}", header, now=1_000_000 + 301)
    assert not webhooks.verify(SECRET, b"{}", "garbage")


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(endpoint, receiver):
    receiver.status = 500
    services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    delivery = WebhookDelivery.objects.get()
    before = timezone.now()
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == WebhookDelivery.Status.PENDING
    delivery.refresh_from_db()
    assert delivery.response_status == 500 and delivery.response_body == "broken"
    assert delivery.next_attempt_at >= before + timedelta(seconds=webhooks.RETRY_DELAYS[0])
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) is None  # not due yet: nothing sent
    statuses = []
    for _attempt in range(webhooks.MAX_ATTEMPTS - 1):
        statuses.append(webhooks.webhook_deliver(delivery_id=delivery.pk, now=timezone.now() + timedelta(days=1)))
    assert statuses[-1] == WebhookDelivery.Status.FAILED
    assert len(receiver.requests) == webhooks.MAX_ATTEMPTS
    delivery.refresh_from_db()
    assert delivery.attempts == webhooks.MAX_ATTEMPTS


def test_an_unreachable_receiver_is_recorded_and_retried(endpoint, receiver):
    receiver.close()
    services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    assert deliver_all() == [WebhookDelivery.Status.PENDING]
    delivery = WebhookDelivery.objects.get()
    assert delivery.response_status is None and delivery.error


def test_an_endpoint_that_keeps_failing_is_paused_and_its_owner_told(endpoint, receiver,
                                                                     django_capture_on_commit_callbacks):
    receiver.status = 503
    far = timezone.now() + timedelta(days=30)
    with django_capture_on_commit_callbacks(execute=True):
        for _n in range(webhooks.PAUSE_AFTER_FAILURES):
            services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
        WebhookDelivery.objects.update(attempts=webhooks.MAX_ATTEMPTS - 1)  # their last attempt
        results = [webhooks.webhook_deliver(delivery_id=pk, now=far)
                   for pk in WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True)]
    assert results == [WebhookDelivery.Status.FAILED] * webhooks.PAUSE_AFTER_FAILURES
    endpoint.refresh_from_db()
    assert endpoint.active is False and endpoint.paused_at is not None
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["mkt@example.com"] and "CRM" in mail.outbox[0].subject
    # Paused: new events are not even recorded for it, and nothing more is sent.
    services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    assert WebhookDelivery.objects.count() == webhooks.PAUSE_AFTER_FAILURES


def test_resuming_an_endpoint_retries_its_failed_deliveries(endpoint, receiver):
    receiver.status = 500
    services.lead_change_status(lead=LeadFactory(), status=LeadStatus.QUALIFIED)
    WebhookDelivery.objects.update(status=WebhookDelivery.Status.FAILED, attempts=webhooks.MAX_ATTEMPTS)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False, paused_at=timezone.now())
    receiver.status = 204
    assert webhooks.webhook_endpoint_resume(endpoint=endpoint) == 1
    assert webhooks.webhook_deliveries_sweep() == 1
    assert WebhookDelivery.objects.get().status == WebhookDelivery.Status.DELIVERED


def test_the_sweep_sends_deliveries_whose_message_was_lost(endpoint, receiver):
    lead = LeadFactory()
    services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED)
    services.lead_change_status(lead=lead, status=LeadStatus.CONVERTED, actor=UserFactory(is_superuser=True))
    assert webhooks.webhook_deliveries_sweep() == 2
    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["lead.qualified", "lead.converted"]
    assert webhooks.webhook_deliveries_sweep() == 0  # delivered once; at-least-once, not more when all is well


def test_every_lead_event_type_is_recorded_for_an_endpoint_that_wants_it(receiver):
    WebhookEndpoint.objects.create(name="All", url=receiver.url, secret=SECRET, events=list(WebhookEndpoint.EVENTS))
    reason = ReasonFactory()
    a, b = LeadFactory(), LeadFactory()
    services.lead_change_status(lead=a, status=LeadStatus.DISQUALIFIED, reason=reason)
    services.lead_change_status(lead=b, status=LeadStatus.OUT_OF_FOCUS, reason=reason)
    services.lead_change_status(lead=b, status=LeadStatus.CONVERTED)
    assert sorted(WebhookDelivery.objects.values_list("event", flat=True)) == sorted(
        ["lead.created", "lead.created", "lead.disqualified", "lead.out_of_focus", "lead.converted"])


def test_endpoints_must_be_https_in_production(settings):
    settings.DEBUG = False
    settings.FUNIL_WEBHOOKS_ALLOW_HTTP_LOCALHOST = False
    endpoint = WebhookEndpoint(name="x", url="http://127.0.0.1:9/x", secret=SECRET, events=["lead.created"])
    with pytest.raises(ValidationError) as error:
        endpoint.full_clean()
    assert "url" in error.value.message_dict
    endpoint.url = "https://crm.example.com/hook"
    endpoint.full_clean()
    endpoint.events = ["lead.deleted"]
    endpoint.secret = "short"
    with pytest.raises(ValidationError) as error:
        endpoint.full_clean()
    assert {"events", "secret"} <= set(error.value.message_dict)
