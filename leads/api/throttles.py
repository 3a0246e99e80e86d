"""Rate limits of the public form endpoint.

Fixed-window counters in the cache (Redis in production, so every gunicorn worker
counts together), per client address and per form. On Redis both counters are
incremented by one Lua script, so a submission costs one round trip whatever the
rates. DRF's stock throttles keep a list of timestamps per client and re-pickle it on
every request, which grows with the rate allowed.
"""

import functools
import time

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# KEYS: one counter per scope; ARGV: their time-to-live in seconds, in the same order.
# Returns the counts after this request. EXPIRE only on a new key (NX), so a window
# always ends on time.
_INCREMENT_ALL = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[i]) end
end
return counts
"""


def parse_rate(rate):
    """'30/min' -> (30, 60)."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


class CaptureThrottle(BaseThrottle):
    """Per client address and per form, counted together in one round trip.

    The address comes from ``get_ident``, which trusts X-Forwarded-For only as far as
    REST_FRAMEWORK["NUM_PROXIES"] says, so a forged header does not dodge it. The form's
    limit caps a flood aimed at one form, whoever posts."""

    scopes = (("capture_ip", "FUNIL_CAPTURE_RATE_PER_IP"), ("capture_form", "FUNIL_CAPTURE_RATE_PER_FORM"))

    def allow_request(self, request, view):
        now = time.time()
        idents = {"capture_ip": self.get_ident(request), "capture_form": view.kwargs.get("slug", "")}
        keys, ttls, limits, waits = [], [], [], []
        for scope, setting in self.scopes:
            limit, period = parse_rate(getattr(settings, setting))
            window = int(now // period)
            keys.append(f"throttle:{scope}:{idents[scope]}:{window}")
            ttls.append(period + 1)
            limits.append(limit)
            waits.append((window + 1) * period - now)
        counts = increment_all(keys, ttls)
        over = [wait for count, limit, wait in zip(counts, limits, waits, strict=True) if count > limit]
        self._wait = max(over) if over else 0
        return not over

    def wait(self):
        return max(1, round(self._wait))


def client_ident(request):
    """The address the throttle counts (and the submission records)."""
    return CaptureThrottle().get_ident(request)


@functools.cache
def _script(url):
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return client.register_script(_INCREMENT_ALL)


def increment_all(keys, ttls):
    """Count one request in each of ``keys``; returns the counts. One round trip to Redis
    (EVALSHA of a cached script). Redis down: counts of 0, the submission goes through."""
    if settings.REDIS_URL and settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        try:
            return [int(count) for count in _script(settings.REDIS_URL)(keys=keys, args=ttls)]
        except redis.RedisError:
            # Redis down: let the submission through rather than lose it.
            return [0] * len(keys)
    return [_cache_increment(key, ttl) for key, ttl in zip(keys, ttls, strict=True)]


def _cache_increment(key, ttl):
    try:
        return cache.incr(key)
    except ValueError:  # first request of the window
        if cache.add(key, 1, timeout=ttl):
            return 1
        return cache.incr(key)
