"""The users of bench/load.py: web forms posting submissions at a steady rate, and
sales reps working their inbox (list, filter, search, open a lead, leave a note).

Every request is also appended to the file named by BENCH_REQUEST_LOG (time, name,
milliseconds, status), so that load.py can split the figures into before, during and
after the rescoring it starts in the middle of the run.
"""

import itertools
import os
import random
import re
import threading
import time
import uuid

from locust import HttpUser, between, constant_throughput, events, task

REQUEST_LOG = os.environ.get("BENCH_REQUEST_LOG")
REPS = os.environ.get("BENCH_REPS", "rep1,rep2").split(",")
PASSWORD = os.environ.get("BENCH_PASSWORD", "bench-password")
FORM = os.environ.get("BENCH_FORM", "load")
LEAD_IDS = int(os.environ.get("BENCH_LEAD_COUNT", "1000"))
SUBMISSIONS_PER_USER = float(os.environ.get("BENCH_SUBMISSIONS_PER_USER", "2"))
_lock = threading.Lock()
_log = open(REQUEST_LOG, "a", buffering=1) if REQUEST_LOG else None  # noqa: SIM115 - lives as long as locust
_numbers = itertools.count()


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None, **kwargs):
    if _log is None:
        return
    status = getattr(response, "status_code", 0) if exception is None else (getattr(response, "status_code", 0) or 0)
    with _lock:
        _log.write(f"{time.time():.3f}\t{name}\t{response_time:.2f}\t{status}\n")


class WebForm(HttpUser):
    """A landing page's form: a new lead, as a browser script posts it."""

    wait_time = constant_throughput(SUBMISSIONS_PER_USER)
    weight = int(os.environ.get("BENCH_FORM_USERS", "10"))

    @task
    def submit(self):
        number = next(_numbers)
        self.client.post(
            f"/api/v1/forms/{FORM}/submissions/",
            json={"name": f"Visitante {number}", "email": f"load-{uuid.uuid4().hex[:12]}@empresa{number % 89}.com.br",
                  "state": random.choice(["SP", "SP", "SP", "RJ", "MG"]), "interest": "paletes PBR",
                  "budget": random.choice(["", "3000", "25000", "R$ 80.000,00"]), "job_title": "Gerente de Compras",
                  "company_size": str(random.choice([10, 60, 300]))},
            headers={"Idempotency-Key": uuid.uuid4().hex, "Accept": "application/json"},
            name="submission",
        )


class SalesRep(HttpUser):
    """A rep at work: the inbox, a filter, a search, a lead, a note."""

    wait_time = between(0.5, 1.5)
    weight = int(os.environ.get("BENCH_REP_USERS", "4"))

    def on_start(self):
        page = self.client.get("/accounts/login/", name="login page")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        self.client.post("/accounts/login/", data={"csrfmiddlewaretoken": token, "username": random.choice(REPS),
                                                    "password": PASSWORD}, name="login",
                         headers={"Referer": self.host + "/accounts/login/"}, allow_redirects=False)
        if "sessionid" not in self.client.cookies:
            raise RuntimeError("the bench rep could not log in")
        self.csrf = self.client.cookies.get("csrftoken", "")

    @task(4)
    def inbox(self):
        self.client.get("/leads/", name="inbox")

    @task(2)
    def filtered(self):
        self.client.get("/leads/?status=disqualified&state=SP&temperature=warm", name="inbox filtered")

    @task(1)
    def search(self):
        self.client.get(f"/leads/?q={random.choice(['silva', 'logística', 'paletes', 'souza'])}", name="search")

    @task(3)
    def lead(self):
        self.client.get(f"/leads/{random.randint(1, LEAD_IDS)}/", name="lead page")

    @task(1)
    def note(self):
        self.client.post(f"/api/v1/leads/{random.randint(1, LEAD_IDS)}/notes/", json={"text": "Liguei; retornar."},
                         headers={"X-CSRFToken": self.csrf, "Referer": self.host + "/leads/"}, name="add note")
