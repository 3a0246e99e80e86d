# Every page's header counts the unassigned hot leads. Where reps own most qualified
# leads, the planner walked all of them through (status, score) looking for the few
# unassigned ones; this small partial index holds just those.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("leads", "0013_dashboard_report_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="lead",
            index=models.Index(
                condition=models.Q(("owner__isnull", True), ("status", "qualified")),
                fields=["temperature"],
                name="lead_unassigned_idx",
            ),
        ),
    ]
