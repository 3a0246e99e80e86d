"""Who may use the rulesets API.

- Marketers (group Marketing, which holds every ``scoring`` permission) and superusers
  read and write: create and change drafts, duplicate, activate, see the impact, preview
  and follow the rescoring jobs. The checks are Django model permissions, so a staff
  user given ``scoring.*`` permissions one by one gets exactly what they were given.
- Sales reps and managers may read rulesets and their rules (list and retrieve): the
  rules are what scored their leads, and sales' feedback is meant to be read next to
  them. They may not write, nor run the impact (a query over every lead) or previews.
- Anonymous requests get 401; anyone else 403.
"""

from rest_framework.permissions import BasePermission

from leads import roles

READ_ACTIONS = {"list", "retrieve", "metadata", None}
ACTION_PERMISSIONS = {
    "create": "scoring.add_ruleset",
    "duplicate": "scoring.add_ruleset",
    "update": "scoring.change_ruleset",
    "partial_update": "scoring.change_ruleset",
    "activate": "scoring.change_ruleset",
    "destroy": "scoring.delete_ruleset",
    "impact": "scoring.view_ruleset",
    "preview": "scoring.view_ruleset",
}


class RulesetPermission(BasePermission):
    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated or not user.is_active:
            return False
        if view.action in READ_ACTIONS:
            return user.has_perm("scoring.view_ruleset") or roles.is_sales(user)
        permission = ACTION_PERMISSIONS.get(view.action)
        return bool(permission) and user.has_perm(permission)


class RescoreJobPermission(BasePermission):
    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.has_perm("scoring.view_rescorejob"))
