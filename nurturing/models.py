from django.db import models
from django.utils.translation import gettext_lazy as _


class WorkerHeartbeat(models.Model):
    """The last time a Celery worker ran a beat-scheduled job: proof that the worker
    and beat are alive, shown by /healthz/ and in admin."""

    name = models.CharField(_("name"), max_length=50, unique=True)
    hostname = models.CharField(_("worker"), max_length=255, blank=True)
    beats = models.PositiveBigIntegerField(_("beats"), default=0)
    last_seen = models.DateTimeField(_("last seen"))

    class Meta:
        verbose_name = _("worker heartbeat")
        verbose_name_plural = _("worker heartbeats")

    def __str__(self):
        return self.name


class JobLock(models.Model):
    """A named lock held by one running job at a time (see ``nurturing.locks``)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    owner = models.CharField(_("owner"), max_length=64, blank=True)
    acquired_at = models.DateTimeField(_("acquired"), null=True, blank=True)
    locked_until = models.DateTimeField(_("locked until"))

    class Meta:
        verbose_name = _("job lock")
        verbose_name_plural = _("job locks")

    def __str__(self):
        return self.name


class Segment(models.Model):
    """A saved filter over the lead base: the query parameters of ``leads.filters.LeadFilterSet``.

    The inbox saves a view as a segment, the dashboard breaks figures down by one, and a
    nurture sequence enrolls the leads that enter one. The same FilterSet applies
    everywhere, so a segment means the same thing in every place. ``owner=me`` in a
    segment means the person looking at it; a job with no person matches no one there.
    """

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=120, unique=True)
    description = models.TextField(_("description"), blank=True)
    filters = models.JSONField(
        _("filters"), default=dict, blank=True,
        help_text=_('Query parameters of the lead list, e.g. {"status": ["disqualified"], "reason": "no_budget"}.'),
    )
    created_by = models.ForeignKey(
        "auth.User", verbose_name=_("created by"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="segments",
    )
    shared = models.BooleanField(_("shared"), default=True, help_text=_("Visible to everyone, not only its author."))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]

    def __str__(self):
        return self.name

    def query_string(self):
        """The filters as a URL query string, for the inbox link of this segment."""
        from django.http import QueryDict

        query = QueryDict(mutable=True)
        for key, value in sorted(self.filters.items()):
            query.setlist(key, [str(item) for item in value] if isinstance(value, list) else [str(value)])
        return query.urlencode()
