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
    assert job.columns == ["name", "email", "phone", "company", "state"]  # "Celular" is what Brazil calls a phone
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


def test_the_mapping_step_matches_uf_and_other_brazilian_headers_by_itself(client, marketer, queued):
    form = FormFactory(fields=["email", "name", "phone", "company", "city", "state"])
    client.force_login(marketer)
    upload(client, form, content="E-mail;Celular;Razão social;Município;UF\r\nx@y.com.br;11987654321;X;Y;SP\r\n"
           .encode())
    job = ImportJob.objects.get()
    assert job.columns == ["email", "phone", "company", "city", "state"]
    page = client.get(f"/admin/leads/importjob/{job.pk}/mapping/").content.decode()
    assert '<option value="state" selected>' in page and '<option value="phone" selected>' in page


def test_the_mapping_step_warns_when_no_column_gives_a_field_the_form_requires(
        client, marketer, queued, django_capture_on_commit_callbacks):
    form = FormFactory(fields=["email", "name", "phone", "company", "state", "consent"], required_fields=["company"],
                       consent_required=True)
    client.force_login(marketer)
    upload(client, form, content=b"E-mail;Nome\r\nx@y.com.br;X\r\n")
    job = ImportJob.objects.get()
    page = client.get(f"/admin/leads/importjob/{job.pk}/mapping/").content.decode()
    assert ("Every row will be rejected: no column gives “Company” (company), “Consent” (consent), which the form "
            "“Contato” requires.") in page
    assert 'name="confirm_missing"' not in page

    response = client.post(f"/admin/leads/importjob/{job.pk}/mapping/", {"column-0": "email", "column-1": "name"})
    page = response.content.decode()
    assert response.status_code == 200 and "The import has not started." in page
    assert 'name="confirm_missing"' in page and "Every row will be rejected" in page
    job.refresh_from_db()
    assert job.status == "mapping" and not queued

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/leads/importjob/{job.pk}/mapping/",
                               {"column-0": "email", "column-1": "name", "confirm_missing": "Start anyway"})
    assert response["Location"] == f"/admin/leads/importjob/{job.pk}/progress/"
    job.refresh_from_db()
    assert job.status == "pending" and queued == [((job.pk,), {})]


def test_a_mapping_that_gives_every_required_field_starts_without_a_warning(client, marketer, queued):
    form = FormFactory(fields=["email", "name", "company"], required_fields=["company", "first_name"])
    client.force_login(marketer)
    upload(client, form, content=b"E-mail;Nome;Empresa\r\nx@y.com.br;X;Y\r\n")
    job = ImportJob.objects.get()
    assert "Every row will be rejected" not in client.get(f"/admin/leads/importjob/{job.pk}/mapping/").content.decode()
    response = client.post(f"/admin/leads/importjob/{job.pk}/mapping/",
                           {"column-0": "email", "column-1": "name", "column-2": "company"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "pending"


def failing_on_batch(monkeypatch, number, exc):
    """The ``number``-th batch of the run raises ``exc`` (the batches before it commit)."""
    run = importer._BatchImporter.run
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise exc
        return run(self, *args, **kwargs)

    monkeypatch.setattr(importer._BatchImporter, "run", flaky)


def pending_job(form, tmp_path, rows=10):
    path = tmp_path / "lista.csv"
    path.write_text("email;nome\n" + "".join(f"p{i}@x.com.br;P{i}\n" for i in range(rows)) + "ruim@;R\n",
                    encoding="utf-8")
    return ImportJob.objects.create(
        form=form, file_name="lista.csv", path=str(path), header=["email", "nome"], columns=["email", "name"],
        status="pending", bytes_total=path.stat().st_size, created_by=None,
    )


def test_a_failed_job_shows_a_plain_message_with_the_details_apart(client, marketer, form, tmp_path, monkeypatch):
    job = pending_job(form, tmp_path)
    failing_on_batch(monkeypatch, 1, AssertionError("daemonic processes are not allowed to have children"))
    with pytest.raises(AssertionError):
        importer.import_job_run(job_id=job.pk, worker="w")
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == (f"{importer.JOB_UNEXPECTED_ERROR}\n\n"
                         "AssertionError: daemonic processes are not allowed to have children")

    client.force_login(marketer)
    state = client.get(f"/admin/leads/importjob/{job.pk}/progress.json").json()
    assert state["error"] == importer.JOB_UNEXPECTED_ERROR and state["finished"]
    page = client.get(f"/admin/leads/importjob/{job.pk}/progress/").content.decode()
    assert f'<p class="errornote" id="job-error">{importer.JOB_UNEXPECTED_ERROR.split(":")[0]}' in page
    assert "<summary>Technical details</summary>" in page
    assert page.index("Technical details") < page.index("AssertionError: daemonic processes")
    assert "Retry the import" in page

    # An error recorded before these messages existed: the same plain message, the text as details.
    ImportJob.objects.filter(pk=job.pk).update(error="AssertionError: daemonic processes are not allowed")
    job.refresh_from_db()
    assert importer.job_error(job) == (importer.JOB_UNEXPECTED_ERROR,
                                       "AssertionError: daemonic processes are not allowed")


def test_a_file_that_cannot_be_read_fails_with_a_message_that_says_so(form, tmp_path):
    job = pending_job(form, tmp_path)
    (tmp_path / "lista.csv").unlink()
    with pytest.raises(importer.ImportFileError):
        importer.import_job_run(job_id=job.pk, worker="w")
    job.refresh_from_db()
    message, details = importer.job_error(job)
    assert (job.status, message) == ("failed", importer.JOB_FILE_ERROR)
    assert details.startswith("Cannot read ") and "lista.csv" in details


def test_a_failed_job_is_retried_from_the_list_and_resumes_after_its_last_committed_line(
        client, marketer, form, tmp_path, monkeypatch, queued, django_capture_on_commit_callbacks):
    job = pending_job(form, tmp_path)
    done = pending_job(form, tmp_path)
    ImportJob.objects.filter(pk=done.pk).update(status="done")
    failing_on_batch(monkeypatch, 2, RuntimeError("boom"))  # after the first batch (lines 2-5) committed
    with pytest.raises(RuntimeError):
        importer.import_job_run(job_id=job.pk, worker="w", batch_size=4)
    job.refresh_from_db()
    assert (job.status, job.last_line, job.created_count) == ("failed", 5, 4)
    monkeypatch.undo()
    monkeypatch.setattr("leads.tasks.run_import_job.delay", lambda *args, **kwargs: queued.append((args, kwargs)))

    client.force_login(marketer)
    changelist = client.get("/admin/leads/importjob/").content.decode()
    assert '<option value="retry">Retry the selected failed imports</option>' in changelist
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/leads/importjob/", {
            "action": "retry", "_selected_action": [job.pk, done.pk]}, follow=True)
    assert "1 failed import will be retried" in response.content.decode()
    job.refresh_from_db()
    assert (job.status, job.error, job.finished_at, job.last_line) == ("pending", "", None, 5)
    assert queued == [((job.pk,), {})]
    assert ImportJob.objects.get(pk=done.pk).status == "done"

    job = importer.import_job_run(job_id=job.pk, worker="w2", batch_size=4)  # what the worker does
    assert (job.status, job.rows_done, job.created_count, job.rejected_count) == ("done", 11, 10, 1)
    assert Lead.objects.count() == 10


