"""The send window, pure: weekdays and hours in a time zone."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def next_in_window(at, *, days, from_hour, until_hour, time_zone):
    """The first moment at or after ``at`` (aware) that falls on one of ``days``
    (0 = Monday) between ``from_hour`` (inclusive) and ``until_hour`` (exclusive),
    local time in ``time_zone``. Returns an aware datetime in the same zone as ``at``."""
    zone = ZoneInfo(time_zone)
    local = at.astimezone(zone)
    allowed = set(days) or set(range(7))
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        if day.weekday() not in allowed:
            continue
        start = datetime.combine(day, time(from_hour), zone)
        end = (datetime.combine(day + timedelta(days=1), time(0), zone) if until_hour >= 24
               else datetime.combine(day, time(until_hour), zone))
        if offset == 0:
            if start <= local < end:
                return at
            if local < start:
                return start.astimezone(at.tzinfo)
            continue
        return start.astimezone(at.tzinfo)
    return at  # unreachable with at least one allowed day
