from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import Segment, WorkerHeartbeat
from .selectors import InvalidSegment, segment_leads


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "hostname", "last_seen", "beats"]
    readonly_fields = ["name", "hostname", "last_seen", "beats"]

    def has_add_permission(self, request):
        return False


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "lead_count", "shared", "created_by", "updated_at"]
    list_filter = ["shared"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    list_select_related = ["created_by"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description=_("leads now"))
    def lead_count(self, obj):
        try:
            return segment_leads(segment=obj).count()
        except InvalidSegment:
            return _("invalid filters")
