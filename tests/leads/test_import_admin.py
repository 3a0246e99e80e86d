"""The CSV import from admin: upload, column mapping, a worker, progress, report."""

import csv
import io
import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from leads import importer
from leads.models import ImportJob, Lead

from ..factories import FormFactory

pytestmark = pytest.mark.django_db

FILE = (
    "Nome;E-mail;Celular;Empresa;Estado\r\n"
    "Conceição Araújo;conceicao@x.com.br;(11) 98765-4321;Paletes São João;São Paulo\r\n"
    "Bruno;bruno@;;;SP\r\n"
    "Carla;carla@x.com.br;;Selecione;RJ\r\n"
).encode("cp1252")


@pytest.fixture
def form(db):
    return FormFactory(fields=["email", "name", "phone", "company", "state"])


@pytest.fixture
def queued(monkeypatch):
    """The broker is the edge: record what would be sent to a worker."""
    sent = []
    monkeypatch.setattr("leads.tasks.run_import_job.delay", lambda *args, **kwargs: sent.append((args, kwargs)))
    return sent


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path


def upload(client, form, content=FILE, name="feira.csv", empty="Selecione, -"):
    return client.post("/admin/leads/importjob/add/", {
        "form": form.pk, "file": SimpleUploadedFile(name, content, content_type="text/csv"), "empty_values": empty,
    })


def test_a_marketer_uploads_maps_and_a_worker_imports_with_the_report_and_the_rejected_rows(
    client, marketer, form, queued, django_capture_on_commit_callbacks,
):
    client.force_login(marketer)
    assert client.get("/admin/leads/importjob/add/").status_code == 200

    response = upload(client, form)
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/leads/importjob/{job.pk}/mapping/"
    assert (job.status, job.encoding, job.delimiter, job.created_by) == ("mapping", "cp1252", ";", marketer)
    assert job.header == ["Nome", "E-mail", "Celular", "Empresa", "Estado"]
    assert job.columns == ["name", "email", None, "company", "state"]  # "Celular" is not a field's name
    assert job.empty_values == ["Selecione", "-"]

    page = client.get(f"/admin/leads/importjob/{job.pk}/mapping/").content.decode()
    assert '<select name="column-1" id="column-1">' in page
    assert '<option value="email" selected>' in page
    assert "Conceição Araújo" in page  # the preview, decoded from cp1252

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/leads/importjob/{job.pk}/mapping/", {
            "column-0": "name", "column-1": "email", "column-2": "phone", "column-3": "company", "column-4": "state",
        })
    assert response["Location"] == f"/admin/leads/importjob/{job.pk}/progress/"
    job.refresh_from_db()
    assert (job.status, job.columns) == ("pending", ["name", "email", "phone", "company", "state"])
    assert queued == [((job.pk,), {})]
    pending = client.get(f"/admin/leads/importjob/{job.pk}/progress.json").json()
    assert (pending["status"], pending["progress"], pending["finished"], pending["waiting"]) == (
        "pending", 0, False, False)

    importer.import_job_run(job_id=job.pk, worker="test-worker")  # what the task does

    state = client.get(f"/admin/leads/importjob/{job.pk}/progress.json").json()
    assert {key: state[key] for key in ("status", "progress", "rows", "created", "rejected", "finished")} == {
        "status": "done", "progress": 100, "rows": 3, "created": 2, "rejected": 1, "finished": True}
    lead = Lead.objects.get(email="conceicao@x.com.br")
    assert (lead.first_name, lead.phone, lead.state, lead.form) == ("Conceição", "+5511987654321", "SP", form)
    assert Lead.objects.get(email="carla@x.com.br").company == ""  # "Selecione" read as empty

    page = client.get(f"/admin/leads/importjob/{job.pk}/progress/").content.decode()
    assert "Done: 3 rows, 2 new leads, 0 merged into existing leads, 1 rejected." in page
    assert "<td>3</td><td>email: Enter a valid email address.</td>" in page
    download = client.get(state["rejected_url"])
    assert download["Content-Disposition"] == 'attachment; filename="feira.rejected.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode("utf-8-sig")), delimiter=";"))
    assert rows == [["Nome", "E-mail", "Celular", "Empresa", "Estado", "line", "errors"],
                    ["Bruno", "bruno@", "", "", "SP", "3", "email: Enter a valid email address."]]


