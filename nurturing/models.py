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
