"""``/api/v1/sequences/``: list sequences, enroll leads in one or remove them (the
inbox's bulk actions and the lead page call these, or the form views in
``nurturing.views``); ``/api/v1/enrollments/?lead=<id>``: a lead's enrollments."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from leads.api.errors import ErrorHandlingMixin, responses
from leads.api.views import AUTHENTICATION
from leads.models import Lead
from leads.roles import can_work_lead

from .. import services
from ..models import Enrollment, Sequence
from .serializers import (
    EnrollInputSerializer,
    EnrollmentOutputSerializer,
    EnrollResultSerializer,
    SequenceOutputSerializer,
)


class SequenceViewSet(ErrorHandlingMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    lookup_value_regex = r"[0-9]+"  # ids only: anything else is a 404, not a 500
    authentication_classes = AUTHENTICATION
    serializer_class = SequenceOutputSerializer
    queryset = Sequence.objects.order_by("name")

    def _leads(self):
        serializer = EnrollInputSerializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        ids = serializer.validated_data["leads"]
        found = {lead.pk: lead for lead in Lead.objects.filter(pk__in=ids)}
        return ids, found

    @extend_schema(request=EnrollInputSerializer, responses=responses({200: EnrollResultSerializer}, not_found=True))
    @action(detail=True, methods=["post"])
    def enroll(self, request, pk=None):
        """Enroll leads by hand. Each lead is reported as enrolled, already enrolled, or with its error."""
        sequence = get_object_or_404(Sequence, pk=pk)
        ids, found = self._leads()
        return Response(self._by_hand(sequence, ids, found, remove=False))

    @extend_schema(request=EnrollInputSerializer, responses=responses({200: EnrollResultSerializer}, not_found=True))
    @action(detail=True, methods=["post"])
    def unenroll(self, request, pk=None):
        """Remove leads from the sequence by hand; nothing more is sent to them from it."""
        sequence = get_object_or_404(Sequence, pk=pk)
        ids, found = self._leads()
        return Response(self._by_hand(sequence, ids, found, remove=True))

    def _by_hand(self, sequence, ids, found, *, remove):
        """Each id as enrolled (removed), already so, or its error ("not found" included), in the order sent."""
        leads = [found[lead_id] for lead_id in ids if lead_id in found]
        changed, unchanged, errors = services.enrollments_by_hand(
            sequence=sequence, leads=leads, actor=self.request.user, remove=remove
        )
        result = {"enrolled": [lead.pk for lead in changed], "already": [lead.pk for lead in unchanged],
                  "errors": {str(lead.pk): str(message) for lead, message in errors.items()}}
        for lead_id in ids:
            if lead_id not in found:
                result["errors"][str(lead_id)] = "not found"
        return result


class EnrollmentViewSet(ErrorHandlingMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """A lead's enrollments: ``?lead=<id>`` (required)."""

    authentication_classes = AUTHENTICATION
    serializer_class = EnrollmentOutputSerializer

    def get_queryset(self):
        from rest_framework.exceptions import ValidationError

        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema generator
            return Enrollment.objects.none()
        lead_id = self.request.query_params.get("lead", "")
        if not lead_id.isdigit():
            raise ValidationError({"lead": ["Give the lead's id: ?lead=<id>."]})
        lead = get_object_or_404(Lead, pk=lead_id)
        if not can_work_lead(self.request.user, lead) and not self.request.user.has_perm("leads.view_lead"):
            from rest_framework.exceptions import PermissionDenied

            raise PermissionDenied()
        return Enrollment.objects.filter(lead=lead).select_related("sequence").order_by("-enrolled_at", "-id")
