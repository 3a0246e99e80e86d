"""The provider webhook receivers: anymail verifies the request (basic auth and/or the
provider's signature, per the ANYMAIL settings) and sends its normalised ``tracking``
signal (bounces, complaints) or ``inbound`` signal (mail to the unsubscribe mailbox)."""

import logging

from anymail.signals import inbound, tracking
from django.dispatch import receiver

from config.db import database_unavailable

logger = logging.getLogger(__name__)


@receiver(tracking, dispatch_uid="nurturing.provider_event")
def handle_provider_event(sender, event, esp_name, **kwargs):
    from .services import provider_event_apply

    applied = provider_event_apply(esp=esp_name, event=event)
    logger.info("provider event %s %s: %s", esp_name, event.event_type, "applied" if applied else "ignored")


@receiver(inbound, dispatch_uid="nurturing.inbound_unsubscribe")
def handle_inbound_message(sender, event, esp_name, **kwargs):
    """A message sent to List-Unsubscribe's mailto. Whatever it holds, the provider gets a
    2xx: an exception would make anymail answer 500, and the provider would post the same
    message again and again. Only when the database is unavailable does it go out, so that
    the provider tries again later and the unsubscribe is not lost."""
    from .services import INBOUND_BAD_TOKEN, inbound_unsubscribe_apply

    try:
        outcome = inbound_unsubscribe_apply(message=event.message)
    except Exception as exc:  # noqa: BLE001 - a message we cannot read is logged, not retried forever
        if database_unavailable(exc):
            raise
        logger.exception("inbound message %s %s: failed, ignored", esp_name, event.event_id)
        return
    level = logging.WARNING if outcome == INBOUND_BAD_TOKEN else logging.INFO
    logger.log(level, "inbound message %s %s: %s", esp_name, event.event_id, outcome)
