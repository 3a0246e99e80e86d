"""Named job locks: one holder at a time, released by its owner, expiring if it dies."""

import pytest
from django.utils import timezone

from nurturing.locks import LockHeld, job_lock
from nurturing.models import JobLock

pytestmark = pytest.mark.django_db


def test_a_second_holder_is_refused_while_the_first_holds_the_lock():
    with job_lock("requalify"):
        with pytest.raises(LockHeld):
            with job_lock("requalify"):
                pass
        # Another name is another lock.
        with job_lock("due-emails"):
            pass


def test_the_lock_is_free_again_after_the_block_even_when_it_raised():
    with pytest.raises(RuntimeError):
        with job_lock("requalify"):
            raise RuntimeError("the job failed")
    with job_lock("requalify") as owner:
        assert JobLock.objects.get(name="requalify").owner == owner


def test_a_lock_whose_holder_died_expires():
    with job_lock("requalify", ttl=timezone.timedelta(hours=1)):
        # The holder vanished without releasing: its time ran out.
        JobLock.objects.filter(name="requalify").update(locked_until=timezone.now() - timezone.timedelta(seconds=1))
        with job_lock("requalify") as new_owner:
            pass
        assert JobLock.objects.get(name="requalify").owner == new_owner


def test_only_the_owner_releases_the_lock():
    with job_lock("requalify"):
        JobLock.objects.filter(name="requalify").update(locked_until=timezone.now() - timezone.timedelta(seconds=1))
        outer_expired_inner_holds = job_lock("requalify")
        outer_expired_inner_holds.__enter__()
    # The first holder's exit did not free the second holder's lock.
    with pytest.raises(LockHeld):
        with job_lock("requalify"):
            pass
    outer_expired_inner_holds.__exit__(None, None, None)
    with job_lock("requalify"):
        pass
