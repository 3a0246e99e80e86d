"""Input and output shapes of the rulesets API (``/api/v1/rulesets/``).

A ruleset reads and writes in the shape of a rules file (``scoring.rules_io``):
``thresholds`` and ``engagement_points`` as objects, rules as an ordered list whose
``reason`` is a reason's slug. Rules are validated exactly as the admin does it
(``Rule.full_clean``: the operator fits the field, the regular expression compiles,
lists are not empty, a knock-out gives a reason that applies to it).
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from leads.models import Reason

from .. import engine
from ..models import RescoreJob, Rule, Ruleset

ENGAGEMENT_POINTS = {engine.SUBMISSION: "submission_points", engine.EMAIL_OPEN: "email_open_points",
                     engine.EMAIL_CLICK: "email_click_points"}


class StrictKeys:
    """Refuse keys the serializer does not know (DRF ignores them), naming them."""

    ignored_keys = ()

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields) - set(self.ignored_keys))
            if unknown:
                raise serializers.ValidationError({key: [_("Unknown key.")] for key in unknown})
        return super().to_internal_value(data)


# --- Output -------------------------------------------------------------------------------


class RuleOutputSerializer(serializers.ModelSerializer):
    reason = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    value = serializers.JSONField(allow_null=True)

    class Meta:
        model = Rule
        fields = ["id", "order", "name", "field", "operator", "value", "window_days", "effect", "points", "reason",
                  "active"]
        read_only_fields = fields


class ThresholdsSerializer(StrictKeys, serializers.Serializer):
    qualify = serializers.IntegerField(min_value=-100000, max_value=100000)
    warm = serializers.IntegerField(min_value=-100000, max_value=100000)
    hot = serializers.IntegerField(min_value=-100000, max_value=100000)


class EngagementPointsSerializer(StrictKeys, serializers.Serializer):
    submission = serializers.IntegerField(min_value=-1000, max_value=1000, default=0)
    email_open = serializers.IntegerField(min_value=-1000, max_value=1000, default=0)
    email_click = serializers.IntegerField(min_value=-1000, max_value=1000, default=0)


@extend_schema_serializer(component_name="Ruleset")
class RulesetOutputSerializer(serializers.ModelSerializer):
    thresholds = serializers.SerializerMethodField()
    engagement_points = serializers.SerializerMethodField()
    editable = serializers.SerializerMethodField(help_text="Only drafts are edited; copy the others with duplicate.")
    rules = RuleOutputSerializer(many=True, read_only=True)

    class Meta:
        model = Ruleset
        fields = ["id", "name", "version", "state", "editable", "description", "thresholds",
                  "engagement_half_life_days", "engagement_points", "created_at", "activated_at", "rules"]
        read_only_fields = fields

    def get_thresholds(self, obj) -> ThresholdsSerializer:
        return {"qualify": obj.qualify_threshold, "warm": obj.warm_threshold, "hot": obj.hot_threshold}

    def get_engagement_points(self, obj) -> EngagementPointsSerializer:
        return {name: getattr(obj, column) for name, column in ENGAGEMENT_POINTS.items()}

    def get_editable(self, obj) -> bool:
        return obj.state == Ruleset.State.DRAFT


@extend_schema_serializer(component_name="RescoreJob")
class RescoreJobOutputSerializer(serializers.ModelSerializer):
    progress = serializers.IntegerField(read_only=True, help_text="0-100: the share of the lead ids done.")
    transitions = serializers.SerializerMethodField(help_text="The moves so far, biggest first.")

    class Meta:
        model = RescoreJob
        fields = ["id", "ruleset", "kind", "status", "progress", "leads_seen", "leads_changed",
                  "status_changes", "transitions", "error", "created_at", "started_at", "heartbeat_at",
                  "finished_at"]
        read_only_fields = fields

    def get_transitions(self, obj) -> list[dict]:
        rows = []
        for key, count in (obj.transitions or {}).items():
            kind, _sep, move = key.partition(":")
            old, _sep, new = move.partition(">")
            rows.append({"kind": kind, "from": old, "to": new, "count": count})
        return sorted(rows, key=lambda row: (row["kind"], -row["count"], row["from"], row["to"]))


# --- Input --------------------------------------------------------------------------------


class RuleInputSerializer(StrictKeys, serializers.Serializer):
    ignored_keys = ("id", "order")  # as the API answers them: the order is the list's

    name = serializers.CharField(max_length=150)
    field = serializers.CharField(max_length=100)
    operator = serializers.CharField(max_length=20)
    value = serializers.JSONField(required=False, allow_null=True, default=None)
    window_days = serializers.IntegerField(min_value=1, max_value=3650, default=30)
    effect = serializers.ChoiceField(choices=Rule.Effect.choices, default=Rule.Effect.POINTS)
    points = serializers.IntegerField(min_value=-1000, max_value=1000, default=0)
    reason = serializers.CharField(max_length=50, required=False, allow_null=True, allow_blank=True, default=None)
    active = serializers.BooleanField(default=True)

    def validate(self, data):
        """The admin's own checks, on an unsaved Rule."""
        reason = None
        if data.get("reason"):
            reason = Reason.objects.filter(slug=data["reason"]).first()
            if reason is None:
                raise serializers.ValidationError({"reason": _("Unknown reason %(slug)r: add it in the admin "
                                                                "first.") % {"slug": data["reason"]}})
        if data["effect"] == Rule.Effect.POINTS and reason is not None:
            raise serializers.ValidationError({"reason": _("A points rule gives no reason: only knock-outs do.")})
        rule = Rule(**{**data, "reason": reason, "order": 0})
        try:
            rule.full_clean(exclude=["ruleset", "order"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        return {**data, "reason": reason}


class RulesetInputSerializer(StrictKeys, serializers.Serializer):
    """A draft as a rules file describes it. ``rules``, when given, replaces every rule
    (their order is the list's); without it the rules stay. A PATCH is validated as the
    ruleset's current settings with the keys it names replaced."""

    name = serializers.CharField(max_length=150)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    thresholds = ThresholdsSerializer()
    engagement_half_life_days = serializers.IntegerField(min_value=1, max_value=3650, default=30)
    engagement_points = EngagementPointsSerializer(required=False)
    rules = RuleInputSerializer(many=True, required=False)

    def validate_thresholds(self, value):
        if value["hot"] < value["warm"]:
            raise serializers.ValidationError(_("Hot must start at or above warm."))
        return value

    # What a GET answers may be sent back as it is.
    ignored_keys = ("id", "version", "state", "editable", "created_at", "activated_at")

    def fields_and_rules(self):
        """(Ruleset field values, [Rule field values] or None) for the services."""
        data = self.validated_data
        fields = {}
        if "name" in data:
            fields["name"] = data["name"]
        if "description" in data:
            fields["description"] = data["description"]
        if "thresholds" in data:
            fields.update(qualify_threshold=data["thresholds"]["qualify"], warm_threshold=data["thresholds"]["warm"],
                          hot_threshold=data["thresholds"]["hot"])
        if "engagement_half_life_days" in data:
            fields["engagement_half_life_days"] = data["engagement_half_life_days"]
        for name, points in (data.get("engagement_points") or {}).items():
            fields[ENGAGEMENT_POINTS[name]] = points
        rules = [dict(rule) for rule in data["rules"]] if "rules" in data else None
        return fields, rules


class PreviewEventSerializer(StrictKeys, serializers.Serializer):
    kind = serializers.ChoiceField(choices=[kind for kinds in engine.ENGAGEMENT_EVENT_KINDS.values()
                                            for kind in kinds])
    at = serializers.DateTimeField()


class PreviewInputSerializer(StrictKeys, serializers.Serializer):
    """Either ``lead`` (an id) or ``facts`` (field -> value, ``attributes`` an object),
    with ``events`` for ad-hoc facts; ``now`` defaults to the present."""

    lead = serializers.IntegerField(required=False, min_value=1)
    facts = serializers.DictField(required=False)
    events = PreviewEventSerializer(many=True, required=False, default=list)
    now = serializers.DateTimeField(required=False)

    def validate_facts(self, facts):
        errors = {}
        for name, value in facts.items():
            if name == "attributes":
                if not isinstance(value, dict):
                    errors[name] = _("An object of custom fields: {\"segmento\": \"indústria\"}.")
                continue
            try:
                kind = engine.field_kind(name)
            except engine.RuleError:
                kind = None
            if kind not in ("text", "number"):
                errors[name] = _("Not a lead field the rules read.")
            elif value is not None and (isinstance(value, (bool, list, dict))
                                        or (kind == "number" and engine.as_number(value) is None)):
                errors[name] = _("Give a number.") if kind == "number" else _("Give a text.")
        if errors:
            raise serializers.ValidationError(errors)
        return facts

    def validate(self, data):
        if ("lead" in data) == ("facts" in data):
            raise serializers.ValidationError(_("Give either lead (an id) or facts, not both."))
        if "lead" in data and data.get("events"):
            raise serializers.ValidationError({"events": _("A lead's events are read from its timeline.")})
        return data
