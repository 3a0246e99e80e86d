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


def _still_suppressed(entries):
    """Of ``entries`` ((email, Suppression) pairs; an address may have several, one per
    key it was hashed with), the emails that stay suppressed: those with an entry in
    force. A person who was erased or who unsubscribed (or withdrew consent) may be
    written to again once they consent afresh: an entry with such a reason is lifted when
    the latest consent of a lead with that address is a grant given after the entry's
    date (``created_at``, which a new unsubscribe, withdrawal or erasure moves to its own
    moment). Bounces, complaints and manual entries stay, whatever the consent."""
    from leads.models import Consent

    from .models import Suppression

    entries = list(entries)
    liftable = {email for email, entry in entries if entry.reason in Suppression.LIFTED_BY_CONSENT}
    latest = {}
    if liftable:
        consents = (Consent.objects.filter(lead__email__in={email.strip().lower() for email in liftable})
                    .order_by("created_at", "id").values_list("lead__email", "action", "created_at"))
        for email, action, created_at in consents:
            latest[email] = (action, created_at)

    def in_force(email, entry):
        if entry.reason not in Suppression.LIFTED_BY_CONSENT:
            return True
        action, created_at = latest.get(email.strip().lower(), (None, None))
        return not (action == Consent.Action.GRANTED and created_at > entry.created_at)

    return {email for email, entry in entries if in_force(email, entry)}


def suppression_in_force(*, email, entries):
    """Do ``entries`` (the Suppression rows of ``email``) keep ``email`` suppressed now?"""
    return bool(email) and bool(_still_suppressed([(email, entry) for entry in entries]))


def is_suppressed(email):
    """Whether nothing may be sent to ``email``: it bounced, complained, or it was
    erased or unsubscribed and has not consented again since (see ``_still_suppressed``)."""
    return bool(email) and bool(suppressed_hashes([email]))


def suppressed_hashes(emails):
    """The emails of ``emails`` that are suppressed, as a set (two queries at most)."""
    from .models import Suppression
    from .services import email_hashes

    by_hash = {}
    for email in emails:
        if email:
            for digest in email_hashes(email):
                by_hash[digest] = email
    entries = [(by_hash[entry.email_hash], entry)
               for entry in Suppression.objects.filter(email_hash__in=list(by_hash))]
    return _still_suppressed(entries)


def lead_enrollments(lead):
    from .models import Enrollment

    return Enrollment.objects.filter(lead=lead).select_related("sequence").order_by("-enrolled_at")
