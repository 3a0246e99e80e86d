import pytest

from leads.models import Lead, LeadStatus
from nurturing.selectors import InvalidSegment, segment_leads
from nurturing.services import segment_save
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


def test_a_saved_segment_selects_what_the_lead_filterset_selects():
    wanted, elsewhere, qualified = LeadFactory(state="SP"), LeadFactory(state="RJ"), LeadFactory(state="SP")
    Lead.objects.filter(pk__in=[wanted.pk, elsewhere.pk]).update(status=LeadStatus.DISQUALIFIED)
    Lead.objects.filter(pk=qualified.pk).update(status=LeadStatus.QUALIFIED)

    segment = segment_save(
        name="Desqualificados SP", filters={"status": ["disqualified"], "state": "sp", "cursor": "x"}
    )

    assert segment.slug == "desqualificados-sp"
    assert "cursor" not in segment.filters
    assert list(segment_leads(segment=segment)) == [wanted]
    assert "status=disqualified" in segment.query_string()


def test_saving_again_under_the_same_name_updates_the_segment():
    first = segment_save(name="Quentes", filters={"temperature": ["hot"]})
    second = segment_save(name="Quentes", filters={"temperature": ["warm"]})
    assert first.pk == second.pk
    assert second.filters == {"temperature": ["warm"]}


def test_a_filter_the_list_rejects_is_refused():
    with pytest.raises(InvalidSegment) as error:
        segment_save(name="Ruim", filters={"status": ["nope"]})
    assert "status" in error.value.errors
