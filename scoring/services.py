"""Qualification: the verdict for one lead at capture (pure engine), and set-based
rescoring of every lead (compiled SQL) when the rules change or on schedule."""

import json
import logging
import random
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone, translation
from django.utils.translation import gettext

from config.db import database_unavailable, is_write_conflict
from leads.models import Form, Lead, LeadEvent, LeadStatus, Reason, Source, StatusSetBy
from leads.webhooks import STATUS_EVENTS, webhook_event_record, webhook_status_events_record_for_rescore

from . import compiler, engine
from .models import RescoreJob, Ruleset

logger = logging.getLogger(__name__)

RULES_OWNED = "l.status_set_by = 'rules' AND l.status <> 'converted'"
_cache = {"at": None, "value": None}  # "at" None: nothing read yet, or forgotten
ACTIVE_CACHE_SECONDS = 5
_UNCHECKED = object()
# Advisory lock between capture (shared, per transaction) and the rescoring of an
# activation (exclusive, while it reads its last lead id): see ``active_ruleset_id``.
RULESET_LOCK = 0x46756E69


# --- Reads --------------------------------------------------------------------------


def active_ruleset(*, fresh=False, expected_id=_UNCHECKED):
    """The active ruleset with its rules, cached in this process for a few seconds so
    that capture does not re-read it on every submission. None when there is none.

    ``expected_id``: the active ruleset's id (or None) as the caller's transaction read
    it (``active_ruleset_id``); a cached value of another ruleset is reloaded, so the
    verdict is never given by a ruleset that is no longer active. An active ruleset's
    rules never change (only drafts are edited), so its id says it all."""
    cached = _cache["value"]
    if fresh or _cache["at"] is None:
        stale = True
    elif expected_id is not _UNCHECKED:
        stale = (cached[0].pk if cached else None) != expected_id
    else:
        stale = time.monotonic() - _cache["at"] > ACTIVE_CACHE_SECONDS
    if stale:
        ruleset = Ruleset.objects.filter(state=Ruleset.State.ACTIVE).first()
        _cache["value"] = (ruleset, ruleset_to_engine(ruleset)) if ruleset else None
        _cache["at"] = time.monotonic()
        # A new ruleset may name reasons created since they were last read: read them
        # with it (its rules' reasons exist once it is active).
        _reasons_cache["value"] = _reason_ids()
        _reasons_cache["at"] = time.monotonic()
    return _cache["value"]


def active_ruleset_current(expected_id):
    """True when ``active_ruleset(expected_id=…)`` would answer from the cache."""
    cached = _cache["value"]
    return _cache["at"] is not None and (cached[0].pk if cached else None) == expected_id


def active_ruleset_id():
    """The id of the active ruleset (None without one), read in the caller's transaction
    after taking the shared side of ``RULESET_LOCK`` (PostgreSQL), which the rescoring of
    an activation takes exclusively before it fixes its last lead id: a transaction that
    scored leads with the previous ruleset has committed by then (so its leads are
    rescored), and one that starts later reads the new id here."""
    with connection.cursor() as cursor:
        cursor.execute(ruleset_lock_sql() + f"SELECT id FROM {Ruleset._meta.db_table} WHERE state = 'active'")
        row = cursor.fetchone()
    return row[0] if row else None


def ruleset_lock_sql():
    """The statement that takes the shared ruleset lock (PostgreSQL; "" elsewhere), to
    send in one round trip with the statement it guards. It is a statement of its own,
    so that what follows reads a snapshot taken after the lock was granted."""
    return f"SELECT pg_advisory_xact_lock_shared({RULESET_LOCK}); " if connection.vendor == "postgresql" else ""


def forget_active_ruleset():
    """The next read loads the active ruleset again, whatever its id (an id says which
    ruleset is active, not that this process's copy of it is current)."""
    _cache["at"] = None
    _reasons_cache["at"] = 0.0


def ruleset_to_engine(ruleset):
    rules = ruleset.rules.filter(active=True).select_related("reason").order_by("order", "id")
    return engine.Ruleset(
        qualify=ruleset.qualify_threshold, warm=ruleset.warm_threshold, hot=ruleset.hot_threshold,
        half_life_days=ruleset.engagement_half_life_days,
        engagement_points={
            engine.SUBMISSION: ruleset.submission_points,
            engine.EMAIL_OPEN: ruleset.email_open_points,
            engine.EMAIL_CLICK: ruleset.email_click_points,
        },
        rules=tuple(rule.to_engine() for rule in rules),
    )


def lead_facts(lead):
    """What the engine sees of a lead."""
    facts = {name: getattr(lead, name) for name in engine.TEXT_FIELDS if name not in ("source", "form")}
    facts.update({name: getattr(lead, name) for name in engine.NUMBER_FIELDS})
    facts["source"] = lead.source.slug if lead.source_id else None
    facts["form"] = lead.form.slug if lead.form_id else None
    facts["attributes"] = lead.attributes or {}
    return facts


def uses_engagement(rules: engine.Ruleset):
    return any(rules.engagement_points.values()) or any(
        engine.field_kind(rule.field) == "engagement" for rule in rules.rules
    )


def lead_events_for_engine(lead):
    kinds = [kind for kinds in engine.ENGAGEMENT_EVENT_KINDS.values() for kind in kinds]
    return list(lead.events.filter(kind__in=kinds).values_list("kind", "created_at"))


def lead_evaluate(*, lead, rules=None, now=None):
    """The verdict the active rules (or ``rules``) give this lead now, with its explanation."""
    if rules is None:
        active = active_ruleset()
        if active is None:
            return None
        rules = active[1]
    events = lead_events_for_engine(lead) if uses_engagement(rules) else []
    return engine.evaluate(rules, lead_facts(lead), events, now=now or timezone.now())


# --- Writes: one lead ---------------------------------------------------------------------


@transaction.atomic
def lead_qualify(*, lead, now=None, ruleset_id=_UNCHECKED):
    """Apply the active rules to one lead: score and temperature always; the status and
    reason only when the rules own the status (a person's decision is never overwritten,
    and a converted lead stays converted). Writes the 'scored' event with the
    explanation, and a status event when the status moves. ``ruleset_id``: the active
    ruleset's id as the caller's transaction read it (``active_ruleset_id``)."""
    if ruleset_id is _UNCHECKED:
        ruleset_id = active_ruleset_id()
    active = active_ruleset(expected_id=ruleset_id)
    if active is None:
        return None
    ruleset, rules = active
    now = now or timezone.now()
    lead = Lead.objects.select_for_update(of=("self",)).select_related("source", "form").get(pk=lead.pk)
    verdict = lead_evaluate(lead=lead, rules=rules, now=now)
    rules_own = lead.status_set_by == StatusSetBy.RULES and lead.status != LeadStatus.CONVERTED
    reason = _reason_ids().get(verdict.reason) if verdict.reason else None
    changed = {}
    if (lead.score, lead.temperature) != (verdict.score, verdict.temperature):
        changed.update(score=verdict.score, temperature=verdict.temperature)
    old_status = lead.status
    if rules_own and (lead.status, lead.reason_id) != (verdict.status, reason):
        changed.update(status=verdict.status, reason_id=reason, reason_note="")
        stamp = {"qualified": "qualified_at", "disqualified": "disqualified_at", "out_of_focus": "out_of_focus_at"}
        if verdict.status != old_status:
            changed[stamp[verdict.status]] = now
        if verdict.status != LeadStatus.DISQUALIFIED:
            changed["requalify_at"] = None
    if changed:
        Lead.objects.filter(pk=lead.pk).update(**changed, updated_at=now)
        for name, value in changed.items():
            setattr(lead, name, value)
    data = {"ruleset": ruleset.pk, "version": ruleset.version, "score": verdict.score,
            "temperature": verdict.temperature, "explanation": verdict.explanation}
    LeadEvent.objects.create(lead=lead, kind=LeadEvent.Kind.SCORED, data=data)
    if "status" in changed and changed["status"] != old_status:
        LeadEvent.objects.create(
            lead=lead, kind=LeadEvent.Kind.STATUS_CHANGED, from_status=old_status, to_status=verdict.status,
            reason_id=reason, data={"set_by": "rules", "ruleset": ruleset.pk, "version": ruleset.version},
        )
        if verdict.status == LeadStatus.QUALIFIED and lead.owner_id is None:
            from leads.assignment import leads_auto_assign

            leads_auto_assign(lead_ids=[lead.pk], now=now)
        webhook_event_record(lead=lead, event=STATUS_EVENTS[verdict.status])
    return verdict


