"""Private servers for the fault scripts: a Redis and a PostgreSQL of their own, on free
ports, so that stopping or restarting them disturbs nothing else on the machine; a
Celery worker and beat; and an HTTP client that posts form submissions the way a
browser's script does (JSON, an Idempotency-Key, retries after 503 and lost
connections), from any loopback address."""

import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench._server import PYTHON, ROOT, free_port


def wait_for_port(port, timeout=30, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class PrivateRedis:
    """A redis-server of our own, without persistence, as production's broker and cache."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_for_port(self.port):
            raise RuntimeError("redis-server did not start")
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()  # an outage, not a clean shutdown: queued messages are lost
            self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder, run as the
    postgres user), so the script can restart it while clients post."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="funil-pg-"))
        self.data = self.dir / "data"
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = Path(bins[-1])

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/funil_faults"

    def _as_postgres(self, *args, check=True):
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._ctl("start")
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "funil_faults"],
                       check=True)
        return self

    def _ctl(self, action, *extra):
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w",
                          action, *extra)

    def restart(self, down_seconds=2.0):
        """Stop (fast: sessions are cut), stay down a moment, start again."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self._ctl("start")

    def stop(self):
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Celery:
    """A Celery worker or beat process against the given environment."""

    def __init__(self, env, kind="worker", *extra):
        self.env, self.kind, self.extra = env, kind, list(extra)
        self.process = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"funil-{kind}-", suffix=".log", delete=False)

    def start(self):
        celery = shutil.which("celery", path=str(Path(PYTHON).parent)) or "celery"
        args = [celery, "-A", "config", self.kind, "--loglevel", "INFO"]
        if self.kind == "worker":
            args += ["--concurrency", "2", "--without-mingle", "--without-gossip", "--pool", "prefork"]
        else:
            args += ["--schedule", self.log.name + ".schedule"]
        self.process = subprocess.Popen(args + self.extra, cwd=ROOT, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=60)

    def stop(self):
        """A warm shutdown: SIGTERM to the main process only, which lets the pool finish
        the tasks in hand (a SIGTERM to the whole group would end each child mid-task),
        then SIGKILL to whatever is left of the group after 60 s."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if self.process:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Poster:
    """Posts one submission like a careful client: an Idempotency-Key per submission,
    retried after a 503 or a lost connection, honouring Retry-After (capped)."""

    def __init__(self, port, slug, *, source_address="127.0.0.1", max_wait=2.0, forwarded_for=None):
        self.port, self.slug = port, slug
        self.source_address, self.max_wait, self.forwarded_for = source_address, max_wait, forwarded_for
        self.connection = None

    def _connect(self):
        self.connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(self.source_address, 0)
        )

    def post_once(self, payload, key):
        if self.connection is None:
            self._connect()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": key}
        if self.forwarded_for:
            headers["X-Forwarded-For"] = self.forwarded_for()
        try:
            self.connection.request("POST", f"/api/v1/forms/{self.slug}/submissions/", json.dumps(payload), headers)
            response = self.connection.getresponse()
            response.read()
            return response.status, response.getheader("Retry-After")
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            return None, None

    def post(self, payload, *, give_up_after=120):
        """Post until accepted (or a final answer). Returns (final status, attempts, statuses seen)."""
        key = str(uuid.uuid4())
        seen = []
        deadline = time.monotonic() + give_up_after
        while True:
            status, retry_after = self.post_once(payload, key)
            seen.append(status)
            if status not in (None, 503) or time.monotonic() > deadline:
                return status, len(seen), seen
            wait = float(retry_after) if retry_after else 0.2
            time.sleep(min(wait, self.max_wait))
