"""The three groups and what each may do, kept in sync after every migrate.

Sales reps act on their own leads and on unassigned ones; sales managers on every
lead; marketers read leads and edit the catalogue, rules and sequences in admin.
"""

from django.contrib.auth.models import Group, Permission

SALES = "Sales"
SALES_MANAGERS = "Sales managers"
MARKETING = "Marketing"

_CATALOGUE = ["product", "servicearea", "reason", "source", "form"]
_ASSIGNMENT = [f"{action}_assignmentrule" for action in ("add", "change", "delete", "view")]
_CRUD = ["add", "change", "delete", "view"]

# app label -> codenames; "*" is every permission of the app.
GROUP_PERMISSIONS = {
    SALES: {
        "leads": ["view_lead", "change_lead", "view_leadevent", "add_leadevent"]
        + [f"view_{model}" for model in _CATALOGUE],
    },
    SALES_MANAGERS: {
        "leads": ["view_lead", "change_lead", "add_lead", "work_any_lead", "view_leadevent", "add_leadevent",
                  "add_importjob", "view_importjob"]
        + [f"view_{model}" for model in _CATALOGUE] + _ASSIGNMENT,
        "auth": ["view_user"],
    },
    MARKETING: {
        "leads": ["view_lead", "view_leadevent", "add_importjob", "view_importjob", *_ASSIGNMENT]
        + [f"{a}_{m}" for m in _CATALOGUE for a in _CRUD]
        + [f"{a}_{m}" for m in ("spendrecord", "webhookendpoint") for a in _CRUD] + ["view_webhookdelivery"],
        # Their own schedule (scoring's RequalificationSchedule), not django-celery-beat's
        # table of every periodic job, which the operators keep.
        "scoring": "*",
        "nurturing": "*",
    },
}


def sync_groups():
    """Create the groups and give each exactly its permissions (idempotent)."""
    for group_name, by_app in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = Permission.objects.none()
        for app_label, codenames in by_app.items():
            perms = Permission.objects.filter(content_type__app_label=app_label)
            if codenames != "*":
                perms = perms.filter(codename__in=codenames)
            wanted = wanted | perms
        group.permissions.set(wanted)


def sync_groups_after_migrate(sender, **kwargs):
    sync_groups()


def group_names(user):
    """The names of the person's groups: one query, remembered on the user object (which
    lives for one request), as Django remembers permissions (``_perm_cache``)."""
    if not user.is_authenticated:
        return frozenset()
    try:
        return user._funil_group_names
    except AttributeError:
        user._funil_group_names = frozenset(user.groups.values_list("name", flat=True))
        return user._funil_group_names


def is_manager(user):
    return user.is_superuser or user.has_perm("leads.work_any_lead")


def is_sales(user):
    return is_manager(user) or SALES in group_names(user)


def can_work_lead(user, lead):
    """May this person change this lead? Managers: any; reps: their own or unassigned."""
    if not user.is_authenticated or not user.is_active:
        return False
    if is_manager(user):
        return True
    return user.has_perm("leads.change_lead") and lead.owner_id in (None, user.pk)


def can_see_reports(user):
    """The dashboard: marketers and sales managers (and superusers)."""
    if not user.is_authenticated or not user.is_active:
        return False
    return is_manager(user) or MARKETING in group_names(user)