def score_new_lead(lead, *, now, ruleset_id=_UNCHECKED):
    """Give an unsaved lead its verdict before it is inserted: its facts are all in
    hand and its only engagement is this submission. Sets the verdict's fields on
    ``lead`` and returns ``(ruleset, verdict)``, or None without an active ruleset.
    ``ruleset_id``: see ``active_ruleset``; unchecked, the cached ruleset (≤ 5 s old)."""
    active = active_ruleset(expected_id=ruleset_id)
    if active is None:
        return None
    ruleset, rules = active
    verdict = engine.evaluate(rules, lead_facts(lead), [("captured", now)], now=now)
    # With a checked id, the reasons read with the ruleset (no query on this path).
    reasons = _reasons_cache["value"] if ruleset_id is not _UNCHECKED else None
    new_lead_verdict_set(lead, score=verdict.score, temperature=verdict.temperature, status=verdict.status,
                         reason=verdict.reason, reason_ids=reasons if reasons is not None else reason_ids_cached(),
                         now=now)
    return ruleset, verdict


def new_lead_verdict_set(lead, *, score, temperature, status, reason, reason_ids, now):
    """Set a verdict's fields on a lead not yet inserted (``score_new_lead``, and the
    CSV import, which scores its rows in other processes): ``reason_ids`` maps reason
    slugs to ids."""
    lead.score, lead.temperature, lead.status = score, temperature, status
    lead.status_set_by = StatusSetBy.RULES
    lead.reason_id = reason_ids.get(reason) if reason else None
    setattr(lead, STATUS_STAMP[status], now)


STATUS_STAMP = {"qualified": "qualified_at", "disqualified": "disqualified_at", "out_of_focus": "out_of_focus_at"}
_reasons_cache = {"at": 0.0, "value": None}


def reason_ids_cached():
    if time.monotonic() - _reasons_cache["at"] > ACTIVE_CACHE_SECONDS:
        _reasons_cache["value"] = _reason_ids()
        _reasons_cache["at"] = time.monotonic()
    return _reasons_cache["value"]


# --- Writes: rulesets -------------------------------------------------------------------------


@transaction.atomic
def ruleset_activate(*, ruleset, actor=None):
    """Make a draft the active ruleset (the previous one is archived, still readable)
    and queue the rescoring of every lead. Returns the rescoring job."""
    ruleset = Ruleset.objects.select_for_update().get(pk=ruleset.pk)
    if ruleset.state == Ruleset.State.ACTIVE:
        raise ValueError("This ruleset is already active.")
    previous = Ruleset.objects.select_for_update().filter(state=Ruleset.State.ACTIVE)
    previous.update(state=Ruleset.State.ARCHIVED)
    latest = Ruleset.objects.filter(name=ruleset.name).exclude(pk=ruleset.pk).aggregate(v=Max("version"))["v"]
    ruleset.version = (latest or 0) + 1 if ruleset.state == Ruleset.State.DRAFT else ruleset.version
    ruleset.state = Ruleset.State.ACTIVE
    ruleset.activated_at = timezone.now()
    ruleset.save(update_fields=["state", "version", "activated_at"])
    job = RescoreJob.objects.create(ruleset=ruleset, kind=RescoreJob.Kind.ACTIVATION)
    forget_active_ruleset()
    transaction.on_commit(forget_active_ruleset)
    transaction.on_commit(lambda: _enqueue(job))
    return job


def rescore_job_create(*, ruleset, kind=RescoreJob.Kind.MANUAL):
    job = RescoreJob.objects.create(ruleset=ruleset, kind=kind)
    transaction.on_commit(lambda: _enqueue(job))
    return job


def _enqueue(job):
    from .tasks import run_rescore_job

    try:
        run_rescore_job.delay(job.pk)
    except Exception:  # noqa: BLE001 - the sweep finds pending jobs in the database
        logger.warning("Could not enqueue rescoring job %s; the sweep will pick it up", job.pk)


# --- Set-based rescoring ---------------------------------------------------------------------------


def compile_ruleset(ruleset, *, now):
    return compiler.Compiled(
        ruleset_to_engine(ruleset), now=now,
        source_ids=dict(Source.objects.values_list("slug", "pk")),
        form_ids=dict(Form.objects.values_list("slug", "pk")),
        reason_ids=_reason_ids(),
    )


def _reason_ids():
    if not Reason.objects.filter(slug=engine.BELOW_THRESHOLD).exists():
        # Data from then on, which marketers may rename: labelled in the site's language.
        with translation.override(settings.LANGUAGE_CODE):
            label = gettext("Below the qualification threshold")
        Reason.objects.get_or_create(
            slug=engine.BELOW_THRESHOLD, defaults={"label": label, "kind": Reason.Kind.DISQUALIFIED},
        )
    return dict(Reason.objects.values_list("slug", "pk"))


def requalification_candidates(now):
    """Disqualified leads the rules disqualified, and those a person disqualified with a
    requalify date that has come. Out-of-focus leads wait for a new ruleset."""
    return Lead.objects.filter(status=LeadStatus.DISQUALIFIED).filter(
        Q(status_set_by=StatusSetBy.RULES) | Q(status_set_by=StatusSetBy.PERSON, requalify_at__lte=now)
    )


def rescore_workers():
    """Chunks rescored (or ranges previewed) at once, each on its own database
    connection (PostgreSQL only): ``FUNIL_RESCORE_WORKERS``."""
    return max(1, settings.FUNIL_RESCORE_WORKERS)


class ChunkSizer:
    """Lead ids per chunk transaction, adapted to how long the last ones took: a chunk
    that held its transaction longer than ``target`` seconds makes the next ones
    smaller, one well under it makes them larger, always within [low, high]. So no
    transaction nears the 2 s the leads' other writers should ever wait, whether the
    machine is quiet or busy. Thread-safe: parallel chunks share one."""

    def __init__(self, *, size=1250, low=500, high=5000, target=0.75):
        self.low, self.high, self.target = low, high, target
        self.current = max(low, min(high, size))
        self._lock = threading.Lock()

    def size(self):
        return self.current

    def record(self, size, seconds):
        """A chunk of ``size`` ids held its transaction ``seconds`` (0: it wrote nothing)."""
        with self._lock:
            if seconds > self.target:
                # Proportionally smaller, with a margin: the time grows about linearly with the size.
                wanted = size * self.target / seconds * 0.8
            elif seconds < self.target / 2:
                wanted = max(size, self.current) * 1.5
            else:
                return self.current
            self.current = int(max(self.low, min(self.high, wanted)))
            return self.current


class FixedChunks(ChunkSizer):
    """Always the same size (``chunk_size`` given by the caller: tests, benchmarks)."""

    def __init__(self, size):
        super().__init__(size=size, low=size, high=size)

    def record(self, size, seconds):
        return self.current


# The job's progress row is written by chunks that change leads; a run of chunks that
# change nothing writes it (its heartbeat) at most this often.
PROGRESS_EVERY_SECONDS = 10