def test_a_mapping_without_email_or_phone_is_refused_and_the_job_waits(client, marketer, form, queued):
    client.force_login(marketer)
    upload(client, form)
    job = ImportJob.objects.get()
    response = client.post(f"/admin/leads/importjob/{job.pk}/mapping/", {"column-0": "name", "column-1": ""})
    assert response.status_code == 200
    assert "Map a column to email or phone" in response.content.decode()
    job.refresh_from_db()
    assert job.status == "mapping" and not queued
    # Two columns to one field:
    response = client.post(f"/admin/leads/importjob/{job.pk}/mapping/", {"column-1": "email", "column-2": "email"})
    assert "both go to &#x27;email&#x27;" in response.content.decode()


def test_a_file_that_is_not_csv_is_refused_at_the_upload(client, marketer, form):
    client.force_login(marketer)
    response = upload(client, form, content=b"\n\n\n", name="vazio.csv")
    assert response.status_code == 200
    assert "The file is empty: it has no header line." in response.content.decode()
    assert not ImportJob.objects.exists()


def test_only_people_allowed_to_import_see_the_import_pages(client, rep, form, marketer):
    client.force_login(marketer)
    upload(client, form)
    job = ImportJob.objects.get()
    rep.is_staff = True
    rep.save()
    client.force_login(rep)
    assert client.get("/admin/leads/importjob/add/").status_code == 403
    assert client.get(f"/admin/leads/importjob/{job.pk}/progress.json").status_code == 403
    client.logout()
    assert client.get(f"/admin/leads/importjob/{job.pk}/progress/").status_code == 302  # to the login


def test_the_sweep_requeues_pending_jobs_nobody_took_and_stalled_ones(form, queued, tmp_path):
    now = timezone.now()
    path = tmp_path / "x.csv"
    path.write_text("email\nx@y.com.br\n", encoding="utf-8")

    def job(status, heartbeat):
        return ImportJob.objects.create(form=form, file_name="x.csv", path=str(path), header=["email"],
                                        columns=["email"], status=status, heartbeat_at=heartbeat)

    lost = job("pending", now - timedelta(minutes=5))
    job("pending", now - timedelta(seconds=10))  # just queued: its message is on its way
    dead = job("running", now - timedelta(minutes=30))
    job("running", now - timedelta(seconds=30))  # its worker reports progress
    job("done", now - timedelta(days=1))
    job("mapping", None)
    assert importer.import_jobs_sweep(now=now) == [lost.pk, dead.pk]
    assert queued == [((lost.pk,), {"take_over_stalled": True}), ((dead.pk,), {"take_over_stalled": True})]


