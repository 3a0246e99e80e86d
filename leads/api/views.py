"""The authenticated API: ``/api/v1/leads/`` and ``/api/v1/forms/``.

Views parse and authorise, then make one call to a service. Every write goes through
``leads.services``; the domain actions call the same services as the browser.
Errors answer as described in ``leads.api.errors``.
"""

from django.db import IntegrityError
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from .. import selectors, services
from ..filters import LeadFilterSet
from ..models import Form, LeadStatus, Source
from . import export
from .errors import DetailSerializer, ErrorHandlingMixin, responses
from .pagination import EventCursorPagination, LeadCursorPagination
from .permissions import FormPermission, LeadPermission
from .serializers import (
    AssignSerializer,
    ConvertSerializer,
    DisqualifySerializer,
    FormInputSerializer,
    FormOutputSerializer,
    LeadCreateSerializer,
    LeadEventOutputSerializer,
    LeadOutputSerializer,
    LeadUpdateSerializer,
    NoteSerializer,
    OutOfFocusSerializer,
    QualifySerializer,
    RateSerializer,
)

# Token first: its WWW-Authenticate header makes DRF answer 401, not 403, to anonymous requests.
AUTHENTICATION = [TokenAuthentication, SessionAuthentication]


class APIViewSet(ErrorHandlingMixin, viewsets.GenericViewSet):
    authentication_classes = AUTHENTICATION
    parser_classes = [JSONParser]

    def valid(self, serializer_class, **context):
        serializer = serializer_class(data=self.request.data, context={**self.get_serializer_context(), **context})
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


LEAD_OK = {200: LeadOutputSerializer}


