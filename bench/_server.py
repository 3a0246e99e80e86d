"""Shared helpers of the benchmark scripts: a fresh PostgreSQL database, manage.py
in a subprocess, a gunicorn server, and the machine description."""

import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}, "
            f"{postgres_settings()}")


POSTGRES_CONF = ROOT / "config" / "postgres" / "funil.conf"


def postgres_settings(database_url="postgres://postgres@127.0.0.1:5432/postgres"):
    """Whether the server runs with config/postgres/funil.conf, the settings the figures
    are meant for: a run on an untuned server (128 MB of shared buffers, 1 GB of WAL)
    measures something else, two to three times slower at a million leads."""
    import psycopg2

    wanted = {}
    for line in POSTGRES_CONF.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            wanted[name] = value
    try:
        connection = psycopg2.connect(database_url, connect_timeout=3)
    except psycopg2.Error:
        return "PostgreSQL settings unknown (server unreachable)"
    differ = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0].split()[0]
            for name, value in wanted.items():
                cursor.execute("SELECT current_setting(%s)", [name])
                now = cursor.fetchone()[0]
                if value[-2:].upper() in ("KB", "MB", "GB") and now[-2:].upper() in ("KB", "MB", "GB"):
                    cursor.execute("SELECT pg_size_bytes(%s) = pg_size_bytes(%s)", [now, value])
                    same = cursor.fetchone()[0]
                else:
                    # wal_compression = on reads back as its method (pglz).
                    same = now.lower() == value.lower() or (name == "wal_compression" and value == "on" != now)
                if not same:
                    differ.append(f"{name} {now} instead of {value}")
    finally:
        connection.close()
    if differ:
        return f"PostgreSQL {version} NOT as in config/postgres/funil.conf ({'; '.join(differ)})"
    return f"PostgreSQL {version} with config/postgres/funil.conf"


def bench_env(database_url, redis_url, **extra):
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def recreate_database(database_url):
    url = urlparse(database_url)
    name = url.path.lstrip("/")
    admin = url._replace(path="/postgres").geturl()
    import psycopg2

    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def manage(env, *args, capture=False):
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, text=True,
        capture_output=capture, check=False,
    )
    if result.returncode:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{result.stdout or ''}{result.stderr or ''}")
    return result.stdout


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """gunicorn as the Docker image runs it: ``workers`` processes of ``threads`` threads
    each (gthread when threads > 1; 1 = sync workers)."""

    def __init__(self, env, workers=2, threads=4, extra_args=()):
        self.env = env
        self.port = free_port()
        self.workers = workers
        threading = ["--worker-class", "gthread", "--threads", str(threads)] if threads > 1 else []
        self.extra_args = threading + list(extra_args)
        self.process = None

    def __enter__(self):
        gunicorn = shutil.which("gunicorn", path=str(Path(PYTHON).parent)) or "gunicorn"
        self.process = subprocess.Popen(
            [gunicorn, "config.wsgi", "--workers", str(self.workers), "--bind", f"127.0.0.1:{self.port}",
             "--log-level", "warning", "--keep-alive", "30", *self.extra_args],
            cwd=ROOT, env=self.env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        sys.exit("gunicorn did not start")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
