"""The OpenAPI schema at /api/schema/ is what the API does: schemathesis generates
requests for every operation from the schema, sends them to the app in-process, and
checks each answer against the schema.

Public operations are called without credentials, authenticated ones with a token
(``rest_framework.authtoken``) of a user who may do everything, on a database with a
form, leads and reasons in it. Every operation must answer without a server error,
with a status code, content type, headers and body the schema documents.
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Bounded: CI runs this. Every operation still gets its examples and the coverage phase.
MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def wsgi_app(db):
    """The real WSGI application, minus what only a real server wants: closing the
    database connection after each request (it is the test's transaction), as
    Django's test client does."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from config.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _generated_schema():
    from drf_spectacular.generators import SchemaGenerator

    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


# Built at collection (it needs no database); the first test proves /api/schema/ serves exactly this.
SPEC = _generated_schema()
schema = schemathesis.openapi.from_dict(SPEC)


def test_the_served_schema_is_the_one_tested(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    assert response.json() == SPEC
    assert len(SPEC["paths"]) >= 10


@pytest.fixture
def token(db, settings):
    from rest_framework.authtoken.models import Token

    from leads import services
    from leads.models import Reason, Submission

    from .factories import FormFactory, LeadFactory, ReasonFactory, UserFactory

    # The throttles answer 429 as documented, but then nothing behind them would be exercised.
    settings.FUNIL_CAPTURE_RATE_PER_IP = settings.FUNIL_CAPTURE_RATE_PER_FORM = "1000000/min"
    admin = UserFactory(username="schema-admin", is_staff=True, is_superuser=True)
    form = FormFactory(fields=["email", "name", "phone", "company", "state", "budget", "frota"],
                       consent_text="Aceito", consent_version="v1")
    FormFactory(slug="vazio", name="Sem envios")
    ReasonFactory(kind=Reason.Kind.DISQUALIFIED)
    ReasonFactory(slug="fora", label="Fora", kind=Reason.Kind.OUT_OF_FOCUS)
    for i in range(3):
        lead = LeadFactory(form=form, source=form.source)
        services.lead_add_note(lead=lead, author=admin, text=f"nota {i}")
    Submission.objects.create(form=form, payload={"email": "x@y.com.br"})
    return Token.objects.create(user=admin).key


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case, token, wsgi_app):
    headers = {} if case.operation.definition.raw.get("security") == [] else {"Authorization": f"Token {token}"}
    case.call_and_validate(app=wsgi_app, headers=headers, checks=CHECKS)
