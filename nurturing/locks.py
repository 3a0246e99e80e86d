"""Named locks in the database, for jobs that must never run twice at once (two beat
schedulers by mistake, a manual run beside the scheduled one). A lock is a row claimed
with a conditional UPDATE and released by its owner; it expires if the owner dies."""

import contextlib
import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import JobLock


class LockHeld(Exception):
    pass


@contextlib.contextmanager
def job_lock(name, *, ttl=timedelta(hours=1)):
    """Hold the lock ``name`` for the block, or raise LockHeld at once."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    try:
        with transaction.atomic():
            JobLock.objects.get_or_create(name=name, defaults={"locked_until": now - timedelta(seconds=1)})
    except IntegrityError:
        pass
    claimed = JobLock.objects.filter(name=name, locked_until__lt=now).update(
        owner=owner, locked_until=now + ttl, acquired_at=now
    )
    if not claimed:
        raise LockHeld(name)
    try:
        yield owner
    finally:
        JobLock.objects.filter(name=name, owner=owner).update(locked_until=timezone.now() - timedelta(seconds=1))
