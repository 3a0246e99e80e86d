"""Settings for the benchmarks: production settings plus the bare baseline endpoint."""

from config.settings.production import *  # noqa: F403
from config.settings.production import CELERY_BEAT_SCHEDULE, INSTALLED_APPS, env

INSTALLED_APPS = [*INSTALLED_APPS, "bench.bare"]
ROOT_URLCONF = "bench.urls"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

# The fault scripts (bench/faults.py) cannot wait minutes for each sweep: with
# FUNIL_BENCH_FAST_SWEEPS set, the periodic jobs run every few seconds and a job whose
# worker died is taken back after 60 s instead of 10 min. Same code, shorter clocks.
if env.bool("FUNIL_BENCH_FAST_SWEEPS", default=False):
    CELERY_BEAT_SCHEDULE = {
        name: {**entry, "schedule": {"requalify": 3.0}.get(name, 5.0)} for name, entry in CELERY_BEAT_SCHEDULE.items()
    }
    FUNIL_RESCORE_PENDING_GRACE_SECONDS = 5
    FUNIL_RESCORE_HEARTBEAT_TIMEOUT_SECONDS = 60

# The benchmarks talk plain http on loopback: secure-only cookies would never come back.
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
