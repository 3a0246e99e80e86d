from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.utils.translation import gettext_lazy as _


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = _("Qualification")

    def ready(self):
        from . import compiler

        # SQLite gets the engine's text folding as SQL functions on every connection.
        connection_created.connect(compiler.register_sqlite_functions, dispatch_uid="funil-sqlite-functions")
