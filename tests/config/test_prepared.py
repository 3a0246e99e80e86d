"""The form endpoint's statements are prepared once per connection (config.db.execute_prepared)."""

import json

import pytest
from django.db import DatabaseError, connection, transaction

from config import db as config_db
from leads.models import Lead, Submission

from ..factories import FormFactory

URL = "/api/v1/forms/contato/submissions/"


def post(client, email):
    body = {"email": email, "name": "Maria Souza", "phone": "(11) 98765-4321", "state": "SP"}
    return client.post(URL, data=json.dumps(body), content_type="application/json")


def prepared():
    """This connection's prepared statements: ``{name: times run}``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans + custom_plans FROM pg_prepared_statements "
                       "WHERE name LIKE 'funil%%'")
        return dict(cursor.fetchall())


@pytest.fixture
def form(db):
    return FormFactory(fields=["email", "name", "phone", "state"])


@pytest.fixture
def require_postgres(require_postgres, django_db_blocker):
    """PostgreSQL, its session holding none of the statements earlier tests prepared."""
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    config_db._prepared_names(connection).clear()


@pytest.mark.services
def test_a_submission_prepares_its_statements_once_and_the_next_one_only_executes_them(
        client, form, require_postgres):
    assert post(client, "ana@x.com.br").status_code == 202
    first = prepared()
    assert len(first) == 2  # the raw submission; the lead with its events and the submission's status
    assert post(client, "bia@x.com.br").status_code == 202
    second = prepared()
    assert second.keys() == first.keys()
    assert all(second[name] == runs + 1 for name, runs in first.items())
    assert Lead.objects.get(email="bia@x.com.br").state == "SP"
    assert Submission.objects.filter(status=Submission.Status.PROCESSED).count() == 2


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_new_connection_prepares_them_again(client, form, require_postgres):
    assert post(client, "ana@x.com.br").status_code == 202
    connection.close()
    assert prepared() == {}
    assert post(client, "bia@x.com.br").status_code == 202
    assert len(prepared()) == 2 and Lead.objects.count() == 2


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_statements_lost_under_the_connection_are_a_503_to_retry_and_prepared_again(client, form, require_postgres):
    """Something reset the session (DISCARD ALL, a pooler in transaction mode): that
    submission is refused with 503 and Retry-After, nothing of it is kept, and the
    client's retry is prepared afresh and accepted."""
    assert post(client, "ana@x.com.br").status_code == 202
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    response = post(client, "bia@x.com.br")
    assert response.status_code == 503 and response["Retry-After"]
    assert not Submission.objects.filter(payload__email="bia@x.com.br").exists()
    assert post(client, "bia@x.com.br").status_code == 202
    assert Lead.objects.filter(email="bia@x.com.br").exists()


@pytest.mark.services
def test_turned_off_nothing_is_prepared(client, form, settings, require_postgres):
    settings.FUNIL_DB_PREPARED_STATEMENTS = False
    assert post(client, "ana@x.com.br").status_code == 202
    assert prepared() == {} and Lead.objects.filter(email="ana@x.com.br").exists()


@pytest.mark.services
def test_a_rolled_back_prepare_stays_prepared_and_a_failed_one_is_not_recorded(db, require_postgres):
    with pytest.raises(ZeroDivisionError), transaction.atomic(), connection.cursor() as cursor:
        config_db.execute_prepared(cursor, "SELECT %s::int + 1", [1])
        raise ZeroDivisionError  # the transaction rolls back; PostgreSQL keeps the PREPARE
    with connection.cursor() as cursor:
        config_db.execute_prepared(cursor, "SELECT %s::int + 1", [1])
        assert cursor.fetchone() == (2,)
    for _attempt in range(2):  # the same error twice: never "prepared statement does not exist"
        with pytest.raises(DatabaseError, match="no_such_column"), transaction.atomic():
            with connection.cursor() as cursor:
                config_db.execute_prepared(cursor, "SELECT no_such_column FROM leads_lead WHERE id = %s", [1])
    assert len(prepared()) == 1


def test_placeholders_are_numbered_and_other_percent_signs_refused():
    assert config_db._numbered("INSERT INTO t (a, b) VALUES (%s, %s::jsonb)") == (
        "INSERT INTO t (a, b) VALUES ($1, $2::jsonb)")
    with pytest.raises(ValueError, match="placeholders"):
        config_db._numbered("SELECT * FROM t WHERE a LIKE '%x' AND b = %s")
