from django import template

from .. import selectors

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
