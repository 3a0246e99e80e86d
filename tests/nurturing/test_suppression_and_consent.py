"""One suppression list: an erased or unsubscribed address may be written to again only
after fresh consent; a bounce or a complaint stays whatever the consent."""

import datetime

import pytest
from django.test import override_settings
from django.utils import timezone

from leads import privacy
from leads.models import Consent, LeadEvent
from nurturing.models import Suppression
from nurturing.selectors import is_suppressed, suppressed_hashes
from nurturing.services import lead_unsubscribe, suppression_add, suppression_renew, suppressions_renew_bulk
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


@pytest.mark.parametrize("how", ["page", "one-click", "mailto"])
def test_an_unsubscribe_after_fresh_consent_suppresses_again_with_one_event(how):
    lead = LeadFactory(email="de-novo@empresa.com.br")
    assert lead_unsubscribe(lead_id=lead.pk, how=how)
    consent(lead)
    assert not is_suppressed(lead.email)

    assert lead_unsubscribe(lead_id=lead.pk, how=how)
    assert is_suppressed(lead.email)
    assert not lead_unsubscribe(lead_id=lead.pk, how=how)  # a replay
    assert LeadEvent.objects.filter(lead=lead, kind="consent", data__action="unsubscribed").count() == 2
    assert Suppression.objects.get().reason == Suppression.Reason.UNSUBSCRIBED


@pytest.mark.parametrize("reason", [Suppression.Reason.BOUNCED, Suppression.Reason.COMPLAINED])
def test_a_bounce_or_complaint_after_fresh_consent_suppresses_again_for_good(reason):
    lead = LeadFactory(email="volta-e-quica@empresa.com.br")
    suppression_add(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED)
    consent(lead)
    assert not is_suppressed(lead.email)

    assert suppression_add(email=lead.email, reason=reason)[1]
    assert is_suppressed(lead.email)
    consent(lead)
    assert is_suppressed(lead.email)
    assert Suppression.objects.get().reason == reason


def test_a_complaint_after_an_unsubscribe_stays_whatever_the_consent():
    lead = LeadFactory(email="reclamou@empresa.com.br")
    suppression_add(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED)
    assert not suppression_add(email=lead.email, reason=Suppression.Reason.COMPLAINED)[1]  # already suppressed
    consent(lead)
    assert is_suppressed(lead.email)
    assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINED


@pytest.mark.parametrize("suppress_again", [
    lambda lead: suppression_renew(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED),
    lambda lead: privacy.consent_withdraw(lead=lead),
    lambda lead: suppressions_renew_bulk(emails=[lead.email], reason=Suppression.Reason.ERASED),
    lambda lead: suppression_add(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED),
], ids=["renew", "withdrawal", "erasure", "unsubscribe"])
def test_a_withdrawal_unsubscribe_or_erasure_never_turns_a_bounce_into_what_consent_lifts(suppress_again):
    lead = LeadFactory(email="quicou@empresa.com.br")
    suppression_add(email=lead.email, reason=Suppression.Reason.BOUNCED)
    suppress_again(lead)
    consent(lead)
    assert is_suppressed(lead.email)
    assert Suppression.objects.get().reason == Suppression.Reason.BOUNCED


def test_an_erasure_after_a_key_rotation_is_not_hidden_by_an_entry_under_the_old_key():
    lead = LeadFactory(email="girou@empresa.com.br")
    with override_settings(SECRET_KEY="old-key-" + "x" * 50):
        suppression_add(email=lead.email, reason=Suppression.Reason.UNSUBSCRIBED)
    consent(lead)
    with override_settings(SECRET_KEY="new-key-" + "y" * 50, SECRET_KEY_FALLBACKS=["old-key-" + "x" * 50]):
        assert not is_suppressed(lead.email)
        suppressions_renew_bulk(emails=[lead.email], reason=Suppression.Reason.ERASED)  # a retention purge
        assert Suppression.objects.count() == 2
        assert is_suppressed(lead.email)


def test_of_two_unsubscribes_at_once_after_fresh_consent_only_one_is_noted(other_writer):
    """PostgreSQL: the other request renews the entry and holds its row; this one waits
    for it, then finds the address suppressed and writes nothing."""
    import threading

    lead = LeadFactory(email="dois-cliques@empresa.com.br")
    assert lead_unsubscribe(lead_id=lead.pk, how="one-click")
    consent(lead)
    entry = Suppression.objects.get()
    results = []

    def run():
        from django.db import connection as own

        try:
            results.append(lead_unsubscribe(lead_id=lead.pk, how="one-click"))
        finally:
            own.close()

    other_writer.execute("BEGIN")
    other_writer.execute("SELECT id FROM nurturing_suppression WHERE id = %s FOR UPDATE", [entry.pk])
    other_writer.execute("UPDATE nurturing_suppression SET created_at = clock_timestamp() WHERE id = %s", [entry.pk])
    runner = threading.Thread(target=run)
    runner.start()
    assert other_writer.blocked_backend()
    other_writer.execute("COMMIT")
    runner.join(timeout=60)

    assert results == [False]
    assert is_suppressed(lead.email)
    assert LeadEvent.objects.filter(lead=lead, kind="consent", data__action="unsubscribed").count() == 1
