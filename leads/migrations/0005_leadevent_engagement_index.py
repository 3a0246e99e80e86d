# The timeline index gains the event kind, so that rescoring reads a lead's engagement
# (its events of some kinds since some date) from the index alone.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("leads", "0004_import_job"),
    ]

    operations = [
        # The new index first: the timeline is never without one.
        migrations.AddIndex(
            model_name="leadevent",
            index=models.Index(fields=["lead", "-created_at", "kind"], name="leadevent_timeline_idx"),
        ),
        migrations.RemoveIndex(
            model_name="leadevent",
            name="leadevent_lead_created_idx",
        ),
    ]
