from django.http import QueryDict

from leads.filters import LeadFilterSet
from leads.models import Lead

from .models import Segment


class InvalidSegment(ValueError):
    """A segment whose saved filters no longer validate (e.g. a removed choice)."""

    def __init__(self, errors):
        super().__init__(str(errors))
        self.errors = errors


def segment_filterset(*, filters, user=None, queryset=None):
    """The LeadFilterSet bound to saved ``filters`` (a dict of query parameters)."""

    class _Request:
        pass

    query = QueryDict(mutable=True)
    for key, value in (filters or {}).items():
        query.setlist(key, [str(item) for item in value] if isinstance(value, list) else [str(value)])
    request = _Request()
    request.user = user
    return LeadFilterSet(query, queryset=Lead.objects.all() if queryset is None else queryset, request=request)


def segment_leads(*, segment, user=None, queryset=None):
    """The leads in ``segment`` now: a queryset, evaluated by the caller, so it stays set-based."""
    filterset = segment_filterset(filters=segment.filters, user=user, queryset=queryset)
    if not filterset.is_valid():
        raise InvalidSegment(filterset.errors)
    return filterset.qs


def segments_for(user):
    """The segments a person sees: the shared ones and their own."""
    from django.db.models import Q

    return Segment.objects.filter(Q(shared=True) | Q(created_by=user)).order_by("name")


def is_suppressed(email):
    """Whether nothing may be sent to ``email`` (unsubscribed, bounced, complained, erased)."""
    from .models import Suppression
    from .services import email_hashes

    return bool(email) and Suppression.objects.filter(email_hash__in=email_hashes(email)).exists()


def suppressed_hashes(emails):
    """The emails of ``emails`` that are suppressed, as a set (one query)."""
    from .models import Suppression
    from .services import email_hashes

    by_hash = {}
    for email in emails:
        if email:
            for digest in email_hashes(email):
                by_hash[digest] = email
    found = Suppression.objects.filter(email_hash__in=list(by_hash)).values_list("email_hash", flat=True)
    return {by_hash[digest] for digest in found}


def lead_enrollments(lead):
    from .models import Enrollment

    return Enrollment.objects.filter(lead=lead).select_related("sequence").order_by("-enrolled_at")