# On PostgreSQL, once a chunk finds at least this share of its leads changing, the next
# chunks compute their verdicts inside the write (``_rescore_chunk_dense``): reading
# them first and writing them back by id would cost as much again. A chunk that finds
# fewer goes back to reading first, so that unchanged leads are never locked nor written.
DENSE_SHARE = 0.2


def rescore_job_run(*, job_id, chunk_size=None, worker="", workers=None):
    """Run (or resume) a rescoring job, one chunk of lead ids per short transaction.

    Safe to call twice: the job is claimed with a conditional UPDATE. Each chunk first
    reads, without a transaction or a lock, which of its leads the rules would change;
    only those are written, in a transaction that also records the job's progress, so a
    resumed job starts after the last committed chunk. A chunk that changes nothing
    writes nothing (a rerun of an unchanged ruleset). While chunks find many leads
    changing (``DENSE_SHARE``), the next ones compute their verdicts inside the write
    instead (``_rescore_chunk_dense``), which saves reading every lead twice. Chunks are sized by ``ChunkSizer``
    (or ``chunk_size`` ids each). On PostgreSQL, ``workers`` chunks (default
    ``rescore_workers()``) are rescored at once on their own connections; they still
    commit in order, so the progress never passes a chunk that is not done.
    """
    now = timezone.now()
    # A claim of its own, even among the processes of one worker host: if the sweep
    # takes the job back (this run looked dead) and another run resumes it, this run's
    # next commit finds the claim gone and stops, so no chunk is rescored twice.
    claim = f"{worker[:230]}#{uuid.uuid4().hex[:16]}"
    claimed = RescoreJob.objects.filter(pk=job_id, status=RescoreJob.Status.PENDING).update(
        status=RescoreJob.Status.RUNNING, started_at=now, heartbeat_at=now, worker=claim
    )
    if not claimed:
        return RescoreJob.objects.get(pk=job_id)
    job = RescoreJob.objects.select_related("ruleset").get(pk=job_id)
    try:
        requalifying = job.kind == RescoreJob.Kind.REQUALIFICATION
        base = requalification_candidates(now) if requalifying else Lead.objects.all()
        if not job.last_id:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    # Wait for every capture that may have scored with the previous
                    # ruleset to commit, so its lead is under the bound (``active_ruleset_id``).
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RULESET_LOCK])
                bounds = base.aggregate(first=Min("id"), last=Max("id"))
                RescoreJob.objects.filter(pk=job.pk).update(
                    first_id=(bounds["first"] or 1) - 1, last_id=bounds["last"] or 0,
                    done_through_id=(bounds["first"] or 1) - 1,
                )
            job.refresh_from_db()
        work = _ChunkWork(job, compile_ruleset(job.ruleset, now=now), base, now=now, requalifying=requalifying,
                          sizer=FixedChunks(chunk_size) if chunk_size else ChunkSizer())
        workers = rescore_workers() if workers is None else workers
        # Other connections cannot see an enclosing transaction's writes (nor join it).
        if workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
            last = _rescore_chunks_in_parallel(work, workers=workers)
        else:
            last = work.first_turn()
            while (chunk := work.next_chunk()) is not None:
                _, start, end = chunk
                turn = _Turn()
                try:
                    _rescore_chunk_commit(work, start, end, after=last, turn=turn)
                finally:
                    turn.finish_if_not()
                last = turn
        finished = RescoreJob.objects.filter(pk=job.pk, worker=claim, status=RescoreJob.Status.RUNNING).update(
            status=RescoreJob.Status.DONE, finished_at=timezone.now(), done_through_id=job.last_id,
            leads_seen=F("leads_seen") + last.unrecorded_seen,
        )
        if not finished:
            raise ClaimLost(job.pk)
    except ClaimLost:
        logger.warning("Rescoring job %s was taken back by the sweep; its new run finishes it", job_id)
    except Exception as exc:
        if not database_unavailable(exc):
            logger.exception("Rescoring job %s failed", job_id)
            RescoreJob.objects.filter(pk=job.pk).update(status=RescoreJob.Status.FAILED, error=str(exc)[:5000])
            raise
        # The database went away, or kept aborting a chunk to break conflicts with other
        # writers: the job is interrupted, not wrong. It goes back to pending for the sweep
        # to resume after its last committed chunk (if even that write fails, its heartbeat
        # goes stale and the sweep takes it back all the same).
        logger.exception("Rescoring job %s was interrupted; the sweep resumes it", job_id)
        try:
            RescoreJob.objects.filter(pk=job.pk, worker=claim, status=RescoreJob.Status.RUNNING).update(
                status=RescoreJob.Status.PENDING, worker="")
        except DatabaseError:
            logger.warning("Could not hand rescoring job %s back; the sweep finds its stale heartbeat", job_id)
        raise
    job.refresh_from_db()
    return job


class _ChunkWork:
    """What every chunk of one run shares: the job, its compiled statement, the next
    chunk's bounds."""

    def __init__(self, job, compiled, base, *, now, requalifying, sizer):
        self.job, self.compiled, self.base = job, compiled, base
        self.now, self.requalifying, self.sizer = now, requalifying, sizer
        self.verdicts = compiler.chunk_verdict_sql(compiled, base, row_version=connection.vendor == "postgresql")
        self.event_kind = LeadEvent.Kind.REQUALIFIED if requalifying else LeadEvent.Kind.STATUS_CHANGED
        self.event_data = json.dumps({"set_by": "rules", "ruleset": job.ruleset_id, "version": job.ruleset.version,
                                      "job": job.pk})
        self._next = job.done_through_id
        self._index = 0
        self._lock = threading.Lock()
        # Whether the last chunk changed many of its leads (``DENSE_SHARE``): set by every
        # chunk, read by the next one to start, whichever its thread.
        self.dense = False

    def first_turn(self):
        turn = _Turn()
        turn.finish(True, recorded_through=self.job.done_through_id, unrecorded_seen=0,
                    recorded_at=time.monotonic())
        return turn

    def next_chunk(self):
        """(index, start, end) of the next chunk in id order, or None when done."""
        with self._lock:
            if self._next >= self.job.last_id:
                return None
            start, end = self._next, min(self._next + self.sizer.size(), self.job.last_id)
            self._next, index = end, self._index
            self._index += 1
            return index, start, end


class _Turn:
    """A chunk's outcome, which the next chunk awaits before it commits: whether it
    committed, the progress the database holds after it, and the leads seen since."""

    def __init__(self):
        self._finished = threading.Event()
        self.committed = False
        self.recorded_through = None
        self.unrecorded_seen = 0
        self.recorded_at = 0.0

    def finish(self, committed, *, recorded_through=None, unrecorded_seen=0, recorded_at=0.0):
        self.committed = committed
        self.recorded_through, self.unrecorded_seen, self.recorded_at = recorded_through, unrecorded_seen, recorded_at
        self._finished.set()

    def finish_if_not(self):
        if not self._finished.is_set():
            self.finish(False)

    def wait_committed(self):
        self._finished.wait()
        return self.committed


class ChunkAbandoned(Exception):
    """A chunk was rolled back because the chunk before it did not commit."""


class ClaimLost(ChunkAbandoned):
    """A chunk was rolled back because this run no longer holds the job: the sweep took
    it back (the run looked dead) and another run resumed it."""


# A chunk the database aborted to settle a conflict with another writer of the same
# leads (a capture, a rep, a requalification beside an activation) kept nothing of its
# work: it is read and written again, this many times at most.
CHUNK_ATTEMPTS = 5


