"""Who may do what through the API, after the roles in ``leads.roles``.

- Reading leads (list, retrieve, timeline, export): ``view_lead`` (reps, managers, marketers).
- Creating: ``add_lead`` (managers and integration users given it).
- Changing contact data and every domain action: ``change_lead`` (reps and managers),
  and on that lead: managers any, reps their own and unassigned ones. The services
  check the lead again under its row lock; this check answers 403 before any input
  is validated.
- Forms: Django model permissions on ``leads.Form`` (marketers edit them).

Anonymous requests get 401 (the views list TokenAuthentication first, whose
``WWW-Authenticate: Token`` header is what lets DRF answer 401 instead of 403).
"""

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission, DjangoModelPermissions

from .. import roles

LEAD_READ_ACTIONS = {"list", "retrieve", "events", "export", "metadata", None}


class LeadPermission(BasePermission):
    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if view.action in LEAD_READ_ACTIONS:
            return user.has_perm("leads.view_lead")
        if view.action == "create":
            return user.has_perm("leads.add_lead")
        return user.has_perm("leads.change_lead")

    def has_object_permission(self, request, view, obj):
        if view.action in LEAD_READ_ACTIONS:
            return True
        self.message = _("You may act only on your own leads and unassigned ones.")
        return roles.can_work_lead(request.user, obj)


class FormPermission(DjangoModelPermissions):
    """Model permissions, reads included (DRF's default lets any user read)."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }
