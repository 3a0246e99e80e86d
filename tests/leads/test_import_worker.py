"""An admin import run where a Celery worker runs it: inside a daemonic process (a
prefork pool's child), which multiprocessing forbids to start processes of its own.

The import must then clean its rows in the process itself; the command line keeps its
forked cleaning processes."""

import multiprocessing
import threading
import time
import uuid
from unittest import mock

import pytest
from django.db import connections

from leads import importer
from leads.models import ImportJob, Lead
from tests.conftest import CeleryWorkerProcess

from ..factories import FormFactory

ROWS = 300
CONTENT = "E-mail;Nome;Estado\n" + "".join(
    f"d{i}@x.com.br;Pessoa {i};{'SP' if i % 10 else 'Nárnia'}\n" for i in range(ROWS))  # every 10th rejected


@pytest.fixture
def cores(monkeypatch):
    """A machine with several cores, so that the parallel path is the default one."""
    monkeypatch.setattr(importer.os, "cpu_count", lambda: 4)


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path


def pending_job(tmp_path, form):
    path = tmp_path / "feira.csv"
    path.write_text(CONTENT, encoding="utf-8")
    csv_file = importer.CsvFile(path)
    return ImportJob.objects.create(
        form=form, file_name=path.name, path=str(path), encoding=csv_file.encoding, delimiter=csv_file.delimiter,
        header=csv_file.header, columns=importer.auto_columns(csv_file.header, form), status="pending",
        bytes_total=csv_file.size,
    )


def in_a_daemonic_process(function, timeout=120):
    """``function()`` run in a forked daemonic child, as a Celery prefork worker runs a
    task; its result (or the exception it raised) comes back through a pipe. The child
    opens its own database connection (on SQLite, it works on a copy of the in-memory
    test database, hence the pipe)."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def target():
        try:
            writer.send(("returned", function()))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            writer.send(("raised", f"{exc.__class__.__name__}: {exc}"))

    connections.close_all()
    child = context.Process(target=target, daemon=True)
    child.start()
    try:
        assert reader.poll(timeout), "the daemonic process sent nothing back"
        return reader.recv()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


def job_outcome(job_id):
    job = ImportJob.objects.get(pk=job_id)
    return {"status": job.status, "rows": job.rows_done, "created": job.created_count,
            "rejected": job.rejected_count, "error": job.error, "leads": Lead.objects.count()}


DONE = {"status": "done", "rows": ROWS, "created": ROWS - ROWS // 10, "rejected": ROWS // 10, "error": "",
        "leads": ROWS - ROWS // 10}


@pytest.mark.django_db(transaction=True)
def test_an_import_job_runs_to_the_end_inside_a_daemonic_process(tmp_path, cores):
    """What a Celery prefork child does with an admin import (before the fix:
    ``AssertionError: daemonic processes are not allowed to have children``, 0 rows)."""
    form = FormFactory(fields=["email", "name", "state"])
    job = pending_job(tmp_path, form)
    assert job.columns == ["email", "name", "state"]

    def run():
        assert multiprocessing.current_process().daemon
        importer.import_job_run(job_id=job.pk, worker="daemonic", batch_size=50)
        return job_outcome(job.pk)

    assert in_a_daemonic_process(run) == ("returned", DONE)


@pytest.mark.django_db(transaction=True)
def test_workers_asked_for_in_a_daemonic_process_clean_in_the_process_instead(tmp_path, cores):
    form = FormFactory(fields=["email", "name", "state"])
    path = tmp_path / "lista.csv"
    path.write_text(CONTENT, encoding="utf-8")

    def run():
        report = importer.import_csv(path=path, form=form, batch_size=50, workers=2)
        return report.rows, report.created, report.rejected, Lead.objects.count()

    assert in_a_daemonic_process(run) == ("returned", (ROWS, ROWS - ROWS // 10, ROWS // 10, ROWS - ROWS // 10))


@pytest.mark.django_db(transaction=True)
def test_cleaning_processes_that_cannot_start_leave_the_rows_to_this_process(tmp_path, cores, monkeypatch):
    """Should the check miss a place where processes cannot start, the pool's refusal
    is caught before any row is handed to it."""
    monkeypatch.setattr(importer, "can_start_processes", lambda: True)
    form = FormFactory(fields=["email", "name", "state"])
    path = tmp_path / "lista.csv"
    path.write_text(CONTENT, encoding="utf-8")

    def run():
        report = importer.import_csv(path=path, form=form, batch_size=50, workers=2)
        return report.rows, report.created, report.rejected

    assert in_a_daemonic_process(run) == ("returned", (ROWS, ROWS - ROWS // 10, ROWS // 10))


def test_the_command_line_keeps_its_cleaning_processes_but_not_a_daemon_or_a_thread(cores):
    assert importer.default_workers() == 4  # manage.py import_leads, bench/import.py
    in_thread = []
    thread = threading.Thread(target=lambda: in_thread.append(importer.default_workers()))  # a "threads" pool
    thread.start()
    thread.join()
    assert in_thread == [0]
    assert in_a_daemonic_process(importer.default_workers) == ("returned", 0)  # a "prefork" pool's child


class PreforkWorker(CeleryWorkerProcess):
    """The test suite's real worker, with the pool production runs (``celery worker``'s
    default, prefork) instead of solo: tasks run in daemonic child processes."""

    def start(self, timeout=30):
        import subprocess

        popen = subprocess.Popen

        def prefork(args, **kwargs):
            args = list(args)
            position = args.index("--pool")
            args[position:position + 2] = ["--pool", "prefork", "--concurrency", "1"]
            return popen(args, **kwargs)

        with mock.patch("subprocess.Popen", prefork):
            return super().start(timeout)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_prefork_worker_runs_an_import_started_in_admin(client, redis_url, require_postgres, monkeypatch,
                                                               marketer):
    from leads.tasks import run_import_job

    worker = PreforkWorker(redis_url, queue=f"pytest-prefork-{uuid.uuid4().hex[:10]}").start()
    try:
        form = FormFactory(fields=["email", "name", "state"])
        monkeypatch.setattr(importer, "_enqueue", lambda job_id: run_import_job.apply_async(
            args=[job_id], queue=worker.queue))
        client.force_login(marketer)
        client.post("/admin/leads/importjob/add/", {
            "form": form.pk, "file": _upload(CONTENT.encode()), "empty_values": ""})
        job = ImportJob.objects.get()
        assert job.columns == ["email", "name", "state"]
        client.post(f"/admin/leads/importjob/{job.pk}/mapping/",
                    {"column-0": "email", "column-1": "name", "column-2": "state"})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not client.get(
                f"/admin/leads/importjob/{job.pk}/progress.json").json()["finished"]:
            time.sleep(0.3)
        assert job_outcome(job.pk) == DONE, worker.log()
        assert ImportJob.objects.get(pk=job.pk).worker.startswith(worker.queue)
    finally:
        worker.kill()


def _upload(content):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("feira.csv", content, content_type="text/csv")
