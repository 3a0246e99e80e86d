"""Reads: the querysets views, the API and jobs start from."""

import re

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F, Func, Q
from django.db.models.lookups import IContains

from . import roles
from .hotcache import TimedCache
from .models import Form, Lead, LeadStatus
from .normalize import fold

# Searched accent- and case-insensitively (people type "joao" for "João").
SEARCH_NAME_FIELDS = ("first_name", "last_name", "company")
MAX_SEARCH_TERMS = 8
_PHONE_PUNCTUATION = re.compile(r"[\s().+\-/]")


def lead_list_for(user):
    """The leads a person may see. Everyone with view permission sees every lead;
    reps' default inbox narrows it further (``inbox_for``)."""
    if not user.has_perm("leads.view_lead"):
        return Lead.objects.none()
    return Lead.objects.select_related("owner", "source", "form", "reason")


def inbox_for(user):
    """A rep's default view: qualified leads that are theirs or unassigned, hottest first."""
    leads = lead_list_for(user).filter(status=LeadStatus.QUALIFIED)
    if not roles.is_manager(user):
        leads = leads.filter(Q(owner=user) | Q(owner__isnull=True))
    return leads.order_by("-score", "-id")


def lead_timeline(lead):
    return lead.events.select_related("actor", "reason").order_by("-created_at", "-id")


TIMELINE_LIMIT = 200


def lead_timeline_shown(lead, limit=TIMELINE_LIMIT):
    """The newest ``limit`` events of the lead page, each with what it shows as values
    the template formats for the reader: ``assigned_from`` / ``assigned_to``, the people
    of an assignment by their full names (the events keep usernames, as they were when
    written: the names of the whole page in one query; a username no user has any more
    shows as it is), ``requalify_on`` (a date) and ``deal_amount`` (a Decimal)."""
    from .models import LeadEvent

    events = list(lead_timeline(lead)[:limit])
    usernames = {
        username for event in events if event.kind == LeadEvent.Kind.ASSIGNED
        for username in ((event.data or {}).get("from"), (event.data or {}).get("to")) if username
    }
    names = {}
    if usernames:
        user_model = get_user_model()
        people = user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": usernames})
        names = {person.get_username(): person.get_full_name() or person.get_username() for person in people}
    for event in events:
        data = event.data or {}
        event.assigned_from = event.assigned_to = ""
        if event.kind == LeadEvent.Kind.ASSIGNED:  # other kinds keep other things under "from" (a score, a fit)
            event.assigned_from = names.get(data.get("from"), data.get("from")) or ""
            event.assigned_to = names.get(data.get("to"), data.get("to")) or ""
        event.requalify_on = _event_date(data.get("requalify_at"))
        event.deal_amount = _event_decimal(data.get("deal_value"))
    return events


def _event_date(value):
    """An ISO date or date and time kept in an event -> the day in the site's time zone."""
    from django.utils import timezone
    from django.utils.dateparse import parse_date, parse_datetime

    if not value or not isinstance(value, str):
        return None
    try:
        moment = parse_datetime(value)
        if moment is None:
            return parse_date(value)
    except ValueError:
        return None
    if timezone.is_naive(moment):
        return moment.date()
    return timezone.localtime(moment).date()


def _event_decimal(value):
    from decimal import Decimal, InvalidOperation

    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def lead_search(leads, text):
    """Narrow ``leads`` to those matching every word of ``text`` in the first or last
    name, email, company or phone.

    Names and company ignore accents and case on PostgreSQL with the ``unaccent``
    extension ("joao" finds "João"); elsewhere the match is a plain case-insensitive
    one. A phone typed any way ("(11) 98765-4321") matches the stored E.164 number.
    """
    text = " ".join((text or "").split())
    if not text:
        return leads
    unaccent = unaccent_available()
    terms = text.split(" ")[:MAX_SEARCH_TERMS]
    whole_number = _phone_digits(text) if " " in text else ""
    if unaccent and search_index_available():
        return _indexed_search(leads, terms, whole_number)
    condition = Q()
    for term in terms:
        condition &= _term_condition(term, unaccent)
    if whole_number:
        condition |= Q(phone__contains=whole_number)
    return leads.filter(condition)


def _term_condition(term, unaccent):
    folded = fold(term)
    condition = Q(email__icontains=term)
    for name in SEARCH_NAME_FIELDS:
        if unaccent:
            condition |= Q(IContains(Func(F(name), function="UNACCENT"), folded))
        else:
            condition |= Q(**{f"{name}__icontains": term})
            if folded != term.casefold():
                condition |= Q(**{f"{name}__icontains": folded})
    digits = _phone_digits(term)
    if digits:
        condition |= Q(phone__contains=digits)
    return condition


