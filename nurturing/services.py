from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import WorkerHeartbeat


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
