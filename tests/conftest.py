"""Shared fixtures. Tests run on the real database (SQLite locally, PostgreSQL in CI).

Tests that need a real service (Redis, PostgreSQL, a Celery worker, a browser) call
``require_service``: it skips when the service is missing, but under
``REQUIRE_SERVICES=1`` (CI) it fails, so nothing skips silently.
"""

import os

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from leads import roles

from .factories import UserFactory

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def require_service(available, what):
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} not available")


def using_postgres():
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


@pytest.fixture
def require_postgres():
    require_service(using_postgres(), "PostgreSQL (set DATABASE_URL)")


class OtherWriter:
    """A second connection to the test database, standing for another writer: it runs
    its own transaction (autocommit until ``begin``) and can tell which backend is
    waiting for a lock it holds."""

    def __init__(self):
        import psycopg2
        from django.db import connection

        self.connection = psycopg2.connect(**connection.get_connection_params())
        self.connection.autocommit = True
        self.cursor = self.connection.cursor()

    def execute(self, sql, params=None):
        self.cursor.execute(sql, params)
        return self.cursor

    def blocked_backend(self, timeout=10.0):
        """The pid of a backend waiting for one of this writer's locks, or None."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.execute("SELECT pg_stat_clear_snapshot()")  # a fresh view, even inside a transaction
            row = self.execute("SELECT pid FROM pg_stat_activity "
                               "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))").fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
        return None


@pytest.fixture
def other_writer(transactional_db, require_postgres):
    writer = OtherWriter()
    yield writer
    writer.connection.close()


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL", "")
    reachable = False
    if url:
        import redis

        try:
            reachable = redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError:
            reachable = False
    require_service(reachable, "Redis (set REDIS_URL)")
    return url


def _user_in(group_name, **kwargs):
    user = UserFactory(**kwargs)
    user.groups.add(Group.objects.get(name=group_name))
    return user


@pytest.fixture
def rep(db):
    return _user_in(roles.SALES, username="rep", first_name="Rita", last_name="Rep")


@pytest.fixture
def other_rep(db):
    return _user_in(roles.SALES, username="rep2", first_name="Otto", last_name="Rep")


@pytest.fixture
def manager(db):
    return _user_in(roles.SALES_MANAGERS, username="manager", is_staff=True)


@pytest.fixture
def marketer(db):
    return _user_in(roles.MARKETING, username="marketer", is_staff=True)


def database_url_for_subprocess():
    """A URL reaching the database this test runs on (the test database), for child
    processes such as a Celery worker or gunicorn."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class CeleryWorkerProcess:
    """A real ``celery worker`` child process on its own queue, reading the test database."""

    def __init__(self, broker_url, queue, extra_env=None):
        self.broker_url = broker_url
        self.queue = queue
        self.extra_env = extra_env or {}
        self.process = None
        self.log_path = None

    def start(self, timeout=30):
        import subprocess
        import sys
        import tempfile
        import time

        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url_for_subprocess(),
            "CELERY_BROKER_URL": self.broker_url,
            "REDIS_URL": self.broker_url,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = log.name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
             "--queues", self.queue, "--hostname", f"{self.queue}@%h", "--without-mingle",
             "--without-gossip", "--loglevel", "INFO"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Celery worker exited early:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"Celery worker not ready after {timeout}s:\n{self.log()}")

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def kill(self, sig=None):
        import signal

        if self.process and self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except Exception:  # noqa: BLE001 - a worker that will not stop is killed
                self.process.kill()
                self.process.wait()


@pytest.fixture
def celery_worker_process(transactional_db, redis_url, require_postgres):
    """Start a real worker against Redis on a queue of its own; stop it afterwards."""
    import uuid

    worker = CeleryWorkerProcess(redis_url, queue=f"pytest-{uuid.uuid4().hex[:10]}")
    worker.start()
    yield worker
    worker.kill()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache: every test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _forget_cached_ruleset():
    """The active ruleset, capture forms and webhook endpoints are cached per process
    for a few seconds; tests start clean."""
    from leads.hotcache import forget_all
    from scoring.services import forget_active_ruleset

    forget_active_ruleset()
    forget_all()
    yield
    forget_active_ruleset()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium driven by Playwright, headless. Skips without it, fails under
    REQUIRE_SERVICES=1. Module-scoped: one browser per test module.

    Playwright's sync API runs an event loop in the test's thread, and Django then
    refuses synchronous ORM calls (the tests' own, and the database set-up and flush
    around each test). The module's tests allow them; the variable is removed when the
    module ends, so it never reaches other tests (nor ``check --deploy``, which refuses it)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require_service(sync_playwright is not None and os.path.exists(CHROMIUM), f"Playwright and {CHROMIUM}")
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture
def receiver(settings):
    """A real HTTP server on a free local port that records what webhooks post to it
    (tests/leads/test_webhooks.py, tests/scoring/test_rescore_webhooks.py)."""
    from tests.leads.test_webhooks import Receiver

    settings.FUNIL_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    server = Receiver()
    yield server
    server.close()