def test_a_job_taken_over_from_a_dead_worker_resumes_after_its_last_committed_line(form, tmp_path):
    path = tmp_path / "lista.csv"
    path.write_text("email;nome\n" + "".join(f"p{i}@x.com.br;P{i}\n" for i in range(10)) + "ruim@;R\n",
                    encoding="utf-8")
    job = ImportJob.objects.create(
        form=form, file_name="lista.csv", path=str(path), header=["email", "nome"], columns=["email", "name"],
        status="pending", bytes_total=path.stat().st_size,
    )
    # A first worker commits rows up to line 5, then dies.
    importer.import_job_run(job_id=job.pk, worker="first", batch_size=4)
    job.refresh_from_db()
    ImportJob.objects.filter(pk=job.pk).update(
        status="running", last_line=5, rows_done=4, created_count=4, rejected_count=0, rejected_sample=[],
        heartbeat_at=timezone.now() - timedelta(hours=1), finished_at=None)
    Lead.objects.filter(email__in=[f"p{i}@x.com.br" for i in range(4, 10)]).delete()

    assert importer.import_job_run(job_id=job.pk, worker="second").status == "running"  # not stalled: refused
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    job = importer.import_job_run(job_id=job.pk, worker="second", take_over_stalled=True)
    assert (job.status, job.worker, job.rows_done, job.created_count, job.rejected_count) == (
        "done", "second", 11, 10, 1)
    assert Lead.objects.count() == 10
    with open(job.rejected_path, encoding="utf-8-sig") as handle:
        assert handle.read().splitlines() == [
            "email;nome;line;errors", "ruim@;R;12;email: Enter a valid email address."]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_an_import_started_in_admin(client, celery_worker_process, monkeypatch):
    from django.contrib.auth.models import Group

    from leads import roles
    from leads.tasks import run_import_job

    from ..factories import UserFactory

    form = FormFactory(fields=["email", "name"])
    user = UserFactory(username="mkt", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.MARKETING))
    monkeypatch.setattr(importer, "_enqueue", lambda job_id: run_import_job.apply_async(
        args=[job_id], queue=celery_worker_process.queue))
    client.force_login(user)
    content = ("email;name\n" + "".join(f"w{i}@x.com.br;W {i}\n" for i in range(500))).encode()
    upload(client, form, content=content)
    job = ImportJob.objects.get()
    client.post(f"/admin/leads/importjob/{job.pk}/mapping/", {"column-0": "email", "column-1": "name"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not client.get(
            f"/admin/leads/importjob/{job.pk}/progress.json").json()["finished"]:
        time.sleep(0.3)
    job.refresh_from_db()
    assert job.status == "done", f"{job.status} {job.error}\n{celery_worker_process.log()}"
    assert (job.created_count, job.worker.split("@")[0]) == (500, celery_worker_process.queue)
    assert Lead.objects.count() == 500


def test_the_import_pages_speak_portuguese_to_a_pt_br_browser(client, marketer, form):
    client.force_login(marketer)
    page = client.get("/admin/leads/importjob/add/", HTTP_ACCEPT_LANGUAGE="pt-br").content.decode()
    assert "Enviar e continuar" in page and "Valores lidos como vazios" in page
    upload(client, form)
    job = ImportJob.objects.get()
    page = client.get(f"/admin/leads/importjob/{job.pk}/mapping/", HTTP_ACCEPT_LANGUAGE="pt-br").content.decode()
    assert "(ignorar esta coluna)" in page and "Iniciar a importação" in page


def test_an_import_the_database_interrupts_goes_back_to_pending_and_the_sweep_resumes_it(
        form, tmp_path, queued, other_writer):
    """The server ends the import's connection mid-batch (here: its backend, waiting for
    a lead another writer holds, is terminated): the job is not failed; it is pending,
    the sweep queues it after the grace, and the next run completes it."""
    import threading

    from django.db import OperationalError

    from ..factories import LeadFactory

    held = LeadFactory(email="p3@x.com.br")
    path = tmp_path / "lista.csv"
    path.write_text("email;nome\n" + "".join(f"p{i}@x.com.br;P{i}\n" for i in range(6)), encoding="utf-8")
    job = ImportJob.objects.create(
        form=form, file_name="lista.csv", path=str(path), header=["email", "nome"], columns=["email", "name"],
        status="pending", bytes_total=path.stat().st_size,
    )
    errors = []

    def run():
        from django.db import connection as own

        try:
            importer.import_job_run(job_id=job.pk, worker="first")
        except OperationalError as exc:
            errors.append(exc)
        finally:
            own.close()

    other_writer.execute("BEGIN")
    other_writer.execute("SELECT id FROM leads_lead WHERE id = %s FOR UPDATE", [held.pk])
    runner = threading.Thread(target=run)
    runner.start()
    waiting = other_writer.blocked_backend()
    assert waiting
    other_writer.execute("SELECT pg_terminate_backend(%s)", [waiting])
    other_writer.execute("ROLLBACK")
    runner.join(timeout=60)
    assert errors
    job.refresh_from_db()
    assert (job.status, job.worker, job.rows_done) == ("pending", "", 0)
    later = timezone.now() + timedelta(seconds=importer.PENDING_GRACE_SECONDS + 1)
    assert importer.import_jobs_sweep(now=later) == [job.pk]
    job = importer.import_job_run(job_id=job.pk, worker="second", take_over_stalled=True)
    assert (job.status, job.rows_done, job.created_count, job.updated_count) == ("done", 6, 5, 1)
    assert Lead.objects.count() == 6
