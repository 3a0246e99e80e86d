"""Short per-process caches of the configuration the capture path reads on every
submission (the form by its slug, the active webhook endpoints).

Each gunicorn worker keeps its own copy for ``SECONDS``: a marketer's change (a form
deactivated, its fields or origins edited, an endpoint added or paused) reaches every
worker within that bound. The services that make such changes forget the copy of
their own process at once. The active ruleset has its own check (exact, not timed):
``scoring.services.active_ruleset``.
"""

import threading
import time

SECONDS = 5.0
MAX_KEYS = 1000

_registry = []


class TimedCache:
    """``get(key, load)``: ``load(key)``'s value, kept for ``SECONDS``. A None value
    (e.g. no such form) is not kept, so unknown keys cannot fill the cache."""

    def __init__(self):
        self._values = {}
        self._lock = threading.Lock()
        _registry.append(self)

    def get(self, key, load):
        entry = self._values.get(key)
        now = time.monotonic()
        if entry is not None and now - entry[0] < SECONDS:
            return entry[1]
        value = load(key)
        if value is not None:
            with self._lock:
                if len(self._values) >= MAX_KEYS:
                    self._values.clear()
                self._values[key] = (now, value)
        return value

    def forget(self, key=None):
        with self._lock:
            if key is None:
                self._values.clear()
            else:
                self._values.pop(key, None)


def forget_all():
    for cache in _registry:
        cache.forget()
