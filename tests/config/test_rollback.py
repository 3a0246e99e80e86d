"""A transaction that rolls back enqueues nothing: every task is sent on commit, so a
worker never receives the id of a row that does not exist."""

import json

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import transaction

from leads.models import Lead
from scoring.models import RescoreJob
from scoring.rules_io import ruleset_import
from scoring.services import ruleset_activate
from tests.scoring.factories import pallet_ruleset

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

RULES = {
    "name": "Paletes SP", "thresholds": {"qualify": 40, "warm": 40, "hot": 70},
    "reasons": {"outside_service_area": "Fora da área"},
    "rules": [{"name": "Fora de SP", "field": "state", "operator": "not_in", "value": ["SP"],
               "effect": "out_of_focus", "reason": "outside_service_area"}],
}


class Rollback(Exception):
    pass


def queued(client):
    """Task messages waiting in the default queue, by task name."""
    return [json.loads(message)["headers"]["task"] for message in client.lrange("celery", 0, -1)]


def test_a_rolled_back_activation_and_capture_enqueue_nothing_while_a_committed_one_does(redis_url):
    assert settings.CELERY_BROKER_URL == redis_url
    client = redis_lib.Redis.from_url(redis_url)
    client.delete("celery")
    pallet_ruleset(state="active")

    with pytest.raises(Rollback), transaction.atomic():
        ruleset_activate(ruleset=ruleset_import(RULES))
        from leads import services

        services.lead_create(email="rollback@empresa.com.br", first_name="Ana", state="SP")
        raise Rollback

    assert queued(client) == []
    assert not RescoreJob.objects.exists() and not Lead.objects.exists()

    # The same work, committed: exactly one nudge, for a job that exists.
    with transaction.atomic():
        job = ruleset_activate(ruleset=ruleset_import(RULES))
    assert queued(client) == ["scoring.tasks.run_rescore_job"]
    message = json.loads(client.lindex("celery", 0))
    assert str(job.pk) in message["headers"]["argsrepr"]
    client.delete("celery")
