from django.db import models


class BareRow(models.Model):
    """The baseline of bench/ingest.py: one table, one insert per request."""

    email = models.CharField(max_length=254)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.email
