"""Set-based rescoring gives every lead the verdict the pure engine gives it."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from leads import services as lead_services
from leads.models import Lead, LeadEvent, LeadStatus, StatusSetBy
from scoring import services
from scoring.models import RescoreJob, Ruleset

from ..factories import LeadFactory, ReasonFactory
from .factories import pallet_ruleset

pytestmark = pytest.mark.django_db

PEOPLE = [
    dict(state="SP", interest="Paletes PBR", job_title="Diretor de Logística", company_size=120,
         budget=Decimal("20000")),
    dict(state="SP", interest="palete sob medida", job_title="Analista", company_size=10, budget=Decimal("9000")),
    dict(state="RJ", interest="paletes", job_title="Gerente", company_size=500, budget=Decimal("90000")),
    dict(state="SP", interest="manutenção de elevadores", job_title="Sócio", company_size=80),
    dict(state="SP", interest="PALETES de madeira", job_title="Gerente de compras", budget=Decimal("1000")),
    dict(state="", interest="paletes", job_title="CEO", company_size=60, budget=None),
    dict(state="SP", interest="", job_title="", company_size=None, budget=None),
]


def make_leads():
    return [LeadFactory(email=f"p{i}@x.com.br", **person) for i, person in enumerate(PEOPLE)]


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_activation_rescores_every_lead_as_the_engine_would(chunk_size):
    leads = make_leads()
    ruleset = pallet_ruleset()
    job = services.ruleset_activate(ruleset=ruleset)
    job = services.rescore_job_run(job_id=job.pk, chunk_size=chunk_size)
    assert job.status == RescoreJob.Status.DONE
    assert job.progress == 100
    rules = services.ruleset_to_engine(ruleset)
    for lead in leads:
        lead.refresh_from_db()
        verdict = services.lead_evaluate(lead=lead, rules=rules, now=timezone.now())
        assert (lead.status, lead.reason.slug if lead.reason else "", lead.score, lead.temperature) == (
            verdict.status, verdict.reason, verdict.score, verdict.temperature
        ), lead.email
    statuses = {lead.email: lead.status for lead in Lead.objects.all()}
    assert statuses == {
        "p0@x.com.br": "qualified", "p1@x.com.br": "disqualified", "p2@x.com.br": "out_of_focus",
        "p3@x.com.br": "out_of_focus", "p4@x.com.br": "disqualified", "p5@x.com.br": "qualified",
        "p6@x.com.br": "disqualified",
    }
    assert Lead.objects.get(email="p5@x.com.br").temperature == "warm"
    assert Lead.objects.get(email="p0@x.com.br").temperature == "warm"
    moved = LeadEvent.objects.filter(kind=LeadEvent.Kind.STATUS_CHANGED).count()
    assert moved == job.status_changes == len(PEOPLE)


def test_a_rerun_changes_nothing_and_writes_no_events():
    make_leads()
    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk)
    events = LeadEvent.objects.count()
    again = services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk)
    assert (again.leads_changed, again.status_changes) == (0, 0)
    assert again.leads_seen == len(PEOPLE)
    assert LeadEvent.objects.count() == events


def test_a_rerun_writes_no_lead_row_and_leaves_updated_at_alone():
    make_leads()
    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk, chunk_size=3)
    stamps = dict(Lead.objects.values_list("pk", "updated_at"))
    events = LeadEvent.objects.count()
    job = services.rescore_job_create(ruleset=ruleset)
    with CaptureQueriesContext(connection) as queries:
        again = services.rescore_job_run(job_id=job.pk, chunk_size=3)
    writes = [query["sql"] for query in queries.captured_queries
              if any(write in query["sql"].upper().replace('"', "")
                     for write in ("UPDATE LEADS_LEAD ", "INSERT INTO LEADS_LEADEVENT"))]
    assert writes == []
    assert dict(Lead.objects.values_list("pk", "updated_at")) == stamps
    assert LeadEvent.objects.count() == events
    # Its progress is still complete: every lead seen, the job done.
    assert (again.status, again.leads_seen, again.leads_changed, again.progress) == (
        RescoreJob.Status.DONE, len(PEOPLE), 0, 100)


def test_a_chunk_that_changes_leads_after_chunks_that_did_not_records_their_progress_too():
    leads = make_leads()
    ruleset = pallet_ruleset()
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk, chunk_size=2)
    last = leads[-1]
    Lead.objects.filter(pk=last.pk).update(state="RJ")  # now out of the service area
    again = services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk, chunk_size=2)
    assert (again.leads_seen, again.leads_changed, again.status_changes) == (len(PEOPLE), 1, 1)
    assert again.transitions == {"status:disqualified>out_of_focus": 1}
    last.refresh_from_db()
    assert last.status == LeadStatus.OUT_OF_FOCUS


def test_the_chunk_size_shrinks_after_a_slow_transaction_and_grows_after_fast_ones_within_bounds():
    sizer = services.ChunkSizer()
    assert sizer.size() == 1250
    assert sizer.record(1250, 1.5) < 1250  # slower than 0.75 s: smaller
    for _ in range(10):
        sizer.record(sizer.size(), 30.0)
    assert sizer.size() == 500  # never below the floor, however slow
    assert sizer.record(500, 0.5) == 500  # within the band: unchanged
    for _ in range(20):
        sizer.record(sizer.size(), 0.05)
    assert sizer.size() == 5000  # never above the ceiling, however fast
    assert sizer.record(5000, 0.0) == 5000  # a chunk that wrote nothing
    fixed = services.FixedChunks(3)
    assert (fixed.record(3, 30.0), fixed.record(3, 0.0)) == (3, 3)


def test_chunk_sizes_adapt_during_a_job_and_cover_every_lead_once(monkeypatch):
    make_leads()
    sizes = []
    sizer = services.ChunkSizer(size=2, low=1, high=4)
    original = sizer.record

    def record(size, seconds):
        sizes.append(size)
        return original(size, 10.0 if size > 2 else 0.0)  # a chunk over two leads is "slow"

    monkeypatch.setattr(sizer, "record", record)
    monkeypatch.setattr(services, "ChunkSizer", lambda: sizer)
    job = services.rescore_job_run(job_id=services.ruleset_activate(ruleset=pallet_ruleset()).pk)
    assert job.status == RescoreJob.Status.DONE and job.leads_seen == len(PEOPLE)
    assert sum(sizes) == job.last_id - job.first_id and 3 in sizes and 1 in sizes
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.STATUS_CHANGED).count() == len(PEOPLE)


def test_a_persons_decision_is_never_overwritten_but_its_score_updates(rep):
    lead = LeadFactory(**PEOPLE[2])  # out of SP: the rules would say out of focus
    lead = lead_services.lead_change_status(lead=lead, status=LeadStatus.QUALIFIED, actor=rep)
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=pallet_ruleset()).pk)
    lead.refresh_from_db()
    assert (lead.status, lead.status_set_by) == (LeadStatus.QUALIFIED, StatusSetBy.PERSON)
    assert lead.score == 50


def test_converted_leads_stay_converted():
    lead = lead_services.lead_change_status(lead=LeadFactory(**PEOPLE[3]), status=LeadStatus.CONVERTED)
    services.rescore_job_run(job_id=services.ruleset_activate(ruleset=pallet_ruleset()).pk)
    lead.refresh_from_db()
    assert lead.status == LeadStatus.CONVERTED


def test_activating_archives_the_previous_ruleset():
    first = pallet_ruleset()
    services.ruleset_activate(ruleset=first)
    second = pallet_ruleset()
    services.ruleset_activate(ruleset=second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == (Ruleset.State.ARCHIVED, Ruleset.State.ACTIVE)
    assert second.version == 2


def test_impact_preview_counts_moves_without_writing():
    make_leads()
    ruleset = pallet_ruleset()
    impact = services.ruleset_impact(ruleset=ruleset)
    assert impact["status"][("new", "out_of_focus")] == 2
    assert impact["status"][("new", "qualified")] == 2
    assert impact["status"][("new", "disqualified")] == 3
    assert set(Lead.objects.values_list("status", flat=True)) == {"new"}
    assert len(impact["samples"][("new", "qualified")]) == 2


def test_requalification_brings_back_due_leads_that_now_qualify(rep):
    ruleset = pallet_ruleset()
    services.ruleset_activate(ruleset=ruleset)
    due = LeadFactory(email="due@x.com.br", **PEOPLE[0])
    later = LeadFactory(email="later@x.com.br", **PEOPLE[0])
    not_now = ReasonFactory(slug="no_immediate_need", label="Sem necessidade agora", kind="disqualified")
    yesterday, next_month = timezone.now() - timezone.timedelta(days=1), timezone.now() + timezone.timedelta(days=30)
    for lead, when in ((due, yesterday), (later, next_month)):
        lead_services.lead_change_status(
            lead=lead, status=LeadStatus.DISQUALIFIED, actor=rep, reason=not_now, requalify_at=when
        )
    job = services.rescore_job_run(
        job_id=services.rescore_job_create(ruleset=ruleset, kind=RescoreJob.Kind.REQUALIFICATION).pk
    )
    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, due.status_set_by, due.requalify_at) == (LeadStatus.QUALIFIED, StatusSetBy.RULES, None)
    requalified = due.events.filter(kind=LeadEvent.Kind.REQUALIFIED, from_status="disqualified", to_status="qualified")
    assert requalified.exists()
    assert (later.status, later.status_set_by) == (LeadStatus.DISQUALIFIED, StatusSetBy.PERSON)
    assert job.status_changes == 1


def test_a_run_that_lost_its_claim_stops_and_the_run_that_took_over_finishes_alone(monkeypatch):
    """The sweep took the job back from a run that looked dead, and another run resumed
    it: the first run's next chunk rolls back instead of being written twice."""
    make_leads()
    job = services.ruleset_activate(ruleset=pallet_ruleset())
    original = services.compile_ruleset

    def taken_over_before_the_first_chunk(*args, **kwargs):
        # What rescore_jobs_sweep and a second worker do meanwhile, in their own transactions.
        RescoreJob.objects.filter(pk=job.pk).update(worker="other-worker#claim")
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "compile_ruleset", taken_over_before_the_first_chunk)
    first = services.rescore_job_run(job_id=job.pk, chunk_size=3, workers=1)

    assert first.status == RescoreJob.Status.RUNNING and first.worker == "other-worker#claim"
    assert first.done_through_id == first.first_id and first.leads_seen == 0
    assert not LeadEvent.objects.filter(kind=LeadEvent.Kind.SCORED, data__job=job.pk).exists()

    # The run that took over (after the sweep reset it) does the whole job once.
    monkeypatch.setattr(services, "compile_ruleset", original)
    RescoreJob.objects.filter(pk=job.pk).update(status=RescoreJob.Status.PENDING, worker="")
    done = services.rescore_job_run(job_id=job.pk, chunk_size=3, workers=1)
    assert done.status == RescoreJob.Status.DONE
    assert done.leads_seen == Lead.objects.count()
    scored = LeadEvent.objects.filter(kind=LeadEvent.Kind.SCORED, data__job=job.pk)
    assert scored.count() == scored.values("lead").distinct().count()


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_chunks_rescored_and_previewed_in_parallel_give_the_engines_verdicts(require_postgres):
    # Committed data, so that the other connections (one per worker thread) see it.
    leads = [LeadFactory(email=f"q{i}.{n}@x.com.br", **person) for n in range(4) for i, person in enumerate(PEOPLE)]
    ruleset = pallet_ruleset()
    impact = services.ruleset_impact(ruleset=ruleset, chunk_size=5, workers=2)
    serial = services.ruleset_impact(ruleset=ruleset, chunk_size=5, workers=1)
    assert impact["status"] == serial["status"] and impact["temperature"] == serial["temperature"]
    assert sum(impact["status"].values()) == len(leads)
    job = services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk, chunk_size=3, workers=2)
    assert (job.status, job.leads_seen, job.done_through_id) == (RescoreJob.Status.DONE, len(leads), job.last_id)
    rules = services.ruleset_to_engine(ruleset)
    moved = {}
    for lead in Lead.objects.select_related("reason"):
        verdict = services.lead_evaluate(lead=lead, rules=rules, now=timezone.now())
        assert (lead.status, lead.reason.slug if lead.reason else "", lead.score, lead.temperature) == (
            verdict.status, verdict.reason, verdict.score, verdict.temperature), lead.email
        moved[("new", lead.status)] = moved.get(("new", lead.status), 0) + 1
    assert moved == impact["status"]  # the preview predicted exactly what the activation did
    assert job.status_changes == LeadEvent.objects.filter(kind=LeadEvent.Kind.STATUS_CHANGED).count() == len(leads)


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_lead_changed_between_the_read_and_the_write_is_scored_from_its_committed_row(
        require_postgres, monkeypatch):
    leads = make_leads()
    ruleset = pallet_ruleset()
    target = leads[0]  # qualifies in SP
    original = services._chunk_changes

    def changed_meanwhile(work, start, end):
        read = original(work, start, end)
        # Another transaction (autocommit here) moves the lead out of the area after the read.
        Lead.objects.filter(pk=target.pk).update(state="RJ")
        return read

    monkeypatch.setattr(services, "_chunk_changes", changed_meanwhile)
    job = services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk, chunk_size=1000,
                                   workers=1)
    target.refresh_from_db()
    verdict = services.lead_evaluate(lead=target, rules=services.ruleset_to_engine(ruleset))
    assert (target.status, target.score) == (verdict.status, verdict.score) == (LeadStatus.OUT_OF_FOCUS, target.score)
    assert job.leads_changed == len(PEOPLE)
    event = target.events.get(kind=LeadEvent.Kind.STATUS_CHANGED)
    assert (event.from_status, event.to_status) == (LeadStatus.NEW, LeadStatus.OUT_OF_FOCUS)