def _rescore_chunk_commit(work, start, end, *, after, turn):
    """Rescore the leads with ids in (start, end] (see ``_rescore_chunk_commit_once``),
    again after a pause when the database aborted the chunk's transaction to break a
    conflict with another writer; after ``CHUNK_ATTEMPTS`` the error goes up."""
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        try:
            return _rescore_chunk_commit_once(work, start, end, after=after, turn=turn)
        except Exception as exc:
            if not is_write_conflict(exc) or attempt == CHUNK_ATTEMPTS:
                raise
            logger.info("Rescoring chunk (%s, %s] of job %s conflicted with another writer (%s); again",
                        start, end, work.job.pk, exc.__cause__.pgcode)
            # Jittered, growing: the other writer finishes, the two do not collide again in step.
            time.sleep(random.uniform(0.05, 0.25) * attempt)


def _rescore_chunk_commit_once(work, start, end, *, after, turn):
    """Rescore the leads with ids in (start, end]: read which of them change (no
    transaction, no lock), then write those and the job's progress in one transaction,
    committed only once the previous chunk (``after``) has. A chunk that changes
    nothing writes nothing, unless the progress is due (``PROGRESS_EVERY_SECONDS``)."""
    job = work.job
    if work.dense and connection.vendor == "postgresql":
        began = time.monotonic()
        with transaction.atomic():
            seen, counts = _rescore_chunk_dense(work, start, end)
            work.dense = counts["changed"] >= DENSE_SHARE * seen > 0
            _chunk_commit(work, start, end, counts, after=after)
        work.sizer.record(end - start, time.monotonic() - began)
        turn.finish(True, recorded_through=end, recorded_at=time.monotonic())
        return
    seen, changes = _chunk_changes(work, start, end)
    if connection.vendor == "postgresql":
        work.dense = changes is not None and len(changes[0]) >= DENSE_SHARE * seen > 0
    if not changes:
        if not after.wait_committed():
            raise ChunkAbandoned(f"Chunk ({start}, {end}] abandoned: the chunk before it failed.")
        work.sizer.record(end - start, 0.0)
        if time.monotonic() - after.recorded_at < PROGRESS_EVERY_SECONDS:
            turn.finish(True, recorded_through=after.recorded_through,
                        unrecorded_seen=after.unrecorded_seen + seen, recorded_at=after.recorded_at)
            return
        counts = {"seen": seen, "changed": 0, "status_changes": 0, "transitions": {}}
        with transaction.atomic():
            _record_progress(job, after, end, counts)
        turn.finish(True, recorded_through=end, recorded_at=time.monotonic())
        return
    began = time.monotonic()
    with transaction.atomic():
        counts = _rescore_chunk(work, start, end, changes)
        counts["seen"] = seen
        _chunk_commit(work, start, end, counts, after=after)
    work.sizer.record(end - start, time.monotonic() - began)
    turn.finish(True, recorded_through=end, recorded_at=time.monotonic())


def _chunk_commit(work, start, end, counts, *, after):
    """The rest of a chunk's transaction once its leads are written: the webhooks of the
    status changes, then, after the previous chunk committed, the assignments and the
    job's progress."""
    if counts["status_changes"]:
        webhook_status_events_record_for_rescore(job_id=work.job.pk, first_id=start, last_id=end, since=work.now)
    if not after.wait_committed():
        raise ChunkAbandoned(f"Chunk ({start}, {end}] rolled back: the chunk before it failed.")
    # After the previous chunk committed: assignment locks the rules' rotation, and
    # the chunks must take that lock in order.
    _assign_newly_qualified(start, end, work.now)
    _record_progress(work.job, after, end, counts)


def _record_progress(job, after, end, counts):
    progressed = RescoreJob.objects.filter(
        pk=job.pk, worker=job.worker, status=RescoreJob.Status.RUNNING, done_through_id=after.recorded_through
    ).update(
        done_through_id=end, heartbeat_at=timezone.now(),
        leads_seen=F("leads_seen") + counts["seen"] + after.unrecorded_seen,
        leads_changed=F("leads_changed") + counts["changed"],
        status_changes=F("status_changes") + counts["status_changes"],
    )
    if not progressed:
        raise ClaimLost(job.pk)
    _merge_transitions(job.pk, counts["transitions"])


