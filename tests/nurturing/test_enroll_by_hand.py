"""A rep enrolls or removes leads by hand: the API (lead page, bulk actions) and the form posts."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from nurturing import services
from nurturing.models import Delivery, Enrollment
from tests.factories import LeadFactory

from .factories import sequence

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(rep):
    client = APIClient()
    client.force_authenticate(rep)
    return client


def test_the_api_enrolls_leads_and_reports_each_one(api, rep, other_rep, make_disqualified):
    seq = sequence()
    mine = make_disqualified()
    unassigned = make_disqualified()
    theirs = make_disqualified()
    from leads import services as lead_services

    lead_services.lead_assign(lead=mine, owner=rep)
    lead_services.lead_assign(lead=theirs, owner=other_rep)
    no_email = LeadFactory(email=None, phone="+5511912345678")
    suppressed = make_disqualified(email="fora@cliente.com.br")
    services.suppression_add(email="fora@cliente.com.br", reason="unsubscribed")

    response = api.post(f"/api/v1/sequences/{seq.pk}/enroll/", {
        "leads": [mine.pk, unassigned.pk, theirs.pk, no_email.pk, suppressed.pk, 999999]}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert sorted(body["enrolled"]) == sorted([mine.pk, unassigned.pk])
    assert set(body["errors"]) == {str(theirs.pk), str(no_email.pk), str(suppressed.pk), "999999"}
    assert Delivery.objects.filter(lead=mine, status="pending").count() == 1

    again = api.post(f"/api/v1/sequences/{seq.pk}/enroll/", {"leads": [mine.pk]}, format="json").json()
    assert again["already"] == [mine.pk]

    listed = api.get(f"/api/v1/enrollments/?lead={mine.pk}").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [(row["sequence"], row["status"]) for row in rows] == [(seq.pk, "active")]

    removed = api.post(f"/api/v1/sequences/{seq.pk}/unenroll/", {"leads": [mine.pk]}, format="json").json()
    assert removed["enrolled"] == [mine.pk]
    assert Enrollment.objects.get(lead=mine).status == "removed"
    assert Delivery.objects.get(lead=mine).status == "cancelled"


def test_bad_input_is_a_clear_400_and_an_unknown_sequence_404(api, make_disqualified):
    lead = make_disqualified()
    seq = sequence()
    bad = api.post(f"/api/v1/sequences/{seq.pk}/enroll/", {"leads": "x"}, format="json")
    assert bad.status_code == 400 and "leads" in bad.json()["errors"]
    assert api.post(f"/api/v1/sequences/{seq.pk}/enroll/", {}, format="json").status_code == 400
    assert api.post("/api/v1/sequences/9999/enroll/", {"leads": [lead.pk]}, format="json").status_code == 404
    assert api.get("/api/v1/enrollments/").status_code == 400
    assert APIClient().post(f"/api/v1/sequences/{seq.pk}/enroll/", {"leads": [lead.pk]},
                            format="json").status_code == 401


def test_the_form_post_enrolls_the_selected_leads_and_goes_back(rep, make_disqualified):
    seq = sequence()
    leads = [make_disqualified(), make_disqualified()]
    client = Client()
    client.force_login(rep)

    response = client.post("/nurturing/enroll/", {"sequence": seq.pk, "leads": [lead.pk for lead in leads],
                                                  "next": "/leads/?status=disqualified"})

    assert response.status_code == 302 and response["Location"] == "/leads/?status=disqualified"
    assert Enrollment.objects.filter(sequence=seq, status="active").count() == 2

    response = client.post("/nurturing/unenroll/", {"sequence": seq.pk, "leads": [leads[0].pk],
                                                    "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/leads/"
    assert Enrollment.objects.get(lead=leads[0]).status == "removed"

    nothing = client.post("/nurturing/enroll/", {"sequence": "abc", "leads": ["x"]})
    assert nothing.status_code == 302


def test_the_form_posts_need_a_login(make_disqualified):
    seq = sequence()
    response = Client().post("/nurturing/enroll/", {"sequence": seq.pk, "leads": [make_disqualified().pk]})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not Enrollment.objects.exists()
