"""Rate limits of the public form endpoint.

Fixed-window counters in the cache (Redis in production, so every gunicorn worker
counts together): one atomic INCR per request and scope, whatever the rate. DRF's
stock throttles keep a list of timestamps per client and re-pickle it on every
request, which grows with the rate allowed.
"""

import functools
import time

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate):
    """'30/min' -> (30, 60)."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


class FixedWindowThrottle(BaseThrottle):
    scope = ""
    setting = ""

    def ident_for(self, request, view):
        raise NotImplementedError

    def allow_request(self, request, view):
        limit, period = parse_rate(getattr(settings, self.setting))
        now = time.time()
        window = int(now // period)
        key = f"throttle:{self.scope}:{self.ident_for(request, view)}:{window}"
        self._wait = (window + 1) * period - now
        return _increment(key, period + 1) <= limit

    def wait(self):
        return max(1, round(self._wait))


class CaptureByIPThrottle(FixedWindowThrottle):
    """Per client address. ``get_ident`` trusts X-Forwarded-For only as far as
    REST_FRAMEWORK["NUM_PROXIES"] says, so a forged header does not dodge it."""

    scope = "capture_ip"
    setting = "FUNIL_CAPTURE_RATE_PER_IP"

    def ident_for(self, request, view):
        return self.get_ident(request)


class CaptureByFormThrottle(FixedWindowThrottle):
    """Per form, whoever posts: caps a flood aimed at one form."""

    scope = "capture_form"
    setting = "FUNIL_CAPTURE_RATE_PER_FORM"

    def ident_for(self, request, view):
        return view.kwargs.get("slug", "")


@functools.cache
def _redis(url):
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def _increment(key, ttl):
    """Count one request in ``key``; one round trip to Redis (INCR and EXPIRE pipelined)."""
    if settings.REDIS_URL and settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        try:
            pipe = _redis(settings.REDIS_URL).pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)
            return pipe.execute()[0]
        except redis.RedisError:
            # Redis down: let the submission through rather than lose it.
            return 0
    try:
        return cache.incr(key)
    except ValueError:  # first request of the window
        if cache.add(key, 1, timeout=ttl):
            return 1
        return cache.incr(key)