def _rescore_chunks_in_parallel(work, *, workers):
    """Rescore the chunks ``workers`` at a time, each thread on its own connection (the
    database does the work; Python only waits). A chunk commits after the one before
    it, and none after a failure. Returns the last chunk's turn."""
    turns = {-1: work.first_turn()}
    lock = threading.Lock()
    errors = []

    def run():
        try:
            while not errors:
                with lock:
                    chunk = work.next_chunk()
                    if chunk is None:
                        return
                    index, start, end = chunk
                    turn = turns[index] = _Turn()
                    after = turns[index - 1]
                try:
                    _rescore_chunk_commit(work, start, end, after=after, turn=turn)
                except Exception as exc:  # noqa: BLE001 - re-raised by the caller's thread
                    errors.append(exc)
                finally:
                    turn.finish_if_not()
                with lock:
                    turns.pop(index - 1, None)  # the next chunk holds it; nobody else needs it
        finally:
            connection.close()

    threads = [threading.Thread(target=run, name=f"rescore-{work.job.pk}-{n}", daemon=True)
               for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return turns[max(turns)]


def _assign_newly_qualified(start, end, now):
    """Leads this chunk moved to qualified go to reps by the assignment rules."""
    from leads.assignment import leads_auto_assign
    from leads.models import AssignmentRule

    if not AssignmentRule.objects.filter(active=True).exists():
        return
    ids = Lead.objects.filter(id__gt=start, id__lte=end, status=LeadStatus.QUALIFIED, owner__isnull=True,
                              qualified_at=now).values_list("id", flat=True)
    leads_auto_assign(lead_ids=list(ids), now=now)


def _merge_transitions(job_id, transitions):
    if not transitions:
        return
    job = RescoreJob.objects.select_for_update().get(pk=job_id)
    merged = dict(job.transitions)
    for key, count in transitions.items():
        merged[key] = merged.get(key, 0) + count
    RescoreJob.objects.filter(pk=job_id).update(transitions=merged)


def _rules_own(lead, requalifying):
    """SQL: do the rules own this lead's status? (``lead`` is the alias of its current row.)"""
    owned = f"({lead}.status_set_by = 'rules' OR v.new_status = 'qualified')" if requalifying \
        else f"{lead}.status_set_by = 'rules'"
    return f"{owned} AND {lead}.status <> 'converted'"


def _changes_sql(lead, requalifying):
    """SQL: would the verdict ``v`` change the row ``lead``?"""
    return f"""
        {lead}.score <> v.new_score OR {lead}.temperature <> v.new_temperature
        {f"OR {lead}.requalify_at IS NOT NULL" if requalifying else ""}
        OR ({_rules_own(lead, requalifying)} AND ({lead}.status <> v.new_status
                                                 OR COALESCE({lead}.reason_id, -1) <> COALESCE(v.new_reason, -1)))
    """


# The changed leads of a chunk, as arrays (one per column) that the write unnests.
_CHANGE_COLUMNS = ("id", "row_version", "status", "temperature", "new_score", "new_temperature", "new_status",
                   "new_reason")
_CHANGE_TYPES = ("bigint", "bigint", "text", "text", "integer", "text", "text", "bigint")


def _chunk_changes(work, start, end):
    """Read-only: (leads seen, the changes) of the chunk (start, end]. On PostgreSQL the
    changes are the changed rows' columns as arrays (None when none change); elsewhere
    a flag."""
    sql, params = work.verdicts(start, end)
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            columns = [column[0] for column in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        return len(rows), any(_portable_update(row, work.requalifying) for row in rows)
    aggregates = ", ".join(f"array_agg(v.{column} ORDER BY v.id)" for column in _CHANGE_COLUMNS)
    statement = f"""
        WITH v AS MATERIALIZED ({sql})
        SELECT (SELECT count(*) FROM v), {aggregates} FROM v WHERE {_changes_sql("v", work.requalifying)}
    """
    # A read-only transaction of its own, over before the chunk's write begins.
    with transaction.atomic(), connection.cursor() as cursor:
        with _verdict_planning(cursor):
            cursor.execute(statement, params)
            seen, *arrays = cursor.fetchone()
    return seen, (arrays if arrays[0] else None)


@contextmanager
def _verdict_planning(cursor):
    """How to plan a chunk's verdicts, for the statements inside (in a transaction):
    JIT off (a chunk is small: compiling it to machine code costs more than it saves),
    room to sort, and the joins in the order written (the lead, its events, then each
    lateral): searching for another order took ~10-40 ms of planning per chunk, for the
    same plan. One round trip to set them, one to reset them for the rest of the
    transaction."""
    cursor.execute("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; "
                   "SET LOCAL join_collapse_limit = 1; SET LOCAL from_collapse_limit = 1")
    yield
    cursor.execute("RESET jit; RESET work_mem; RESET join_collapse_limit; RESET from_collapse_limit")


def _rescore_chunk(work, start, end, changes):
    """Write the changed leads of a chunk (inside its transaction): score, temperature,
    status and reason, and one timeline event per status change."""
    if connection.vendor == "postgresql":
        return _rescore_chunk_postgresql(work, start, end, changes)
    sql, params = work.verdicts(start, end)
    return _rescore_chunk_portable(sql, params, work.now, work.event_kind, work.event_data, work.requalifying)


def _update_sql(requalifying, changed_rows, in_range):
    """The UPDATE of the rules' verdicts ``v`` (from ``changed_rows``) onto leads_lead,
    with the events of the status changes; selects the moves."""
    rules_own = _rules_own("l", requalifying)
    return f"""
        upd AS (
            UPDATE leads_lead AS l SET
                score = v.new_score,
                temperature = v.new_temperature,
                status = CASE WHEN {rules_own} THEN v.new_status ELSE l.status END,
                reason_id = CASE WHEN {rules_own} THEN v.new_reason ELSE l.reason_id END,
                reason_note = CASE WHEN {rules_own} AND v.new_status <> l.status THEN '' ELSE l.reason_note END,
                status_set_by = CASE WHEN {rules_own} THEN 'rules' ELSE l.status_set_by END,
                qualified_at = CASE WHEN {rules_own} AND v.new_status = 'qualified' AND l.status <> 'qualified'
                                    THEN %s ELSE l.qualified_at END,
                disqualified_at = CASE WHEN {rules_own} AND v.new_status = 'disqualified'
                                       AND l.status <> 'disqualified' THEN %s ELSE l.disqualified_at END,
                out_of_focus_at = CASE WHEN {rules_own} AND v.new_status = 'out_of_focus'
                                       AND l.status <> 'out_of_focus' THEN %s ELSE l.out_of_focus_at END,
                requalify_at = CASE WHEN {"TRUE" if requalifying else rules_own + " AND v.new_status <> 'disqualified'"}
                                    THEN NULL ELSE l.requalify_at END,
                updated_at = %s
            FROM {changed_rows} AS v
            WHERE l.id = v.id {in_range} AND ({_changes_sql("l", requalifying)})
            RETURNING l.id, v.status AS old_status, l.status AS new_status, l.reason_id,
                      v.temperature AS old_temperature, l.temperature AS new_temperature
        ),
        ins AS (
            INSERT INTO leads_leadevent (lead_id, kind, actor_id, from_status, to_status, reason_id, note, data,
                                         created_at)
            SELECT id, %s, NULL, old_status, new_status, reason_id, '', %s::jsonb, %s
            FROM upd WHERE old_status <> new_status
            RETURNING 1
        )
    """


def _rescore_chunk_postgresql(work, start, end, changes):
    """Write the rows read by ``_chunk_changes``, each only if it is still the version
    read (its xmin): a lead another transaction changed meanwhile is scored again here,
    from its committed row, inside this transaction."""
    now = work.now
    unnest = ", ".join(f"%s::{kind}[]" for kind in _CHANGE_TYPES)
    changed_rows = f"(SELECT * FROM unnest({unnest}) AS d({', '.join(_CHANGE_COLUMNS)}))"
    statement = f"""
        WITH {_update_sql(work.requalifying, changed_rows, "AND l.xmin::text::bigint = v.row_version")}
        SELECT old_status, new_status, old_temperature, new_temperature, count(*), NULL::bigint[]
        FROM upd GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, 0, (SELECT array_agg(d.id) FROM unnest(%s::bigint[]) AS d(id)
                                           WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.id = d.id))
    """
    with connection.cursor() as cursor:
        # The SET clause's parameters come first in the text, then the unnested rows.
        cursor.execute(statement, [now, now, now, now, *changes, work.event_kind, work.event_data, now, changes[0]])
        *rows, (_, _, _, _, _, stale) = cursor.fetchall()
    return _chunk_counts(rows + _rescore_stale(work, start, end, stale))


def _rescore_chunk_dense(work, start, end):
    """(leads seen, counts): the chunk's verdicts and their write in one statement (in
    the chunk's transaction), for chunks where many leads change. Writes each lead only
    if the row is still the version the verdict read: one that another transaction
    changed while the statement ran (it then waits for that row, and sees the new
    version only at the write) is scored again from its committed row."""
    now = work.now
    sql, params = work.verdicts(start, end)
    statement = f"""
        WITH v AS MATERIALIZED ({sql}),
        {_update_sql(work.requalifying, "v", f"AND l.id > {int(start)} AND l.id <= {int(end)} "
                                             "AND l.xmin::text::bigint = v.row_version")}
        SELECT old_status, new_status, old_temperature, new_temperature, count(*), NULL::bigint[]
        FROM upd GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, (SELECT count(*) FROM v),
               (SELECT array_agg(v.id) FROM v WHERE ({_changes_sql("v", work.requalifying)})
                                             AND NOT EXISTS (SELECT 1 FROM upd WHERE upd.id = v.id))
    """
    with connection.cursor() as cursor, _verdict_planning(cursor):
        cursor.execute(statement, [*params, now, now, now, now, work.event_kind, work.event_data, now])
        *rows, (_, _, _, _, seen, stale) = cursor.fetchall()
    counts = _chunk_counts(rows + _rescore_stale(work, start, end, stale))
    counts["seen"] = seen
    return seen, counts


def _rescore_stale(work, start, end, stale):
    """The leads of a chunk that changed since their verdict was read (ids ``stale``):
    the verdict and the write in one statement, as of now. Returns the moves' rows."""
    if not stale:
        return []
    now = work.now
    sql, params = compiler.verdict_sql(work.compiled, work.base.filter(id__in=stale, id__gt=start, id__lte=end),
                                       id_range=(start, end))
    statement = f"""
        WITH v AS MATERIALIZED ({sql}),
        {_update_sql(work.requalifying, "v", "")}
        SELECT old_status, new_status, old_temperature, new_temperature, count(*), NULL FROM upd GROUP BY 1, 2, 3, 4
    """
    with connection.cursor() as cursor:
        cursor.execute(statement, [*params, now, now, now, now, work.event_kind, work.event_data, now])
        return cursor.fetchall()


def _chunk_counts(rows):
    """Leads changed, status changes and the moves, from rows of (old status, new
    status, old temperature, new temperature, count)."""
    transitions = {}
    changed = status_changes = 0
    for old_status, new_status, old_temp, new_temp, count, _ in rows:
        changed += count
        if old_status != new_status:
            status_changes += count
            key = f"status:{old_status}>{new_status}"
            transitions[key] = transitions.get(key, 0) + count
        if old_temp != new_temp:
            key = f"temperature:{old_temp}>{new_temp}"
            transitions[key] = transitions.get(key, 0) + count
    return {"changed": changed, "status_changes": status_changes, "transitions": transitions}


STAMP = {"qualified": "qualified_at", "disqualified": "disqualified_at", "out_of_focus": "out_of_focus_at"}


def _portable_update(row, requalifying):
    """The columns a verdict row changes (SQLite), {} when none."""
    own = row["status"] != "converted" and (
        row["status_set_by"] == "rules" or (requalifying and row["new_status"] == "qualified")
    )
    update = {}
    if (row["score"], row["temperature"]) != (row["new_score"], row["new_temperature"]):
        update.update(score=row["new_score"], temperature=row["new_temperature"])
    if own and (row["status"], row["reason_id"]) != (row["new_status"], row["new_reason"]):
        update.update(status=row["new_status"], reason_id=row["new_reason"], status_set_by="rules")
        if row["new_status"] != row["status"]:
            update[STAMP[row["new_status"]]] = True
            update["reason_note"] = ""
    if row["requalify_at"] is not None and (requalifying or (own and row["new_status"] != "disqualified")):
        update["requalify_at"] = None
    return update


def _rescore_chunk_portable(sql, params, now, event_kind, event_data, requalifying):
    """SQLite (the embedded default): read the chunk's verdicts, write the changed rows."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    transitions, events = {}, []
    changed = status_changes = 0
    for row in rows:
        update = _portable_update(row, requalifying)
        if not update:
            continue
        update.update({name: now for name in STAMP.values() if name in update})
        Lead.objects.filter(pk=row["id"]).update(**update, updated_at=now)
        changed += 1
        if update.get("status", row["status"]) != row["status"]:
            status_changes += 1
            key = f"status:{row['status']}>{update['status']}"
            transitions[key] = transitions.get(key, 0) + 1
            events.append(LeadEvent(
                lead_id=row["id"], kind=event_kind, from_status=row["status"], to_status=update["status"],
                reason_id=update.get("reason_id"), data=json.loads(event_data),
            ))
        if "temperature" in update and update["temperature"] != row["temperature"]:
            key = f"temperature:{row['temperature']}>{update['temperature']}"
            transitions[key] = transitions.get(key, 0) + 1
    LeadEvent.objects.bulk_create(events)
    return {"changed": changed, "status_changes": status_changes, "transitions": transitions}


# --- Preview -----------------------------------------------------------------------------------------


IMPACT_CHUNK = 50_000


def ruleset_impact(*, ruleset, now=None, samples=3, chunk_size=IMPACT_CHUNK, workers=None):
    """What activating ``ruleset`` would do, computed in the database without writing:
    {"status": {(from, to): count}, "temperature": {(from, to): count}, "samples": {...}}.
    A status a person set stays; only the rules' own statuses move.

    On PostgreSQL the leads are counted by ranges of ids (each range's events in one
    index scan), ``workers`` ranges at a time on their own connections, as rescoring
    does; elsewhere (or inside a transaction, which other connections cannot see) in
    one statement."""
    now = now or timezone.now()
    compiled = compile_ruleset(ruleset, now=now)
    workers = rescore_workers() if workers is None else workers
    ranges = [None]
    if connection.vendor == "postgresql":
        bounds = Lead.objects.aggregate(first=Min("id"), last=Max("id"))
        if bounds["last"] is not None:
            first = bounds["first"] - 1
            ranges = [(start, min(start + chunk_size, bounds["last"]))
                      for start in range(first, bounds["last"], chunk_size)]
    rows = []
    if workers > 1 and len(ranges) > 1 and not connection.in_atomic_block:
        rows = _in_parallel(ranges, lambda id_range: _impact_rows(compiled, id_range), workers=workers)
    else:
        for id_range in ranges:
            rows.extend(_impact_rows(compiled, id_range))
    status, temperature, sample_ids = {}, {}, {}
    for old_status, new_status, old_temp, new_temp, count, low, high in rows:
        status[(old_status, new_status)] = status.get((old_status, new_status), 0) + count
        temperature[(old_temp, new_temp)] = temperature.get((old_temp, new_temp), 0) + count
        if old_status != new_status:
            sample_ids.setdefault((old_status, new_status), set()).update([low, high])
    samples_by_move = {
        move: list(Lead.objects.filter(pk__in=sorted(ids)[:samples]).order_by("pk"))
        for move, ids in sample_ids.items()
    }
    return {"status": status, "temperature": temperature, "samples": samples_by_move}


def _impact_rows(compiled, id_range):
    """(status, new status, temperature, new temperature, count, min id, max id) of the
    leads in ``id_range`` (first excluded, last included), or of every lead."""
    leads = Lead.objects.all() if id_range is None else Lead.objects.filter(id__gt=id_range[0],
                                                                            id__lte=id_range[1])
    sql, params = compiler.verdict_sql(compiled, leads, id_range=id_range)
    effective = "CASE WHEN status_set_by = 'rules' AND status <> 'converted' THEN new_status ELSE status END"
    statement = f"""
        SELECT status, {effective} AS to_status, temperature, new_temperature, count(*), min(id), max(id)
        FROM ({sql}) x GROUP BY 1, 2, 3, 4
    """
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Compiling each range's statement to machine code (JIT) costs more than it saves.
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(statement, params)
        return cursor.fetchall()


def _in_parallel(items, work, *, workers):
    """``work(item)`` for every item, ``workers`` threads at a time, each on its own
    database connection (closed afterwards); the lists they return, concatenated.
    The first error is raised once every thread has stopped."""
    pending = iter(items)
    lock = threading.Lock()
    results, errors = [], []

    def run():
        try:
            while not errors:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                try:
                    rows = work(item)
                except Exception as exc:  # noqa: BLE001 - re-raised by the caller's thread
                    errors.append(exc)
                    return
                with lock:
                    results.extend(rows)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# --- Admin: drafts ---------------------------------------------------------------------------------------


class RulesetNotEditable(Exception):
    """Only drafts change; an active or archived ruleset is copied into a new draft."""


RULE_FIELDS = ("name", "field", "operator", "value", "window_days", "effect", "points", "reason", "active")


@transaction.atomic
def ruleset_draft_save(*, ruleset=None, fields, rules=None):
    """Create a draft (``ruleset`` None) or change one: ``fields`` are Ruleset field
    values, ``rules`` (when given) the complete ordered list of its rules as Rule field
    values, replacing the old ones. Everything is validated as the admin does it
    (``full_clean``) before anything is written; a ``ValidationError`` names the rule
    (``rules[2].operator``). Raises ``RulesetNotEditable`` unless the ruleset is a draft
    (checked under its row lock, so a concurrent activation wins cleanly)."""
    from django.core.exceptions import ValidationError

    from .models import Rule

    if ruleset is None:
        ruleset = Ruleset(state=Ruleset.State.DRAFT)
    else:
        ruleset = Ruleset.objects.select_for_update().get(pk=ruleset.pk)
        if ruleset.state != Ruleset.State.DRAFT:
            raise RulesetNotEditable(ruleset)
    renamed = ruleset.pk is None or ("name" in fields and fields["name"] != ruleset.name)
    for name, value in fields.items():
        setattr(ruleset, name, value)
    ruleset.full_clean(exclude=["version", "state"])
    new_rules = []
    errors = {}
    for index, values in enumerate(rules or []):
        rule = Rule(order=index, **{name: values[name] for name in RULE_FIELDS if name in values})
        try:
            rule.full_clean(exclude=["ruleset"])
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                errors[f"rules[{index}].{field_name}"] = [f'"{rule.name}": {message}' for message in messages]
        new_rules.append(rule)
    if errors:
        raise ValidationError(errors)
    if renamed:
        # A draft reads as the next version of its name; activation confirms the number.
        latest = Ruleset.objects.filter(name=ruleset.name).exclude(pk=ruleset.pk).aggregate(v=Max("version"))["v"]
        ruleset.version = (latest or 0) + 1
    ruleset.save()
    if rules is not None:
        ruleset.rules.all().delete()
        for rule in new_rules:
            rule.ruleset = ruleset
        Rule.objects.bulk_create(new_rules)
    return ruleset


@transaction.atomic
def ruleset_draft_delete(*, ruleset):
    ruleset = Ruleset.objects.select_for_update().get(pk=ruleset.pk)
    if ruleset.state != Ruleset.State.DRAFT:
        raise RulesetNotEditable(ruleset)
    ruleset.delete()



@transaction.atomic
def ruleset_duplicate(*, ruleset):
    """A new draft with the same settings and rules as ``ruleset`` (any state), numbered
    as the next version of its name; activation confirms the number."""
    latest = Ruleset.objects.filter(name=ruleset.name).aggregate(v=Max("version"))["v"] or 0
    copy = Ruleset.objects.create(
        name=ruleset.name, version=latest + 1, state=Ruleset.State.DRAFT,
        qualify_threshold=ruleset.qualify_threshold, warm_threshold=ruleset.warm_threshold,
        hot_threshold=ruleset.hot_threshold, engagement_half_life_days=ruleset.engagement_half_life_days,
        submission_points=ruleset.submission_points, email_open_points=ruleset.email_open_points,
        email_click_points=ruleset.email_click_points, description=ruleset.description,
    )
    rules = ruleset.rules.order_by("order", "id")
    copy.rules.bulk_create([
        rule.__class__(
            ruleset=copy, order=rule.order, name=rule.name, field=rule.field, operator=rule.operator,
            value=rule.value, window_days=rule.window_days, effect=rule.effect, points=rule.points,
            reason_id=rule.reason_id, active=rule.active,
        )
        for rule in rules
    ])
    return copy


# --- Requalification on schedule ---------------------------------------------------------------------------

REQUALIFY_LOCK = "requalify"
# Requalified leads of earlier runs whose notification was lost (a crash between the
# rescoring and the emails) are announced by the next run, if it comes within this long.
REQUALIFY_CATCH_UP_DAYS = 7


def requalify_preview(*, ruleset, now=None, samples=20):
    """What requalification would do now, counted in the database without writing:
    {"candidates": n, "status": {(from, to): count}, "qualified": n, "samples": [lead, ...]}.
    The same verdict and the same ownership rule as the real run (a person's
    disqualification comes back only if the lead now qualifies)."""
    now = now or timezone.now()
    compiled = compile_ruleset(ruleset, now=now)
    sql, params = compiler.verdict_sql(compiled, requalification_candidates(now))
    effective = ("CASE WHEN status <> 'converted' AND (status_set_by = 'rules' OR new_status = 'qualified') "
                 "THEN new_status ELSE status END")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT status, {effective}, count(*) FROM ({sql}) x GROUP BY 1, 2", params)
        rows = cursor.fetchall()
        cursor.execute(f"SELECT id FROM ({sql}) x WHERE {effective} = 'qualified' ORDER BY id LIMIT %s",
                       [*params, samples])
        sample_ids = [row[0] for row in cursor.fetchall()]
    status = {(old, new): count for old, new, count in rows}
    return {
        "candidates": sum(status.values()),
        "status": status,
        "qualified": sum(count for (old, new), count in status.items() if new == LeadStatus.QUALIFIED),
        "samples": list(Lead.objects.filter(pk__in=sample_ids).order_by("pk")),
    }


REQUALIFY_TASK = "scoring.tasks.requalify"
REQUALIFY_ENTRY = "requalify"  # its name in CELERY_BEAT_SCHEDULE and in beat's table
ALL_WEEKDAYS = frozenset(range(7))  # cron's numbering: 0 is Sunday


def requalify_schedule():
    """The requalification's beat entry (django-celery-beat's row, as the
    ``RequalificationSchedule`` proxy). Created from ``CELERY_BEAT_SCHEDULE``'s default
    when beat has not run yet, so that marketers can set it before it ever ran (beat
    keeps an existing row as it is: ``nurturing.schedulers``)."""
    from django_celery_beat.models import CrontabSchedule

    from .models import RequalificationSchedule

    task = RequalificationSchedule.objects.filter(task=REQUALIFY_TASK).select_related("crontab").order_by("id").first()
    if task is None:
        default = settings.CELERY_BEAT_SCHEDULE[REQUALIFY_ENTRY]["schedule"]
        crontab, _created = CrontabSchedule.objects.get_or_create(
            minute=default._orig_minute, hour=default._orig_hour, day_of_week=default._orig_day_of_week,
            day_of_month=default._orig_day_of_month, month_of_year=default._orig_month_of_year,
            timezone=settings.CELERY_TIMEZONE,
        )
        task, _created = RequalificationSchedule.objects.get_or_create(
            name=REQUALIFY_ENTRY, defaults={"task": REQUALIFY_TASK, "crontab": crontab})
    return task


@transaction.atomic
def requalify_schedule_set(*, days, at, enabled=True):
    """Run the requalification on ``days`` (cron weekday numbers, 0 is Sunday) at the
    time ``at`` (a ``datetime.time``, in ``CELERY_TIMEZONE``), or not at all
    (``enabled=False``). Beat reads the change within its next tick."""
    from django.core.exceptions import ValidationError
    from django_celery_beat.models import CrontabSchedule

    days = {int(day) for day in days}
    if not days or not days <= ALL_WEEKDAYS:
        raise ValidationError({"days": gettext("Choose at least one day.")})
    task = requalify_schedule()
    crontab, _created = CrontabSchedule.objects.get_or_create(
        minute=str(at.minute), hour=str(at.hour),
        day_of_week="*" if days == ALL_WEEKDAYS else ",".join(str(day) for day in sorted(days)),
        day_of_month="*", month_of_year="*", timezone=settings.CELERY_TIMEZONE,
    )
    task.crontab, task.interval, task.solar, task.clocked = crontab, None, None, None
    task.enabled = enabled
    task.save()  # django-celery-beat's signal tells beat its table changed
    return task


def requalification_overdue(*, now=None):
    """Did the scheduled requalification miss its last slot? Beat sends the daily run
    as a message; if the broker was down at that moment, the message never existed.
    The database knows when the last run happened (its job) and when the schedule
    (editable in admin) wanted one, so a frequent catch-up can tell and run it late.
    False when the schedule is disabled or missing."""
    from django_celery_beat.models import PeriodicTask

    now = now or timezone.now()
    task = PeriodicTask.objects.filter(task=REQUALIFY_TASK, enabled=True).first()
    if task is None:
        return False
    schedule = task.schedule
    last = RescoreJob.objects.filter(kind=RescoreJob.Kind.REQUALIFICATION).aggregate(last=Max("created_at"))["last"]
    # Never ran: the schedule has owed a run since it was set up.
    last = last or task.date_changed
    schedule.nowfun = lambda: now
    return schedule.remaining_estimate(last).total_seconds() <= 0


def requalify_run(*, dry_run=False, now=None, worker="", only_if_overdue=False):
    """Re-evaluate the disqualified leads (those the rules disqualified, and those a
    person disqualified whose requalify date has come) against the active ruleset.

    Holds the lock ``requalify`` for the whole run: a second run at once raises
    ``nurturing.locks.LockHeld``. A real run creates a REQUALIFICATION rescoring job,
    runs it here, then explains each lead it qualified on its timeline and emails the
    owners (or the sales managers). A dry run only counts, with ``requalify_preview``,
    and writes nothing. Returns a dict: ruleset, job, candidates, qualified, notified.
    ``only_if_overdue`` (the catch-up) runs only when the schedule missed a slot. While a
    requalification job is unfinished (its worker died; the sweep resumes it), a new run
    raises ``LockHeld`` too.
    """
    from nurturing.locks import LockHeld, job_lock

    now = now or timezone.now()
    with job_lock(REQUALIFY_LOCK):
        # Checked under the lock, so the catch-up never runs right after the scheduled run.
        if only_if_overdue and not requalification_overdue(now=now):
            return {"ruleset": None, "job": None, "candidates": 0, "qualified": 0, "notified": {}, "skipped": True}
        ruleset = Ruleset.objects.filter(state=Ruleset.State.ACTIVE).first()
        if ruleset is None:
            return {"ruleset": None, "job": None, "candidates": 0, "qualified": 0, "notified": {}}
        if dry_run:
            preview = requalify_preview(ruleset=ruleset, now=now)
            return {"ruleset": ruleset, "job": None, "notified": {}, **preview}
        # A requalification job a dead worker left (the sweep resumes it), or one the sweep
        # took from a run that looked dead, is still requalifying: never start a second one
        # beside it. Waiting for it here instead would hold a worker process that the job
        # itself may need.
        unfinished = RescoreJob.objects.filter(
            kind=RescoreJob.Kind.REQUALIFICATION, status__in=[RescoreJob.Status.PENDING, RescoreJob.Status.RUNNING]
        )
        if unfinished.exists():
            raise LockHeld(REQUALIFY_LOCK)
        job = RescoreJob.objects.create(ruleset=ruleset, kind=RescoreJob.Kind.REQUALIFICATION)
        job = rescore_job_run(job_id=job.pk, worker=worker)
        recent = RescoreJob.objects.filter(
            kind=RescoreJob.Kind.REQUALIFICATION, created_at__gte=now - timedelta(days=REQUALIFY_CATCH_UP_DAYS)
        ).values_list("pk", flat=True)
        notified = requalified_leads_notify(job_ids={job.pk, *recent}, now=now)
        qualified = sum(count for key, count in job.transitions.items() if key.endswith(">qualified")
                        and key.startswith("status:"))
        return {"ruleset": ruleset, "job": job, "candidates": job.leads_seen, "qualified": qualified,
                "notified": notified}


@transaction.atomic
def requalified_leads_notify(*, job_ids, now=None):
    """For each lead these requalification jobs moved to qualified and nobody has been
    told about yet: store the explanation (why it qualifies now) in its 'requalified'
    event, and queue one email per recipient listing their leads: the lead's owner, or
    every active sales manager when it has none. Each event is claimed once, so a
    second call sends nothing. Returns {user_id: number of leads}."""
    from django.contrib.auth import get_user_model

    from leads.roles import SALES_MANAGERS

    from . import notifications

    now = now or timezone.now()
    events = (
        LeadEvent.objects.filter(kind=LeadEvent.Kind.REQUALIFIED, to_status=LeadStatus.QUALIFIED,
                                 data__job__in=list(job_ids))
        .exclude(data__has_key="explanation")
        .select_related("lead__owner", "lead__source", "lead__form")
        .order_by("id")
    )
    rules_by_ruleset = {}
    managers = None
    by_recipient = {}
    for event in events:
        ruleset_id = event.data.get("ruleset")
        if ruleset_id not in rules_by_ruleset:
            ruleset = Ruleset.objects.filter(pk=ruleset_id).first()
            rules_by_ruleset[ruleset_id] = ruleset_to_engine(ruleset) if ruleset else None
        rules = rules_by_ruleset[ruleset_id]
        verdict = lead_evaluate(lead=event.lead, rules=rules, now=now) if rules else None
        data = {**event.data, "explanation": verdict.explanation if verdict else [],
                "score": verdict.score if verdict else event.lead.score,
                "temperature": verdict.temperature if verdict else event.lead.temperature}
        claimed = LeadEvent.objects.filter(pk=event.pk).exclude(data__has_key="explanation").update(data=data)
        if not claimed:
            continue
        owner = event.lead.owner
        if owner is not None and owner.is_active:
            recipients = [owner.pk]
        else:
            if managers is None:
                managers = list(get_user_model().objects.filter(is_active=True, groups__name=SALES_MANAGERS)
                                .order_by("pk").values_list("pk", flat=True).distinct())
            recipients = managers
            if not recipients:
                logger.warning("Lead %s was requalified but has no owner and there are no sales managers",
                               event.lead_id)
        for user_id in recipients:
            by_recipient.setdefault(user_id, []).append(event.pk)
    for user_id, event_ids in by_recipient.items():
        notifications.requalified_leads_enqueue(user_id=user_id, event_ids=event_ids)
    return {user_id: len(event_ids) for user_id, event_ids in by_recipient.items()}


# --- Sweep: jobs nobody is running ----------------------------------------------------------------------------

def sweep_timeouts():
    """(pending grace, heartbeat timeout): how long a pending job waits for its first
    nudge, and how long a running job may go without a heartbeat before the sweep takes
    it back. Settings, so a deployment (or the fault scripts) can tighten them."""
    return (timedelta(seconds=getattr(settings, "FUNIL_RESCORE_PENDING_GRACE_SECONDS", 60)),
            timedelta(seconds=getattr(settings, "FUNIL_RESCORE_HEARTBEAT_TIMEOUT_SECONDS", 600)))


def rescore_jobs_sweep(*, now=None):
    """Beat, every minute: a job still pending after a minute is enqueued again (its
    first nudge was lost, or no worker was up); a running job whose heartbeat is older
    than ten minutes lost its worker, so it goes back to pending (it resumes after
    ``done_through_id``) and is enqueued. Such jobs of a ruleset that is no longer active
    are marked failed instead: finishing them would score leads with the old rules.
    Returns {"enqueued": [...], "reset": [...]}."""
    from .tasks import run_rescore_job

    now = now or timezone.now()
    pending_grace, heartbeat_timeout = sweep_timeouts()
    stale = Q(heartbeat_at__lt=now - heartbeat_timeout) | Q(heartbeat_at__isnull=True,
                                                           started_at__lt=now - heartbeat_timeout)
    unfinished = Q(status=RescoreJob.Status.PENDING, created_at__lt=now - pending_grace) | Q(
        stale, status=RescoreJob.Status.RUNNING)
    # Resuming the job of a ruleset that is no longer active would score leads with old rules.
    superseded = RescoreJob.objects.filter(unfinished).exclude(ruleset__state=Ruleset.State.ACTIVE)
    for job_id in superseded.values_list("pk", flat=True):
        RescoreJob.objects.filter(unfinished, pk=job_id).update(
            status=RescoreJob.Status.FAILED, finished_at=now,
            error="Not resumed: its ruleset is no longer the active one.",
        )
    reset = []
    for job_id in RescoreJob.objects.filter(stale, status=RescoreJob.Status.RUNNING).values_list("pk", flat=True):
        # Conditional, so that a worker that just made progress keeps its job.
        if RescoreJob.objects.filter(stale, pk=job_id, status=RescoreJob.Status.RUNNING).update(
            status=RescoreJob.Status.PENDING, worker=""
        ):
            reset.append(job_id)
    waiting = RescoreJob.objects.filter(status=RescoreJob.Status.PENDING).filter(
        Q(created_at__lt=now - pending_grace) | Q(pk__in=reset)
    )
    enqueued = []
    for job_id in waiting.order_by("pk").values_list("pk", flat=True):
        try:
            # The nudge expires: if no worker takes it, the next sweep sends a fresh one
            # instead of piling up copies.
            run_rescore_job.apply_async((job_id,), expires=int(pending_grace.total_seconds()) * 2)
        except Exception:  # noqa: BLE001 - the broker is down: the next sweep tries again
            logger.warning("Could not enqueue rescoring job %s", job_id)
            continue
        enqueued.append(job_id)
    return {"enqueued": enqueued, "reset": reset}
