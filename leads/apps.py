from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class LeadsConfig(AppConfig):
    name = "leads"
    verbose_name = _("Leads")

    def ready(self):
        from corsheaders.signals import check_request_enabled

        from . import cors, roles

        check_request_enabled.connect(cors.allow_form_origin, dispatch_uid="funil-form-cors")

        # Permissions exist only after migrate, app by app; the groups are re-synced
        # after each so the last app's permissions are included too.
        post_migrate.connect(roles.sync_groups_after_migrate, dispatch_uid="funil-sync-groups")