def test_a_failed_job_is_retried_from_the_command_line_after_its_last_committed_line(
        form, tmp_path, monkeypatch, queued):
    import io

    from django.core.management import CommandError, call_command

    job = pending_job(form, tmp_path)
    failing_on_batch(monkeypatch, 2, RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        importer.import_job_run(job_id=job.pk, worker="w", batch_size=4)
    monkeypatch.undo()
    monkeypatch.setattr("leads.tasks.run_import_job.delay", lambda *args, **kwargs: queued.append((args, kwargs)))
    with pytest.raises(CommandError) as refused:
        call_command("import_leads", "--job", str(job.pk), stdout=io.StringIO())
    assert str(refused.value) == (f"Import job #{job.pk} failed: {importer.JOB_UNEXPECTED_ERROR} "
                                  "Add --retry to run it again after its last committed line.")
    out = io.StringIO()
    call_command("import_leads", "--job", str(job.pk), "--retry", "--batch-size", "4", stdout=out)
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.created_count, job.rejected_count) == ("done", 11, 10, 1)
    assert "Done: 11 rows, 10 created" in out.getvalue()
    assert queued == []  # run here, not sent to a worker as well
    assert Lead.objects.count() == 10


def test_the_retry_button_puts_a_failed_job_back_to_pending_for_those_who_may_import(
        client, marketer, rep, form, tmp_path, queued, django_capture_on_commit_callbacks):
    job = pending_job(form, tmp_path)
    ImportJob.objects.filter(pk=job.pk).update(status="failed", error="RuntimeError: boom")
    rep.is_staff = True
    rep.save()
    client.force_login(rep)
    assert client.post(f"/admin/leads/importjob/{job.pk}/retry/").status_code == 403
    assert ImportJob.objects.get(pk=job.pk).status == "failed"

    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/leads/importjob/{job.pk}/retry/", follow=True)
    assert "The import will be retried" in response.content.decode()
    job.refresh_from_db()
    assert (job.status, job.error) == ("pending", "") and queued == [((job.pk,), {})]
    assert "Retry the import" not in client.get(f"/admin/leads/importjob/{job.pk}/progress/").content.decode()
    # A job that has not failed is left alone.
    assert importer.import_job_retry(job=job) is False
