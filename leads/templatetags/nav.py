"""What the page header offers a person."""

from django import template

from .. import roles

register = template.Library()


@register.filter
def sees_reports(user):
    """``user|sees_reports``: may open the dashboard (marketers, sales managers)."""
    return roles.can_see_reports(user)
