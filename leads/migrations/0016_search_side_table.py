"""PostgreSQL: the search's trigram indexes move from leads_lead to a side table.

A trigram (GIN) index on leads_lead took a few dozen new entries for every new row
version of a lead, whatever changed: a rescoring of a million leads spent most of its
time there (20,000 score updates: 1.35 s with the two GIN indexes, 0.48 s without).
``leads_leadsearch`` holds, per lead, the searched document (unaccented, upper-cased
name, company and email) and the phone, with the two trigram indexes; triggers keep it
in step with leads_lead: a statement-level one with the inserted rows (COPY and bulk
inserts are one INSERT … SELECT), a row-level one on updates that change one of those
columns (a score or status update never fires it). Other databases: nothing to do (the
search falls back to plain case-insensitive matching).
"""

import django.db.models.deletion
from django.db import migrations, models

DOCUMENT = "upper(funil_unaccent({t}.first_name || ' ' || {t}.last_name || ' ' || {t}.company || ' ' " \
           "|| coalesce({t}.email, '')))"

FORWARD = [
    f"""INSERT INTO leads_leadsearch (lead_id, document, phone)
        SELECT l.id, {DOCUMENT.format(t="l")}, l.phone FROM leads_lead l
        ON CONFLICT (lead_id) DO NOTHING""",
    # ``LIKE '%word%'`` is estimated from the column's histogram: a finer one tells a
    # word in a few leads from one in tens of thousands (and the inbox's plan with it).
    "ALTER TABLE leads_leadsearch ALTER COLUMN document SET STATISTICS 1000",
    "CREATE INDEX IF NOT EXISTS leadsearch_document_trgm_idx ON leads_leadsearch USING gin (document gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS leadsearch_phone_trgm_idx ON leads_leadsearch USING gin (phone gin_trgm_ops)",
    f"""CREATE OR REPLACE FUNCTION funil_lead_search_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO leads_leadsearch (lead_id, document, phone)
            SELECT n.id, {DOCUMENT.format(t="n")}, n.phone FROM inserted n
            ON CONFLICT (lead_id) DO UPDATE SET document = excluded.document, phone = excluded.phone;
            RETURN NULL;
        END $$""",
    f"""CREATE OR REPLACE FUNCTION funil_lead_search_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO leads_leadsearch (lead_id, document, phone)
            VALUES (NEW.id, {DOCUMENT.format(t="NEW")}, NEW.phone)
            ON CONFLICT (lead_id) DO UPDATE SET document = excluded.document, phone = excluded.phone;
            RETURN NULL;
        END $$""",
    """CREATE TRIGGER lead_search_inserted AFTER INSERT ON leads_lead
       REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION funil_lead_search_inserted()""",
    """CREATE TRIGGER lead_search_updated AFTER UPDATE OF first_name, last_name, company, email, phone
       ON leads_lead FOR EACH ROW
       WHEN (OLD.first_name IS DISTINCT FROM NEW.first_name OR OLD.last_name IS DISTINCT FROM NEW.last_name
             OR OLD.company IS DISTINCT FROM NEW.company OR OLD.email IS DISTINCT FROM NEW.email
             OR OLD.phone IS DISTINCT FROM NEW.phone)
       EXECUTE FUNCTION funil_lead_search_updated()""",
    "DROP INDEX IF EXISTS lead_search_trgm_idx",
    "DROP INDEX IF EXISTS lead_phone_trgm_idx",
    "ANALYZE leads_leadsearch",
]
BACKWARD = [
    f"""CREATE INDEX IF NOT EXISTS lead_search_trgm_idx ON leads_lead USING gin (({DOCUMENT.format(t="leads_lead")})
        gin_trgm_ops)""",
    "CREATE INDEX IF NOT EXISTS lead_phone_trgm_idx ON leads_lead USING gin (phone gin_trgm_ops)",
    "DROP TRIGGER IF EXISTS lead_search_updated ON leads_lead",
    "DROP TRIGGER IF EXISTS lead_search_inserted ON leads_lead",
    "DROP FUNCTION IF EXISTS funil_lead_search_updated()",
    "DROP FUNCTION IF EXISTS funil_lead_search_inserted()",
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

    dependencies = [("leads", "0015_rule_match_days")]

    operations = [
        migrations.CreateModel(
            name="LeadSearch",
            fields=[
                ("lead", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                              related_name="+", serialize=False, to="leads.lead")),
                ("document", models.TextField()),
                ("phone", models.TextField()),
            ],
            options={"verbose_name": "search entry of a lead", "verbose_name_plural": "search entries of leads"},
        ),
        migrations.RunPython(forward, backward),
    ]
