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


def test_a_name_is_refused_when_the_view_is_someone_elses_or_feeds_a_sequence(rep, other_rep):
    from nurturing.models import Segment
    from nurturing.services import SegmentNameTaken

    from .factories import sequence

    mine = segment_save(name="Quentes SP", filters={"state": "SP"}, actor=rep, shared=False)
    assert segment_save(name="Quentes SP", filters={"state": "RJ"}, actor=rep).pk == mine.pk
    with pytest.raises(SegmentNameTaken) as taken:
        segment_save(name="quentes  SP", filters={"status": ["new"]}, actor=other_rep)
    assert taken.value.message == "A view named “Quentes SP” already exists; choose another name."
    with pytest.raises(SegmentNameTaken):
        segment_save(name="Quentes SP", filters={"status": ["new"]})  # code, not its author
    sequence(name="Nutrição SP", segment=mine)
    with pytest.raises(SegmentNameTaken) as taken:
        segment_save(name="Quentes SP", filters={"status": ["new"]}, actor=rep)
    assert "nurture sequence “Nutrição SP”" in taken.value.message
    mine.refresh_from_db()
    assert (mine.filters, mine.created_by, mine.shared) == ({"state": "RJ"}, rep, True)
    assert Segment.objects.count() == 1


def test_a_replaced_shared_view_stays_shared(rep):
    shared = segment_save(name="Time", filters={"state": "SP"}, actor=rep, shared=True)
    again = segment_save(name="Time", filters={"state": "RJ"}, actor=rep, shared=False)
    assert again.pk == shared.pk and again.shared


def test_a_rolling_window_keeps_a_segment_about_recent_leads(rep):
    from datetime import timedelta

    from django.utils import timezone

    from leads.models import Lead
    from nurturing.selectors import segment_leads

    from ..factories import LeadFactory

    recent, old = LeadFactory(email="recente@x.com.br"), LeadFactory(email="antigo@x.com.br")
    Lead.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=91))
    Lead.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(days=89))
    segment = segment_save(name="Recentes", filters={"created_within_days": "90"}, actor=rep)
    assert list(segment_leads(segment=segment)) == [recent]
    # Ninety days later the same segment holds the leads of those ninety days, not the old ones.
    Lead.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(days=179))
    assert list(segment_leads(segment=segment)) == []
    with pytest.raises(InvalidSegment):
        segment_save(name="Nunca", filters={"created_within_days": "0"}, actor=rep)
