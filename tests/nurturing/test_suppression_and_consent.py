"""One suppression list: an erased or unsubscribed address may be written to again only
after fresh consent; a bounce or a complaint stays whatever the consent."""

import datetime

import pytest
from django.utils import timezone

from leads.models import Consent
from nurturing.models import Suppression
from nurturing.selectors import is_suppressed, suppressed_hashes
from nurturing.services import suppression_add, suppression_renew
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


def consent(lead, action=Consent.Action.GRANTED, when=None):
    row = Consent.objects.create(lead=lead, action=action)
    if when:
        Consent.objects.filter(pk=row.pk).update(created_at=when)


@pytest.mark.parametrize("reason", [Suppression.Reason.UNSUBSCRIBED, Suppression.Reason.ERASED])
def test_fresh_consent_lifts_an_unsubscribe_or_an_erasure(reason):
    lead = LeadFactory(email="volta@empresa.com.br")
    consent(lead, when=timezone.now() - datetime.timedelta(days=3))  # the old consent does not count
    suppression_add(email=lead.email, reason=reason)
    assert is_suppressed(lead.email)
    consent(lead)
    assert not is_suppressed(lead.email)
    # Suppressed again (a new request): only consent after this moment lifts it.
    suppression_renew(email=lead.email, reason=reason)
    assert is_suppressed(lead.email)


@pytest.mark.parametrize("reason", [Suppression.Reason.BOUNCED, Suppression.Reason.COMPLAINED])
def test_a_bounce_or_complaint_stays_whatever_the_consent(reason):
    lead = LeadFactory(email="quique@empresa.com.br")
    suppression_add(email=lead.email, reason=reason)
    consent(lead)
    assert is_suppressed(lead.email)


def test_a_withdrawal_after_fresh_consent_suppresses_again():
    lead = LeadFactory(email="indeciso@empresa.com.br")
    suppression_add(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED)
    consent(lead)
    consent(lead, action=Consent.Action.WITHDRAWN)
    assert suppressed_hashes([lead.email, "outra@empresa.com.br"]) == {lead.email}
