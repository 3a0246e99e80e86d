"""``/api/v1/rulesets/`` and ``/api/v1/rescore-jobs/``: marketers edit draft rulesets,
see what activating one would do, try it on a lead, activate it and follow the rescoring.

Views parse and authorise, then call one service (``scoring.services``). Errors answer
as in ``leads.api.errors``: 400 ``{"errors": {"rules[2].operator": ["\\"Sem orçamento\\": ..."]}}``
naming the rule and its field; 409 ``{"detail": ...}`` for a ruleset that is not a draft.
"""

from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from leads import selectors as lead_selectors
from leads.api.errors import DetailSerializer, ErrorHandlingMixin, responses
from leads.api.views import AUTHENTICATION

from .. import engine, services
from ..models import RescoreJob, Ruleset
from .permissions import RescoreJobPermission, RulesetPermission
from .serializers import (
    PreviewInputSerializer,
    RescoreJobOutputSerializer,
    RulesetInputSerializer,
    RulesetOutputSerializer,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


CONFLICT = OpenApiResponse(DetailSerializer, description="The ruleset is not a draft (copy it with duplicate).")


def rule_errors(errors, rules):
    """Nested serializer errors of ``rules`` as ``rules[i].field`` keys, each message
    naming the rule, the way the services' own validation names them."""
    flat = {}
    for key, value in errors.items():
        if key == "rules" and isinstance(value, (list, dict)) and not isinstance(value, str):
            by_index = value.items() if isinstance(value, dict) else enumerate(value)
            for index, rule_error in by_index:
                if not str(index).isdigit():  # the list itself is wrong ("Expected a list...")
                    flat.setdefault(key, []).extend(rule_error if isinstance(rule_error, list) else [rule_error])
                    continue
                index = int(index)
                if not rule_error:
                    continue
                rule = rules[index] if index < len(rules) and isinstance(rules[index], dict) else {}
                name = rule.get("name") if isinstance(rule.get("name"), str) else f"#{index + 1}"
                items = rule_error.items() if isinstance(rule_error, dict) else [("non_field_errors", rule_error)]
                for field_name, messages in items:
                    messages = messages if isinstance(messages, list) else [messages]
                    flat[f"rules[{index}].{field_name}"] = [f'"{name}": {message}' for message in messages]
        else:
            flat[key] = value
    return flat


RESCORE_STARTED = inline_serializer("ActivationStarted", {
    "ruleset": RulesetOutputSerializer(), "job": RescoreJobOutputSerializer(), "job_url": serializers.URLField(),
})


def _move_fields():
    return {"from": serializers.CharField(), "to": serializers.CharField(), "count": serializers.IntegerField()}


SAMPLE_LEAD = {
    "id": serializers.IntegerField(), "name": serializers.CharField(), "email": serializers.CharField(),
    "company": serializers.CharField(), "status": serializers.CharField(), "score": serializers.IntegerField(),
    "temperature": serializers.CharField(),
}
IMPACT = inline_serializer("Impact", {
    "ruleset": serializers.IntegerField(), "leads": serializers.IntegerField(),
    "status_moves": serializers.IntegerField(), "temperature_moves": serializers.IntegerField(),
    "status": inline_serializer("StatusMove", _move_fields(), many=True),
    "temperature": inline_serializer("TemperatureMove", _move_fields(), many=True),
    "samples": inline_serializer("ImpactSample", {
        **_move_fields(), "leads": inline_serializer("SampleLead", SAMPLE_LEAD, many=True)}, many=True),
})
VERDICT = inline_serializer("Verdict", {
    "status": serializers.CharField(), "reason": serializers.CharField(), "score": serializers.IntegerField(),
    "temperature": serializers.CharField(), "explanation": serializers.ListField(child=serializers.DictField()),
    "now": serializers.DateTimeField(),
    "lead": inline_serializer("PreviewedLead", {
        "id": serializers.IntegerField(), "status": serializers.CharField(),
        "status_set_by": serializers.CharField(), "score": serializers.IntegerField(),
        "temperature": serializers.CharField(),
        "status_would_apply": serializers.BooleanField(
            help_text="False when a person set the status (or the lead is converted): only score and "
                      "temperature would change."),
    }, required=False),
})


def _moves(moves):
    rows = [{"from": old, "to": new, "count": count} for (old, new), count in moves.items()]
    return sorted(rows, key=lambda row: (row["from"] == row["to"], -row["count"], row["from"], row["to"]))


def _sample(lead):
    return {"id": lead.pk, "name": str(lead),
            "email": lead.email or "", "company": lead.company, "status": lead.status, "score": lead.score,
            "temperature": lead.temperature}


@extend_schema_view(
    list=extend_schema(summary="List rulesets with their rules", description="Filter with `?state=draft`.",
                       responses=responses({200: RulesetOutputSerializer(many=True)}, bad_request=False)),
    retrieve=extend_schema(summary="Read a ruleset and its ordered rules",
                           responses=responses({200: RulesetOutputSerializer}, bad_request=False, not_found=True)),
)
@extend_schema(tags=["rulesets"])
class RulesetViewSet(ErrorHandlingMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Rulesets. Drafts are created, changed (PUT, or PATCH with the keys to change;
    ``rules`` replaces every rule) and deleted; active and archived rulesets are read
    only: ``duplicate`` copies one into a new draft."""
    lookup_value_regex = r"[0-9]+"  # ids only: anything else is a 404, not a 500

    authentication_classes = AUTHENTICATION
    permission_classes = [RulesetPermission]
    parser_classes = [JSONParser]
    serializer_class = RulesetOutputSerializer
    filter_backends = []
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def get_queryset(self):
        rulesets = Ruleset.objects.prefetch_related("rules__reason").order_by("-id")
        state = self.request.query_params.get("state")
        if self.action == "list" and state:
            if state not in Ruleset.State.values:
                states = ", ".join(Ruleset.State.values)
                raise ValidationError({"state": [_("One of: %(states)s.") % {"states": states}]})
            rulesets = rulesets.filter(state=state)
        return rulesets

    def answer(self, ruleset, code=status.HTTP_200_OK, **extra):
        ruleset = self.get_queryset().get(pk=ruleset.pk)
        return Response(RulesetOutputSerializer(ruleset, context=self.get_serializer_context()).data, status=code,
                        **extra)

    def _save(self, ruleset=None, *, partial=False):
        data = self.request.data
        if partial and isinstance(data, dict) and ruleset is not None:
            # The current settings with the keys the PATCH names replaced, checked as a whole.
            current = RulesetOutputSerializer(ruleset).data
            data = {**{key: current[key] for key in ("name", "description", "thresholds",
                                                     "engagement_half_life_days", "engagement_points")}, **data}
        serializer = RulesetInputSerializer(data=data)
        if not serializer.is_valid():
            rules = data.get("rules") if isinstance(data, dict) and isinstance(data.get("rules"), list) else []
            raise ValidationError(rule_errors(serializer.errors, rules))
        fields, rules = serializer.fields_and_rules()
        try:
            return services.ruleset_draft_save(ruleset=ruleset, fields=fields, rules=rules)
        except services.RulesetNotEditable as exc:
            raise Conflict(_("Only a draft can be changed; this ruleset is %(state)s. Duplicate it to edit a new "
                             "draft.") % {"state": ruleset.get_state_display().lower()}) from exc

    @extend_schema(summary="Create a draft ruleset with its rules", request=RulesetInputSerializer,
                   responses=responses({201: RulesetOutputSerializer}))
    def create(self, request):
        ruleset = self._save()
        return self.answer(ruleset, status.HTTP_201_CREATED,
                           headers={"Location": reverse("ruleset-detail", args=[ruleset.pk], request=request)})

    @extend_schema(summary="Replace a draft (every key; rules in order)", request=RulesetInputSerializer,
                   responses=responses({200: RulesetOutputSerializer}, not_found=True, extra={409: CONFLICT}))
    def update(self, request, pk=None):
        return self.answer(self._save(self.get_object()))

    @extend_schema(summary="Change some keys of a draft (rules, when given, replaces every rule)",
                   request=RulesetInputSerializer,
                   responses=responses({200: RulesetOutputSerializer}, not_found=True, extra={409: CONFLICT}))
    def partial_update(self, request, pk=None):
        return self.answer(self._save(self.get_object(), partial=True))

    @extend_schema(summary="Delete a draft", responses=responses({204: None}, bad_request=False, not_found=True,
                                                                   extra={409: CONFLICT}))
    def destroy(self, request, pk=None):
        ruleset = self.get_object()
        try:
            services.ruleset_draft_delete(ruleset=ruleset)
        except services.RulesetNotEditable as exc:
            raise Conflict(_("Only a draft can be deleted; this ruleset is %(state)s.") % {
                "state": ruleset.get_state_display().lower()}) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Copy into a new draft (the next version of its name)", request=None,
                   responses=responses({201: RulesetOutputSerializer}, bad_request=False, not_found=True))
    @action(detail=True, methods=["post"])
    def duplicate(self, request, pk=None):
        copy = services.ruleset_duplicate(ruleset=self.get_object())
        return self.answer(copy, status.HTTP_201_CREATED,
                           headers={"Location": reverse("ruleset-detail", args=[copy.pk], request=request)})

    @extend_schema(
        summary="Activate: archive the active ruleset and rescore every lead",
        description="The rescoring job is queued when the activation commits; follow it at `job_url`.",
        request=None, responses=responses({202: RESCORE_STARTED}, bad_request=False, not_found=True,
                                          extra={409: CONFLICT}),
    )
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        ruleset = self.get_object()
        try:
            job = services.ruleset_activate(ruleset=ruleset, actor=request.user)
        except ValueError as exc:
            raise Conflict(_("This ruleset is already active.")) from exc
        job_url = reverse("rescorejob-detail", args=[job.pk], request=request)
        ruleset = self.get_queryset().get(pk=ruleset.pk)
        return Response({"ruleset": RulesetOutputSerializer(ruleset).data,
                         "job": RescoreJobOutputSerializer(job).data, "job_url": job_url},
                        status=status.HTTP_202_ACCEPTED, headers={"Location": job_url})

    @extend_schema(
        summary="What activating this ruleset would do, computed in the database",
        description="Every lead's status and temperature now and under this ruleset (a status a person set "
                    "stays), as from → to counts, with sample leads of each status move.",
        responses=responses({200: IMPACT}, bad_request=False, not_found=True),
    )
    @action(detail=True, methods=["get"])
    def impact(self, request, pk=None):
        ruleset = self.get_object()
        impact = services.ruleset_impact(ruleset=ruleset, samples=5)
        return Response({
            "ruleset": ruleset.pk,
            "leads": sum(impact["status"].values()),
            "status_moves": sum(count for (old, new), count in impact["status"].items() if old != new),
            "temperature_moves": sum(count for (old, new), count in impact["temperature"].items() if old != new),
            "status": _moves(impact["status"]),
            "temperature": _moves(impact["temperature"]),
            "samples": [{"from": old, "to": new, "count": impact["status"][(old, new)],
                         "leads": [_sample(lead) for lead in leads]}
                        for (old, new), leads in sorted(impact["samples"].items(),
                                                        key=lambda item: -impact["status"][item[0]])],
        })

    @extend_schema(
        summary="Evaluate one lead, or facts typed in, with this ruleset (nothing is written)",
        description='`{"lead": 12}` or `{"facts": {"state": "SP", "budget": 8000, "attributes": {...}}, '
                    '"events": [{"kind": "email_opened", "at": "..."}]}`; `now` defaults to the present.',
        request=PreviewInputSerializer, responses=responses({200: VERDICT}, not_found=True),
    )
    @action(detail=True, methods=["post"])
    def preview(self, request, pk=None):
        ruleset = self.get_object()
        serializer = PreviewInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        now = data.get("now") or timezone.now()
        rules = services.ruleset_to_engine(ruleset)
        answer = {}
        if "lead" in data:
            lead = get_object_or_404(lead_selectors.lead_list_for(request.user), pk=data["lead"])
            verdict = services.lead_evaluate(lead=lead, rules=rules, now=now)
            answer["lead"] = {
                "id": lead.pk, "status": lead.status, "status_set_by": lead.status_set_by, "score": lead.score,
                "temperature": lead.temperature,
                "status_would_apply": lead.status_set_by == "rules" and lead.status != "converted",
            }
        else:
            facts = {"attributes": {}, **data["facts"]}
            events = [(event["kind"], event["at"]) for event in data["events"]]
            verdict = engine.evaluate(rules, facts, events, now=now)
        return Response({"status": verdict.status, "reason": verdict.reason, "score": verdict.score,
                         "temperature": verdict.temperature, "explanation": verdict.explanation,
                         "now": now, **answer})


class JobPagination(PageNumberPagination):
    page_size = 50


@extend_schema_view(
    list=extend_schema(summary="Rescoring jobs, newest first",
                       responses=responses({200: RescoreJobOutputSerializer(many=True)}, bad_request=False)),
    retrieve=extend_schema(summary="A rescoring job's progress and result",
                           responses=responses({200: RescoreJobOutputSerializer}, bad_request=False,
                                               not_found=True)),
)
@extend_schema(tags=["rulesets"])
class RescoreJobViewSet(ErrorHandlingMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """Rescoring jobs (activation, requalification): read only, written by the services."""
    lookup_value_regex = r"[0-9]+"  # ids only: anything else is a 404, not a 500

    authentication_classes = AUTHENTICATION
    permission_classes = [RescoreJobPermission]
    serializer_class = RescoreJobOutputSerializer
    filter_backends = []
    pagination_class = JobPagination
    queryset = RescoreJob.objects.order_by("-created_at", "-id")
