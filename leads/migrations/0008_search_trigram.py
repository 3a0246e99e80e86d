"""PostgreSQL: accent-insensitive search that an index can serve.

``unaccent()`` is only STABLE, so it cannot appear in an index; ``funil_unaccent`` is
the usual IMMUTABLE wrapper with the dictionary named. A trigram (GIN) index over the
unaccented, upper-cased name, company and email, and one over the phone, let
``selectors.lead_search`` find ``%term%`` without reading every lead. Other databases:
nothing to do (the search falls back to plain case-insensitive matching).
"""

from django.db import migrations

FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    """CREATE OR REPLACE FUNCTION funil_unaccent(text) RETURNS text
       LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
       AS $$ SELECT public.unaccent('public.unaccent'::regdictionary, $1) $$""",
    """CREATE INDEX IF NOT EXISTS lead_search_trgm_idx ON leads_lead USING gin (
       (upper(funil_unaccent(first_name || ' ' || last_name || ' ' || company || ' ' || coalesce(email, ''))))
       gin_trgm_ops)""",
    "CREATE INDEX IF NOT EXISTS lead_phone_trgm_idx ON leads_lead USING gin (phone gin_trgm_ops)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS lead_phone_trgm_idx",
    "DROP INDEX IF EXISTS lead_search_trgm_idx",
    "DROP FUNCTION IF EXISTS funil_unaccent(text)",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in FORWARD:
            schema_editor.execute(statement)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [("leads", "0007_assignment_rules")]

    operations = [migrations.RunPython(forward, backward)]
