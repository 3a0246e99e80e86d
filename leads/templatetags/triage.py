from django import template
from django.conf import settings
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext

from .. import normalize, selectors
from ..models import LeadStatus, Temperature

register = template.Library()


@register.simple_tag(takes_context=True)
def header_counts(context):
    """My open leads and the unassigned hot ones, for the page header (None when logged out)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_perm("leads.view_lead"):
        return None
    return selectors.header_counts(user)


@register.filter
def signed(value):
    try:
        value = int(value)
    except (TypeError, ValueError):
        return value
    return f"{value:+d}"


@register.filter
def as_text(value):
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if value is None or value == "":
        return "—"
    return str(value)


@register.filter
def getlist(query, key):
    """``query|getlist:"status"``: every value of a repeated query parameter."""
    return query.getlist(key) if hasattr(query, "getlist") else []


@register.simple_tag
def inbox_rows(rows, can_act, checked=frozenset()):
    """The inbox's table rows, built in one pass: fifty rows of ten cells through the
    template engine (a variable lookup, a filter and an escape per cell, a choices
    lookup per badge) were the larger part of a page's time."""
    if not rows:
        return format_html('<tr><td colspan="9">{}</td></tr>', gettext("No leads here."))
    checked = checked if isinstance(checked, set | frozenset) else frozenset()  # "" when the view gives none
    e = conditional_escape
    statuses = {value: e(str(label)) for value, label in LeadStatus.choices}
    temperatures = {value: e(str(label)) for value, label in Temperature.choices}
    l_company, l_state, l_interest, l_score, l_owner, l_created = (
        e(gettext(text)) for text in ("Company", "State", "Interest", "Score", "Owner", "Created"))
    unassigned, select_label = e(gettext("Unassigned")), e(gettext("Select"))
    url_of = _lead_url_pattern()
    html = []
    for lead in rows:
        pk = int(lead.pk)
        url = url_of(pk)
        name = e(str(lead))
        owner = lead.owner
        owner_name = (f"<em>{unassigned}</em>" if owner is None
                      else e(owner.get_full_name() or owner.username))
        created = timezone.localtime(lead.created_at)
        tick = " checked" if pk in checked else ""
        checkbox = (f'<td><input type="checkbox" name="leads" value="{pk}" aria-label="{select_label} {name}"{tick}>'
                    f'</td>' if can_act else "")
        html.append(
            f'<tr data-href="{url}" data-id="{pk}">{checkbox}'
            f'<td><a class="open" href="{url}">{name}</a><br><small>{e(lead.email or "")}</small></td>'
            f'<td data-label="{l_company}">{e(lead.company)}</td><td data-label="{l_state}">{e(lead.state)}</td>'
            f'<td data-label="{l_interest}">{e(lead.interest)}</td>'
            f'<td class="num" data-label="{l_score}">{e(formats.localize(lead.score))}</td>'
            f'<td><span class="badge status-{e(lead.status)}">{statuses.get(lead.status, e(lead.status))}</span> '
            f'<span class="badge temp-{e(lead.temperature)}">'
            f'{temperatures.get(lead.temperature, e(lead.temperature))}</span></td>'
            f'<td data-label="{l_owner}">{owner_name}</td>'
            f'<td data-label="{l_created}"><time datetime="{created.isoformat()}">'
            f'{e(formats.date_format(created, "SHORT_DATE_FORMAT"))}</time></td></tr>'
        )
    return mark_safe("\n".join(html))  # noqa: S308 - every value above is escaped


@register.simple_tag
def lead_badges(lead):
    """The status and temperature badges of one lead."""
    return format_html(
        '<span class="badge status-{}">{}</span>\n<span class="badge temp-{}" title="{}">{}</span>',
        lead.status, lead.get_status_display(), lead.temperature, gettext("Temperature"),
        lead.get_temperature_display(),
    )


def _lead_url_pattern():
    """pk -> the lead page's path, from one ``reverse`` instead of one per row."""
    marker = 918273645
    prefix, suffix = reverse("leads:detail", args=[marker]).split(str(marker))
    return lambda pk: f"{prefix}{pk}{suffix}"


@register.filter
def criterion(item):
    """What a matched rule of an explanation looked at, in words ("State is not one of SP")."""
    from scoring.labels import criterion as words

    return words(item.get("field", ""), item.get("operator", ""), item.get("value"))


CURRENCY_SYMBOLS = {"BRL": "R$", "USD": "US$", "EUR": "€"}


@register.filter
def money(value, currency="BRL"):
    """``lead.budget|money:lead.budget_currency``: "R$ 150.000,00" in pt-BR, "R$ 150,000.00" in English."""
    if value is None or value == "":
        return "—"
    amount = formats.number_format(value, 2, use_l10n=True, force_grouping=True)
    return f"{CURRENCY_SYMBOLS.get(currency or 'BRL', currency)} {amount}"


@register.filter
def phone(value):
    """``lead.phone|phone``: the stored E.164 number as people read it ("(11) 98765-4321";
    a foreign one "+1 650-253-0000")."""
    return normalize.display_phone(value, settings.FUNIL_DEFAULT_PHONE_REGION)


@register.filter
def seen(item):
    """The lead's value a matched rule saw, numbers in the reader's format."""
    from decimal import Decimal, InvalidOperation

    from scoring import engine
    from scoring.labels import value_text

    value = item.get("seen")
    if value is None or value == "" or value == []:
        return "—"
    numeric = item.get("field") in engine.NUMBER_FIELDS or item.get("field") in engine.ENGAGEMENT_FIELDS \
        or not item.get("field")
    if numeric and isinstance(value, str | int | float):
        try:
            value = Decimal(str(value))
        except InvalidOperation:
            pass
    return value_text(value)
