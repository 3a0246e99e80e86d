from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from .models import Segment, WorkerHeartbeat
from .selectors import InvalidSegment, segment_filterset


@transaction.atomic
def heartbeat_record(*, name, hostname=""):
    """Note that a worker is alive. Safe to run twice: it only moves the clock."""
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(name=name).update(
        last_seen=now, hostname=hostname, beats=F("beats") + 1
    )
    if not updated:
        WorkerHeartbeat.objects.get_or_create(
            name=name, defaults={"last_seen": now, "hostname": hostname, "beats": 1}
        )
    return WorkerHeartbeat.objects.get(name=name)


# Keys of a query string that are not filters (pagination, the page's own state).
NON_FILTER_KEYS = {"cursor", "page", "page_size", "format", "csrfmiddlewaretoken", "save_as"}


@transaction.atomic
def segment_save(*, name, filters, actor=None, description="", shared=True):
    """Save a view of the lead list under ``name``: creates the segment, or updates the
    one with the same slug. The filters must validate against the lead FilterSet, so a
    segment never holds a filter the list would reject."""
    filters = {
        key: value for key, value in (filters or {}).items() if key not in NON_FILTER_KEYS and value not in ("", [])
    }
    filterset = segment_filterset(filters=filters, user=actor)
    if not filterset.is_valid():
        raise InvalidSegment(filterset.errors)
    slug = slugify(name)[:120]
    if not slug:
        raise InvalidSegment({"name": ["A segment needs a name with at least one letter or digit."]})
    segment, _ = Segment.objects.update_or_create(
        slug=slug,
        defaults={"name": name.strip(), "filters": filters, "description": description, "shared": shared,
                  "created_by": actor if actor is not None and actor.is_authenticated else None},
    )
    return segment
