"""The provider webhook receiver: anymail verifies the request (basic auth and/or the
provider's signature, per the ANYMAIL settings) and sends its normalised tracking signal."""

import logging

from anymail.signals import tracking
from django.dispatch import receiver

logger = logging.getLogger(__name__)


@receiver(tracking, dispatch_uid="nurturing.provider_event")
def handle_provider_event(sender, event, esp_name, **kwargs):
    from .services import provider_event_apply

    applied = provider_event_apply(esp=esp_name, event=event)
    logger.info("provider event %s %s: %s", esp_name, event.event_type, "applied" if applied else "ignored")
