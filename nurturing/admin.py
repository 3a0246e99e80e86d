from django import forms
from django.contrib import admin, messages
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import admin_views, services
from .models import (
    WEEKDAYS,
    Delivery,
    EmailTemplate,
    Enrollment,
    Segment,
    Sequence,
    SequenceStep,
    Suppression,
    TrackingEvent,
    WorkerHeartbeat,
)
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
    readonly_fields = ["in_words", "leads_now", "created_at", "updated_at"]
    fields = ["name", "slug", "description", "in_words", "filters", "leads_now", "created_by", "shared", "created_at",
              "updated_at"]

    @admin.display(description=_("leads now"))
    def lead_count(self, obj):
        try:
            return segment_leads(segment=obj).count()
        except InvalidSegment:
            return _("invalid filters")

    @admin.display(description=_("who is in it"))
    def in_words(self, obj):
        """The filters as the inbox names them, one per line: what the JSON below means."""
        from leads.filters import filters_in_words

        if obj is None or obj.pk is None:
            return "—"
        words = filters_in_words(obj.filters or {})
        if not words:
            return _("Every lead (no filter).")
        return format_html_join(mark_safe("<br>"), "{}: {}", words)

    @admin.display(description=_("leads now"))
    def leads_now(self, obj):
        """How many leads the filters hold now, and the inbox showing them (where a segment
        is best made: filter the list, then "Save this view")."""
        if obj is None or obj.pk is None:
            return _("Filter the inbox, then “Save this view as”, to make a segment without writing its filters.")
        count = self.lead_count(obj)
        if not isinstance(count, int):
            return count
        return format_html('{} · <a href="{}?{}">{}</a>', count, reverse("leads:inbox"), obj.query_string(),
                           _("see them in the inbox"))


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "subject", "updated_at", "preview_link"]
    search_fields = ["name", "subject"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "language", "subject", "html_body", "text_body"],
                "description": _("Django template syntax: {{ lead.first_name }}, {{ lead.company }}, "
                                 "{{ unsubscribe_url }}, {{ sender_name }}. The footer with the sender's "
                                 "address and the unsubscribe link is added to every message.")}),
        (_("Dates"), {"fields": ["created_at", "updated_at"]}),
    ]

    def get_urls(self):
        return [
            path("<path:object_id>/preview/", self.admin_site.admin_view(self.preview_view),
                 name="nurturing_emailtemplate_preview"),
            path("<path:object_id>/test-send/", self.admin_site.admin_view(self.test_send_view),
                 name="nurturing_emailtemplate_test_send"),
            *super().get_urls(),
        ]

    def preview_view(self, request, object_id):
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return admin_views.preview(self, request, object_id)

    def test_send_view(self, request, object_id):
        if not self.has_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return admin_views.test_send(self, request, object_id)

    @admin.display(description=_("preview"))
    def preview_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:nurturing_emailtemplate_preview", args=[obj.pk]),
                           _("Preview"))


class SequenceStepInline(admin.TabularInline):
    model = SequenceStep
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["template"]


class SequenceAdminForm(forms.ModelForm):
    """The send days as the weekdays' names to tick, not a JSON list of numbers."""

    send_days = forms.TypedMultipleChoiceField(
        label=capfirst(_("send on")), choices=WEEKDAYS, coerce=int, widget=forms.CheckboxSelectMultiple,
        error_messages={"required": _("Tick at least one weekday.")},
    )

    class Meta:
        model = Sequence
        fields = ["name", "slug", "segment", "active", "allow_reentry", "send_days", "send_from_hour",
                  "send_until_hour", "time_zone", "exit_on_qualified", "exit_on_converted", "exit_on_out_of_focus"]

    def clean_send_days(self):
        return sorted(set(self.cleaned_data["send_days"]))


@admin.register(Sequence)
class SequenceAdmin(admin.ModelAdmin):
    form = SequenceAdminForm
    list_display = ["name", "segment", "active", "allow_reentry", "step_count", "active_enrollments"]
    list_filter = ["active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    list_select_related = ["segment"]
    inlines = [SequenceStepInline]
    fieldsets = [
        (None, {"fields": ["name", "slug", "segment", "active", "allow_reentry"]}),
        (_("Send window"), {"fields": ["send_days", "send_from_hour", "send_until_hour", "time_zone"]}),
        (_("Exit conditions"), {
            "fields": ["exit_on_qualified", "exit_on_converted", "exit_on_out_of_focus"],
            "description": _("Unsubscribed, bounced, complained and erased addresses always stop."),
        }),
    ]

    @admin.display(description=_("steps"))
    def step_count(self, obj):
        return obj.steps.count()

    @admin.display(description=_("active enrollments"))
    def active_enrollments(self, obj):
        return obj.enrollments.filter(status=Enrollment.Status.ACTIVE).count()


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    list_display = ["lead", "sequence", "status", "exit_reason", "enrolled_at", "ended_at"]
    list_filter = ["status", "sequence"]
    search_fields = ["lead__email", "lead__first_name", "lead__last_name"]
    list_select_related = ["lead", "sequence"]
    raw_id_fields = ["lead", "enrolled_by"]
    readonly_fields = ["status", "exit_reason", "enrolled_at", "ended_at", "enrolled_by"]
    actions = ["remove"]

    def has_add_permission(self, request):
        return False

    @admin.action(description=_("Remove from the sequence (nothing more is sent)"))
    def remove(self, request, queryset):
        count = services.enrollments_exit(enrollments=queryset, reason="removed", status=Enrollment.Status.REMOVED,
                                          actor=request.user)
        self.message_user(request, ngettext("%d enrollment ended.", "%d enrollments ended.", count) % count)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["lead", "step", "status", "due_at", "sent_at", "attempts", "message_id", "last_error"]
    list_filter = ["status", "enrollment__sequence"]
    search_fields = ["lead__email", "message_id", "provider_message_id"]
    list_select_related = ["lead", "step__sequence"]
    readonly_fields = [field.name for field in Delivery._meta.fields]
    actions = ["resend", "mark_sent"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description=_("Send again (they did not arrive)"), permissions=["view"])
    def resend(self, request, queryset):
        count = services.deliveries_resend(deliveries=queryset)
        self.message_user(request, ngettext("%d delivery will be sent again.", "%d deliveries will be sent again.",
                                            count) % count, messages.SUCCESS)

    @admin.action(description=_("Mark uncertain ones as sent (they arrived)"), permissions=["view"])
    def mark_sent(self, request, queryset):
        count = services.deliveries_mark_sent(deliveries=queryset)
        self.message_user(request, ngettext("%d delivery marked sent.", "%d deliveries marked sent.", count) % count)


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ["email_hash", "reason", "note", "created_at"]
    list_filter = ["reason"]
    readonly_fields = ["email_hash", "reason", "note", "created_at"]

    def has_add_permission(self, request):
        return False


@admin.register(TrackingEvent)
class TrackingEventAdmin(admin.ModelAdmin):
    list_display = ["esp", "event_type", "delivery", "received_at"]
    list_filter = ["esp", "event_type"]
    readonly_fields = ["key", "esp", "event_type", "delivery", "received_at"]

    def has_add_permission(self, request):
        return False
