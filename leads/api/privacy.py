"""The lead's rights through the API: ``/api/v1/lead-rights/``.

- ``GET /api/v1/lead-rights/{lead id}/``: the export (JSON) of everything held about the person;
- ``GET /api/v1/lead-rights/by-email/?email=…``: the same, found by email;
- ``POST /api/v1/lead-rights/{lead id}/erase/``: anonymise the lead and suppress its email;
- ``POST /api/v1/lead-rights/{lead id}/withdraw-consent/``: record a withdrawal.

Sales managers (and superusers) only; every export and erasure is audited.
"""

from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from .. import privacy
from ..models import Lead


class PersonalDataPermission(BasePermission):
    message = _("Only sales managers may export or erase a person's data.")

    def has_permission(self, request, view):
        return privacy.can_handle_personal_data(request.user)


class RightsRequestSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


@extend_schema_view(
    retrieve=extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)]),
    erase=extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)]),
    withdraw_consent=extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)]),
)
class LeadRightsViewSet(viewsets.ViewSet):
    lookup_value_regex = r"\d+"
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [PersonalDataPermission]

    def _lead(self, pk):
        return get_object_or_404(Lead, pk=pk)

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Export everything held about a lead")
    def retrieve(self, request, pk=None):
        return Response(privacy.lead_export(lead=self._lead(pk), actor=request.user, via="api"))

    @extend_schema(parameters=[OpenApiParameter("email", str, required=True)],
                   responses={200: OpenApiTypes.OBJECT}, summary="Export, found by email")
    @action(detail=False, methods=["get"], url_path="by-email")
    def by_email(self, request):
        email = request.query_params.get("email", "")
        if not email:
            raise ValidationError({"email": [_("Give the email address.")]})
        lead = privacy.find_lead_by_email(email)
        if lead is None:
            return Response({"detail": _("No lead has this email.")}, status=404)
        return Response(privacy.lead_export(lead=lead, actor=request.user, via="api"))

    @extend_schema(request=RightsRequestSerializer, responses={200: OpenApiTypes.OBJECT}, summary="Erase a lead's data")
    @action(detail=True, methods=["post"])
    def erase(self, request, pk=None):
        data = RightsRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lead = privacy.lead_erase(lead=self._lead(pk), actor=request.user, via="api",
                                  request_note=data.validated_data["note"])
        return Response({"id": lead.pk, "erased": True})

    @extend_schema(request=RightsRequestSerializer, responses={200: OpenApiTypes.OBJECT}, summary="Record a withdrawal")
    @action(detail=True, methods=["post"], url_path="withdraw-consent")
    def withdraw_consent(self, request, pk=None):
        data = RightsRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        privacy.consent_withdraw(lead=self._lead(pk), actor=request.user, via="api", note=data.validated_data["note"])
        return Response({"id": int(pk), "consent": "withdrawn"})
