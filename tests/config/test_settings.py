"""Production settings refuse to start without their secrets and pass `check --deploy`."""

import os
import subprocess
import sys

from django.conf import settings
from django.core.management.utils import get_random_secret_key

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "ALLOWED_HOSTS": "funil.example.com",
    "DATABASE_URL": "postgres://funil:secret@db.example.com:5432/funil",
    "REDIS_URL": "redis://redis.example.com:6379/0",
}


def manage(*args, env):
    # DJANGO_ALLOW_ASYNC_UNSAFE: set by the browser tests in this process, never in production.
    inherited = ("SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL",
                 "DJANGO_ALLOW_ASYNC_UNSAFE")
    base = {key: value for key, value in os.environ.items() if key not in inherited}
    return subprocess.run(
        [sys.executable, "manage.py", *args], env={**base, **env}, cwd=settings.BASE_DIR,
        capture_output=True, text=True, timeout=120,
    )


def test_production_check_deploy_reports_no_warnings():
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env={**PRODUCTION_ENV, "SECRET_KEY": get_random_secret_key() + get_random_secret_key()},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", env=PRODUCTION_ENV)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_to_fall_back_to_sqlite_or_the_filesystem_broker():
    env = {**PRODUCTION_ENV, "SECRET_KEY": get_random_secret_key()}
    del env["REDIS_URL"]
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


def test_a_secret_key_that_starts_with_a_dollar_is_taken_as_it_is():
    env = {**PRODUCTION_ENV, "SECRET_KEY": "$" + get_random_secret_key()}
    result = manage("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == env["SECRET_KEY"]
