import pytest
from django.test import override_settings

from leads import services as lead_services
from tests.factories import LeadFactory, ReasonFactory

from .smtp import SmtpServer


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free port, and Django's SMTP backend pointed at it."""
    with SmtpServer() as server, override_settings(
        EMAIL_BACKEND="nurturing.mail.EmailBackend", EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=server.port, EMAIL_USE_TLS=False, EMAIL_USE_SSL=False, EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="", EMAIL_TIMEOUT=10,
    ):
        yield server


def disqualified_lead(**fields):
    lead = LeadFactory(**fields)
    return lead_services.lead_change_status(lead=lead, status="disqualified", reason=ReasonFactory())


@pytest.fixture
def make_disqualified(db):
    return disqualified_lead