@extend_schema_view(
    list=extend_schema(
        summary="List leads", responses=responses({200: LeadOutputSerializer(many=True)}),
        description="Filters combine with AND; repeat `status`, `temperature` or `state` to match any of several. "
                    "Cursor pagination: follow `next` and `previous`.",
    ),
    retrieve=extend_schema(summary="Read a lead", responses=responses(LEAD_OK, bad_request=False, not_found=True)),
)
@extend_schema(tags=["leads"])
class LeadViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    """Leads. Reading needs ``view_lead``; creating ``add_lead``; changing and the
    actions ``change_lead`` and, for reps, a lead of their own or unassigned."""

    serializer_class = LeadOutputSerializer
    permission_classes = [LeadPermission]
    filter_backends = [DjangoFilterBackend]
    filterset_class = LeadFilterSet
    pagination_class = LeadCursorPagination
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.lead_list_for(self.request.user)

    def filter_queryset(self, queryset):
        # The lead list's filters narrow lists, not the look-up of one lead.
        if self.action not in ("list", "export"):
            return queryset
        return super().filter_queryset(queryset)

    def answer(self, lead, code=status.HTTP_200_OK, **headers):
        """The lead as it is now (services and the rules may have changed it)."""
        lead = selectors.lead_list_for(self.request.user).get(pk=lead.pk)
        return Response(LeadOutputSerializer(lead, context=self.get_serializer_context()).data, status=code,
                        headers=headers)

    @extend_schema(
        summary="Create a lead, or merge into the lead with this email (or phone)",
        description="Normalised and deduplicated exactly like a form submission. A known email (or phone, "
                    "when there is no email) merges into the existing lead: empty fields are filled, nothing is "
                    "overwritten, and the answer is 200 with that lead; a new lead is 201.",
        request=LeadCreateSerializer,
        responses=responses({201: LeadOutputSerializer, 200: LeadOutputSerializer}),
    )
    def create(self, request):
        data = self.valid(LeadCreateSerializer)
        source = services.source_ensure(slug="api", name="API", channel=Source.Channel.API)
        lead, created = services.lead_capture(clean=data["clean"], form=data["form"], source=source, actor=request.user)
        if created:
            return self.answer(lead, status.HTTP_201_CREATED, Location=f"{request.path}{lead.pk}/")
        return self.answer(lead)

    @extend_schema(
        summary="Change contact and profile fields",
        description="Normalised like a form submission (email, phone to E.164, state to its UF, budget...). "
                    "An empty value (or null) clears a field; a lead keeps an email or a phone. Status, owner and "
                    "score change through the actions; any other key is refused.",
        request=LeadUpdateSerializer,
        responses=responses(LEAD_OK, not_found=True),
    )
    def partial_update(self, request, pk=None):
        lead = self.get_object()
        changes = self.valid(LeadUpdateSerializer, lead=lead)
        try:
            lead = services.lead_update_contact(lead=lead, actor=request.user, fields=changes)
        except IntegrityError as exc:  # a concurrent request took the email or phone
            field = "email" if changes.get("email") else "phone"
            raise ValidationError({field: [_("Another lead already has this %(field)s.") % {"field": field}]}) from exc
        return self.answer(lead)

    def _change_status(self, serializer_class, lead_status, *arguments):
        lead = self.get_object()
        data = self.valid(serializer_class)
        values = {name: data[name] for name in arguments if name in data}
        lead = services.lead_change_status(lead=lead, status=lead_status, actor=self.request.user, **values)
        return self.answer(lead)

    @extend_schema(summary="Qualify", request=QualifySerializer, responses=responses(LEAD_OK, not_found=True))
    @action(detail=True, methods=["post"])
    def qualify(self, request, pk=None):
        return self._change_status(QualifySerializer, LeadStatus.QUALIFIED, "note")

    @extend_schema(
        summary="Disqualify (right profile, a detail is off): kept and nurtured, maybe requalified later",
        request=DisqualifySerializer, responses=responses(LEAD_OK, not_found=True),
    )
    @action(detail=True, methods=["post"])
    def disqualify(self, request, pk=None):
        return self._change_status(DisqualifySerializer, LeadStatus.DISQUALIFIED, "reason", "note", "requalify_at")

    @extend_schema(
        summary="Put out of focus (never fit the criteria)", request=OutOfFocusSerializer,
        responses=responses(LEAD_OK, not_found=True),
    )
    @action(detail=True, methods=["post"], url_path="out-of-focus", url_name="out-of-focus")
    def out_of_focus(self, request, pk=None):
        return self._change_status(OutOfFocusSerializer, LeadStatus.OUT_OF_FOCUS, "reason", "note")

    @extend_schema(
        summary="Convert (became a customer)", request=ConvertSerializer, responses=responses(LEAD_OK, not_found=True),
    )
    @action(detail=True, methods=["post"])
    def convert(self, request, pk=None):
        return self._change_status(ConvertSerializer, LeadStatus.CONVERTED, "deal_value", "note")

    @extend_schema(
        summary="Assign to a sales person, or unassign (owner null)",
        description="Managers assign to anyone; reps may only claim an unassigned lead for themselves "
                    "(or give back their own).",
        request=AssignSerializer, responses=responses(LEAD_OK, not_found=True),
    )
    @action(detail=True, methods=["post"])
    def assign(self, request, pk=None):
        lead = self.get_object()
        data = self.valid(AssignSerializer)
        lead = services.lead_assign(lead=lead, owner=data["owner"], actor=request.user)
        return self.answer(lead)

    @extend_schema(
        summary="Rate the lead's quality (good or bad fit, with a reason for a bad fit)",
        request=RateSerializer, responses=responses(LEAD_OK, not_found=True),
    )
    @action(detail=True, methods=["post"])
    def rate(self, request, pk=None):
        lead = self.get_object()
        data = self.valid(RateSerializer)
        lead = services.lead_rate(lead=lead, actor=request.user, fit=data["fit"], note=data["note"])
        return self.answer(lead)

    @extend_schema(
        summary="Add a note to the timeline", request=NoteSerializer,
        responses=responses({201: LeadEventOutputSerializer}, not_found=True),
    )
    @action(detail=True, methods=["post"])
    def notes(self, request, pk=None):
        lead = self.get_object()
        data = self.valid(NoteSerializer)
        event = services.lead_add_note(lead=lead, author=request.user, text=data["text"])
        return Response(LeadEventOutputSerializer(event).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="The lead's timeline, newest first",
        responses=responses({200: LeadEventOutputSerializer(many=True)}, not_found=True),
    )
    @action(detail=True, methods=["get"], serializer_class=LeadEventOutputSerializer,
            pagination_class=EventCursorPagination, filter_backends=[])
    def events(self, request, pk=None):
        lead = self.get_object()
        page = self.paginate_queryset(selectors.lead_timeline(lead))
        return self.get_paginated_response(LeadEventOutputSerializer(page, many=True).data)

    @extend_schema(
        summary="Export the filtered list as CSV",
        description=export.__doc__,
        operation_id="leads_export_csv",
        filters=True,
        parameters=[OpenApiParameter(
            "dialect", OpenApiTypes.STR, enum=list(export.DIALECTS), default="standard",
            description="standard: `,` and a decimal point. spreadsheet: the conventions of the request's "
                        "language (Accept-Language) for Excel; in pt-BR `;` and a decimal comma.",
        )],
        responses=responses({(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="UTF-8 CSV, with BOM.")}),
    )
    def export(self, request):
        """``GET /api/v1/leads/export.csv?<the list's filters and ordering>`` (routed in
        ``config.api``): every matching lead, streamed as CSV."""
        dialect = request.query_params.get("dialect") or "standard"
        if dialect not in export.DIALECTS:
            raise ValidationError({"dialect": [_("Choose one of: %(choices)s.") % {
                "choices": ", ".join(export.DIALECTS)}]})
        leads = self.filter_queryset(self.get_queryset())
        return export.csv_response(leads, dialect=dialect)