def _like_pattern(text):
    """``%text%`` for LIKE, with LIKE's own wildcards in ``text`` taken literally."""
    return f"%{connection.ops.prep_for_like_query(text)}%"


def _indexed_search(leads, terms, whole_number):
    """``lead_search`` over ``leads_leadsearch`` (PostgreSQL, migration 0016): every term
    in the folded document or, for digits, in the phone, each a trigram-indexed LIKE."""
    from django.db.models.expressions import RawSQL

    clauses, params = [], []
    for term in terms:
        clause = "s.document LIKE %s"
        params.append(_like_pattern(fold(term).upper()))
        digits = _phone_digits(term)
        if digits:
            clause = f"({clause} OR s.phone LIKE %s)"
            params.append(_like_pattern(digits))
        clauses.append(clause)
    where = " AND ".join(clauses)
    if whole_number:
        where = f"({where}) OR s.phone LIKE %s"
        params.append(_like_pattern(whole_number))
    return leads.filter(id__in=RawSQL(f"SELECT s.lead_id FROM leads_leadsearch s WHERE {where}", params))


_INDEX_FOUND = set()


def search_index_available():
    """Is the indexed search of migration 0016 (``leads_leadsearch`` and the triggers
    that fill it) in this database?"""
    name = connection.settings_dict["NAME"]
    if name in _INDEX_FOUND:
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'lead_search_inserted')")
        found = cursor.fetchone()[0]
    if found:
        _INDEX_FOUND.add(name)
    return found


def _phone_digits(text):
    """The digits of something that looks like (part of) a phone number, else ''."""
    digits = _PHONE_PUNCTUATION.sub("", text).lstrip("0")
    return digits if digits.isdigit() and len(digits) >= 3 else ""


_UNACCENT_FOUND = set()


def unaccent_available():
    """Is PostgreSQL's ``unaccent`` extension installed in this database? A positive
    answer is remembered per database; a negative one is asked again next time, so
    installing the extension takes effect without a restart."""
    if connection.vendor != "postgresql":
        return False
    name = connection.settings_dict["NAME"]
    if name in _UNACCENT_FOUND:
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'unaccent')")
        found = cursor.fetchone()[0]
    if found:
        _UNACCENT_FOUND.add(name)
    return found


def lead_rows(leads, paths, *, chunk_size=2000):
    """Stream tuples of ``paths`` (field names, ``owner__username``...) from the
    database in chunks: a million leads never sit in memory at once."""
    return leads.values_list(*paths).iterator(chunk_size=chunk_size)


def lead_contact_conflict(lead, *, email, phone):
    """The field ('email' or 'phone') another lead already holds, were ``lead`` to
    get this email and phone; None when there is no clash. Mirrors the unique
    constraints on Lead (email; phone among leads without email)."""
    others = Lead.objects.exclude(pk=lead.pk)
    if email and others.filter(email=email).exists():
        return "email"
    if not email and phone and others.filter(email__isnull=True, phone=phone).exists():
        return "phone"
    return None


def sales_people():
    """Active users a lead can be assigned to: sales reps, managers and superusers."""
    return (
        get_user_model().objects.filter(is_active=True)
        .filter(Q(groups__name__in=[roles.SALES, roles.SALES_MANAGERS]) | Q(is_superuser=True))
        .distinct()
    )


def form_list():
    return Form.objects.select_related("source").order_by("name", "id")


def lead_stored_explanation(lead):
    """The newest verdict the rules stored for this lead: ``{"score", "temperature",
    "explanation", "at"}`` from its latest scoring event, or None. At capture the verdict
    rides on the first status event; later ones on 'scored' events."""
    from .models import LeadEvent

    event = (
        lead.events.filter(kind__in=[LeadEvent.Kind.SCORED, LeadEvent.Kind.STATUS_CHANGED, LeadEvent.Kind.REQUALIFIED],
                           data__has_key="explanation")
        .order_by("-created_at", "-id").only("data", "created_at").first()
    )
    if event is None:
        return None
    return {**event.data, "at": event.created_at}


def lead_explanation(lead):
    """Why the lead has its score: the stored verdict when it still gives the lead's
    score, else the active rules' verdict now (the pure engine), marked ``live``."""
    stored = lead_stored_explanation(lead)
    if stored is not None and stored.get("score") == lead.score:
        return {**stored, "live": False}
    from scoring.services import lead_evaluate

    verdict = lead_evaluate(lead=lead)
    if verdict is None:
        return stored and {**stored, "live": False}
    return {"score": verdict.score, "temperature": verdict.temperature, "explanation": verdict.explanation,
            "live": True, "at": None}