def _run_in_thread(work):
    """``work()`` on a thread of its own (its own database connection, closed after);
    returns the thread and a dict that gets the result or the error."""
    import threading

    from django.db import connection as own

    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except Exception as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc
        finally:
            own.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def assert_every_lead_has_the_engines_verdict(ruleset, job, count):
    """Every lead has the pure engine's verdict, and ``job`` wrote a status event for each of ``count``."""
    rules = services.ruleset_to_engine(ruleset)
    for lead in Lead.objects.select_related("reason"):
        verdict = services.lead_evaluate(lead=lead, rules=rules, now=timezone.now())
        assert (lead.status, lead.score, lead.temperature) == (verdict.status, verdict.score, verdict.temperature)
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.STATUS_CHANGED, data__job=job.pk).count() == count


def _start_dense(monkeypatch):
    """Chunks compute their verdicts inside their write from the first chunk on (as they
    do once a chunk found many leads changing)."""
    original = services._ChunkWork.__init__

    def dense(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.dense = True

    monkeypatch.setattr(services._ChunkWork, "__init__", dense)


def test_on_postgresql_chunks_switch_to_verdicts_inside_the_write_while_many_leads_change(
        require_postgres, monkeypatch):
    leads = [LeadFactory(email=f"d{i}@x.com.br", **PEOPLE[i % len(PEOPLE)]) for i in range(40)]
    ruleset = pallet_ruleset()
    dense_chunks, original = [], services._rescore_chunk_dense
    monkeypatch.setattr(services, "_rescore_chunk_dense",
                        lambda work, start, end: dense_chunks.append(start) or original(work, start, end))
    job = services.rescore_job_run(job_id=services.ruleset_activate(ruleset=ruleset).pk, chunk_size=10, workers=1)
    # The first chunk reads first and finds every lead changing; the next three write at once.
    assert len(dense_chunks) == 3
    assert (job.status, job.leads_seen, job.leads_changed) == (RescoreJob.Status.DONE, len(leads), len(leads))
    assert_every_lead_has_the_engines_verdict(ruleset, job, len(leads))
    # A rerun changes nothing: its chunks read first, and none writes.
    dense_chunks.clear()
    again = services.rescore_job_run(job_id=services.rescore_job_create(ruleset=ruleset).pk, chunk_size=10,
                                     workers=1)
    assert (again.leads_seen, again.leads_changed, dense_chunks) == (len(leads), 0, [])


def test_on_postgresql_a_lead_changed_while_its_verdict_is_written_is_scored_from_its_committed_row(
        other_writer, monkeypatch):
    """Verdicts inside the write: another transaction has changed a lead and not yet
    committed when the chunk's statement reads it; the chunk waits for that row, finds
    it is no longer the version it scored, and scores it again from the committed row."""
    _start_dense(monkeypatch)
    leads = make_leads()
    ruleset = pallet_ruleset()
    target = leads[0]  # qualifies in SP
    job = services.ruleset_activate(ruleset=ruleset)
    other_writer.execute("BEGIN")
    other_writer.execute("UPDATE leads_lead SET state = 'RJ' WHERE id = %s", [target.pk])
    runner, outcome = _run_in_thread(lambda: services.rescore_job_run(job_id=job.pk, chunk_size=1000, workers=1))
    assert other_writer.blocked_backend()  # the chunk's UPDATE waits for the target's row
    other_writer.execute("COMMIT")
    runner.join(timeout=60)
    done = outcome["result"]
    assert (done.status, done.leads_seen, done.leads_changed) == (RescoreJob.Status.DONE, len(leads), len(leads))
    target.refresh_from_db()
    verdict = services.lead_evaluate(lead=target, rules=services.ruleset_to_engine(ruleset))
    assert (target.status, target.score) == (verdict.status, verdict.score) == (LeadStatus.OUT_OF_FOCUS, target.score)
    event = target.events.get(kind=LeadEvent.Kind.STATUS_CHANGED)
    assert (event.from_status, event.to_status) == (LeadStatus.NEW, LeadStatus.OUT_OF_FOCUS)


@pytest.mark.parametrize("dense", [False, True], ids=["read-first", "verdicts-in-the-write"])
def test_on_postgresql_a_chunk_the_database_aborts_to_break_a_deadlock_runs_again_and_the_job_completes(
        other_writer, caplog, monkeypatch, dense):
    """Another writer holds the last lead and then wants the first, which the chunk's
    UPDATE already holds: PostgreSQL aborts the chunk (it waited first), the chunk runs
    again once the other writer is done, and the job ends complete, each move once."""
    import logging

    if dense:
        _start_dense(monkeypatch)
    caplog.set_level(logging.INFO, logger="scoring.services")
    leads = make_leads()
    first, last = leads[0].pk, leads[-1].pk
    ruleset = pallet_ruleset()
    job = services.ruleset_activate(ruleset=ruleset)
    other_writer.execute("BEGIN")
    other_writer.execute("SET LOCAL deadlock_timeout = '30s'")  # so the chunk, not this writer, is aborted
    other_writer.execute("SELECT id FROM leads_lead WHERE id = %s FOR UPDATE", [last])
    runner, outcome = _run_in_thread(lambda: services.rescore_job_run(job_id=job.pk, chunk_size=1000, workers=1))
    assert other_writer.blocked_backend()  # the chunk's UPDATE waits for the last lead's row
    # Wants the first lead, which the chunk holds: a deadlock the chunk loses.
    other_writer.execute("UPDATE leads_lead SET updated_at = now() WHERE id = %s", [first])
    other_writer.execute("COMMIT")
    runner.join(timeout=60)
    done = outcome["result"]
    assert any("conflicted with another writer (40P01)" in message for message in caplog.messages)
    assert (done.status, done.leads_seen, done.leads_changed) == (RescoreJob.Status.DONE, len(leads), len(leads))
    assert_every_lead_has_the_engines_verdict(ruleset, job, len(leads))


def test_on_postgresql_a_job_the_database_interrupts_goes_back_to_pending_for_the_sweep(other_writer):
    """Not a conflict but the server going away (here: the chunk's backend terminated):
    the job is not failed; it waits, pending, for the sweep to resume it after its last
    committed chunk, and the resumed run completes it."""
    from django.db import OperationalError

    leads = make_leads()
    ruleset = pallet_ruleset()
    job = services.ruleset_activate(ruleset=ruleset)
    other_writer.execute("BEGIN")
    other_writer.execute("SELECT id FROM leads_lead WHERE id = %s FOR UPDATE", [leads[-1].pk])
    runner, outcome = _run_in_thread(lambda: services.rescore_job_run(job_id=job.pk, chunk_size=1000, workers=1))
    waiting = other_writer.blocked_backend()
    assert waiting
    other_writer.execute("SELECT pg_terminate_backend(%s)", [waiting])
    other_writer.execute("ROLLBACK")
    runner.join(timeout=60)
    assert isinstance(outcome.get("error"), OperationalError)
    job.refresh_from_db()
    assert (job.status, job.worker, job.leads_seen) == (RescoreJob.Status.PENDING, "", 0)
    resumed = services.rescore_job_run(job_id=job.pk, chunk_size=1000, workers=1)
    assert (resumed.status, resumed.leads_seen, resumed.leads_changed) == (RescoreJob.Status.DONE, len(leads),
                                                                         len(leads))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("setting", "expected"), [(3, 3), (1, None), (0, None)])
def test_the_rescore_works_on_as_many_connections_as_the_setting_says(
        require_postgres, settings, monkeypatch, setting, expected):
    settings.FUNIL_RESCORE_WORKERS = setting
    seen = []
    in_parallel = services._rescore_chunks_in_parallel

    def spy(work, *, workers):
        seen.append(workers)
        return in_parallel(work, workers=workers)

    monkeypatch.setattr(services, "_rescore_chunks_in_parallel", spy)
    leads = [LeadFactory(email=f"w{i}@x.com.br", **person) for i, person in enumerate(PEOPLE)]
    job = services.rescore_job_run(job_id=services.ruleset_activate(ruleset=pallet_ruleset()).pk, chunk_size=2)
    assert (job.status, job.leads_seen) == (RescoreJob.Status.DONE, len(leads))
    assert seen == ([expected] if expected else [])