FORM_OK = {200: FormOutputSerializer}


@extend_schema_view(
    list=extend_schema(summary="List capture forms", responses=responses({200: FormOutputSerializer(many=True)},
                                                                          bad_request=False)),
    retrieve=extend_schema(summary="Read a form", responses=responses(FORM_OK, bad_request=False, not_found=True)),
    create=extend_schema(summary="Create a form", request=FormInputSerializer,
                         responses=responses({201: FormOutputSerializer})),
    update=extend_schema(summary="Replace a form", request=FormInputSerializer,
                         responses=responses(FORM_OK, not_found=True)),
    partial_update=extend_schema(summary="Change a form", request=FormInputSerializer,
                                 responses=responses(FORM_OK, not_found=True)),
    destroy=extend_schema(
        summary="Delete a form that never received submissions",
        responses=responses({204: None}, bad_request=False, not_found=True,
                            extra={409: OpenApiResponse(DetailSerializer, description="It has submissions: "
                                                        "deactivate it instead.")}),
    ),
)
@extend_schema(tags=["forms"])
class FormViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin,
    mixins.DestroyModelMixin, APIViewSet,
):
    """Capture forms, by slug; marketers edit them (Django model permissions on Form).
    Their public endpoint is ``POST /api/v1/forms/<slug>/submissions/``."""

    serializer_class = FormOutputSerializer
    permission_classes = [FormPermission]
    lookup_field = "slug"
    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        return selectors.form_list()

    def create(self, request):
        data = self.valid(FormInputSerializer)
        form = services.form_create(**data)
        return Response(
            self._out(form), status=status.HTTP_201_CREATED, headers={"Location": f"{request.path}{form.slug}/"}
        )

    def update(self, request, slug=None, partial=False):
        form = self.get_object()
        serializer = FormInputSerializer(form, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        form = services.form_update(form=form, **serializer.validated_data)
        return Response(self._out(form))

    def partial_update(self, request, slug=None):
        return self.update(request, slug=slug, partial=True)

    def destroy(self, request, slug=None):
        form = self.get_object()
        try:
            services.form_delete(form=form)
        except services.ValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _out(self, form):
        form = get_object_or_404(Form.objects.select_related("source"), pk=form.pk)
        return FormOutputSerializer(form).data