HEADER_COUNT_CAP = 999


def header_counts(user):
    """The two numbers in every page's header: my open leads, unassigned hot leads.
    Each is counted up to ``HEADER_COUNT_CAP`` (shown as "999+"), so the header costs
    the same at any size."""
    from .models import Temperature

    qualified = Lead.objects.filter(status=LeadStatus.QUALIFIED).order_by().values("id")
    mine = qualified.filter(owner_id=user.pk)[: HEADER_COUNT_CAP + 1].count()
    hot = qualified.filter(owner__isnull=True, temperature=Temperature.HOT)[: HEADER_COUNT_CAP + 1].count()
    return {"mine": mine, "unassigned_hot": hot, "cap": HEADER_COUNT_CAP}


EXACT_COUNT_LIMIT = 10_000


def lead_count(leads):
    """``(count, exact)``: exact up to 10,000; above, PostgreSQL's planner estimate of
    the filtered query (never less than 10,001), elsewhere 10,001 and ``exact=False``."""
    capped = leads.order_by().values("id")[: EXACT_COUNT_LIMIT + 1].count()
    if capped <= EXACT_COUNT_LIMIT:
        return capped, True
    estimate = None
    if connection.vendor == "postgresql":
        import json

        sql, params = leads.order_by().values("id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        estimate = int(plan[0]["Plan"]["Plan Rows"])
    return max(estimate or 0, EXACT_COUNT_LIMIT + 1), False


_capture_forms = TimedCache()


def form_for_capture(slug):
    """The active form with this slug and its source, or None, as this process read it
    at most ``hotcache.SECONDS`` ago (the public endpoint asks on every submission): a
    form deactivated or edited takes effect in every worker within that bound."""
    return _capture_forms.get(
        slug, lambda key: Form.objects.select_related("source").filter(slug=key, active=True).first()
    )


# The inbox's total, remembered per person and set of filters for a short time
# (``FUNIL_INBOX_TOTAL_SECONDS``): paging, sorting and reloading the same view do not
# count again. A person's own changes (an action, a bulk action) forget their totals by
# moving their generation, which is part of every key.
_TOTAL_KEY = "funil:inbox-total:{user}:{generation}:{filters}"
_GENERATION_KEY = "funil:inbox-total-generation:{user}"
# Filters that do not change which leads match.
_NOT_COUNTED = ("cursor", "ordering", "page_size")


def lead_count_remembered(leads, *, user, filters):
    """``(count, exact, counted_at)``: ``lead_count(leads)``, or the one this person got
    for the same ``filters`` (a QueryDict) less than ``FUNIL_INBOX_TOTAL_SECONDS`` ago.
    ``counted_at`` is the Unix time of the count."""
    import hashlib
    import time

    from django.conf import settings
    from django.core.cache import cache

    seconds = getattr(settings, "FUNIL_INBOX_TOTAL_SECONDS", 30)
    if seconds <= 0 or not getattr(user, "pk", None):
        return (*lead_count(leads), time.time())
    canonical = sorted((key, sorted(filters.getlist(key))) for key in filters if key not in _NOT_COUNTED)
    digest = hashlib.blake2b(repr(canonical).encode(), digest_size=12).hexdigest()
    generation = cache.get(_GENERATION_KEY.format(user=user.pk), 0)
    key = _TOTAL_KEY.format(user=user.pk, generation=generation, filters=digest)
    remembered = cache.get(key)
    if remembered is not None:
        return tuple(remembered)
    count, exact = lead_count(leads)
    counted_at = time.time()
    cache.set(key, (count, exact, counted_at), seconds)
    return count, exact, counted_at


def lead_counts_forget(user):
    """Forget the totals ``user`` was shown (after their own change to leads). Called on
    commit, so a page counted meanwhile cannot keep the old figure under the new key."""
    import time

    from django.conf import settings
    from django.core.cache import cache

    seconds = getattr(settings, "FUNIL_INBOX_TOTAL_SECONDS", 30)
    if seconds <= 0 or not getattr(user, "pk", None):
        return
    # Outlives every total counted under the previous generation, so losing this key
    # later cannot bring one of them back.
    cache.set(_GENERATION_KEY.format(user=user.pk), time.time_ns(), 2 * seconds + 60)
