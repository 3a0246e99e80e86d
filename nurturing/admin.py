from django.contrib import admin

from .models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "hostname", "last_seen", "beats"]
    readonly_fields = ["name", "hostname", "last_seen", "beats"]

    def has_add_permission(self, request):
        return False
