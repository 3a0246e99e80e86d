# The dashboard reads a period's leads from one covering index (created_at, with every
# column its figures need), so each of its passes is an index-only scan; it replaces the
# plain created_at index. Requalified events get a small partial index of their own.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("leads", "0012_rescore_fewer_lead_indexes"),
    ]

    operations = [
        # The new index first: created_at is never without one.
        migrations.AddIndex(
            model_name="lead",
            index=models.Index(
                fields=["created_at"],
                include=("id", "status", "qualified_at", "first_touched_at", "deal_value", "fit", "reason", "source",
                         "form", "owner", "utm_campaign", "interest"),
                name="lead_report_idx",
            ),
        ),
        migrations.AlterField(
            model_name="lead",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True, verbose_name="created"),
        ),
        migrations.AddIndex(
            model_name="leadevent",
            index=models.Index(
                condition=models.Q(("kind", "requalified"), ("to_status", "qualified")),
                fields=["created_at"],
                include=("lead",),
                name="leadevent_requalified_idx",
            ),
        ),
    ]
