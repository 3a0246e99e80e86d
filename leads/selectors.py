"""Reads: the querysets views, the API and jobs start from."""

import re

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F, Func, Q
from django.db.models.lookups import IContains

from . import roles
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
    condition = Q()
    for term in text.split(" ")[:MAX_SEARCH_TERMS]:
        condition &= _term_condition(term, unaccent)
    whole_number = _phone_digits(text)
    if whole_number and " " in text:
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
