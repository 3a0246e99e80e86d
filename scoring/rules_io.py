"""Rules as files: a ruleset to a JSON-ready dict and back, so that rules can be
versioned and moved between installs (``manage.py export_rules`` / ``import_rules``).

The shape (issue 4), extended with ``version``, ``description``, ``engagement_points``
and, on engagement rules, ``window_days``; an inactive rule carries ``"active": false``::

    {"name": "Paletes SP", "thresholds": {"qualify": 40, "warm": 40, "hot": 70},
     "engagement_half_life_days": 30, "reasons": {"outside_service_area": "Fora da área"},
     "rules": [{"name": "Fora de SP", "field": "state", "operator": "not_in", "value": ["SP"],
                "effect": "out_of_focus", "reason": "outside_service_area"}, ...]}
"""

import re

from django.db import transaction
from django.db.models import Max

from leads.models import Reason

from . import engine
from .models import Rule, Ruleset

KNOCK_OUTS = (engine.OUT_OF_FOCUS, engine.DISQUALIFIED)
EFFECTS = (engine.POINTS, *KNOCK_OUTS)
ENGAGEMENT_POINTS = {engine.SUBMISSION: "submission_points", engine.EMAIL_OPEN: "email_open_points",
                     engine.EMAIL_CLICK: "email_click_points"}
TOP_LEVEL_KEYS = {"name", "version", "description", "thresholds", "engagement_half_life_days", "engagement_points",
                  "reasons", "rules"}
RULE_KEYS = {"name", "field", "operator", "value", "effect", "reason", "points", "window_days", "active"}
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]+$")


class RulesFileError(ValueError):
    """What is wrong with a rules file, naming the rule (``rules[2] "Sem orçamento"``)."""


# --- Export --------------------------------------------------------------------------------


def ruleset_export(ruleset):
    """The ruleset as the rules-file dict: every rule in order, the reasons they give."""
    rules = list(ruleset.rules.select_related("reason").order_by("order", "id"))
    reasons = {}
    for rule in rules:
        if rule.reason_id and rule.reason.slug not in reasons:
            reasons[rule.reason.slug] = rule.reason.label
    return {
        "name": ruleset.name,
        "version": ruleset.version,
        "description": ruleset.description,
        "thresholds": {"qualify": ruleset.qualify_threshold, "warm": ruleset.warm_threshold,
                       "hot": ruleset.hot_threshold},
        "engagement_half_life_days": ruleset.engagement_half_life_days,
        "engagement_points": {name: getattr(ruleset, column) for name, column in ENGAGEMENT_POINTS.items()},
        "reasons": reasons,
        "rules": [_rule_export(rule) for rule in rules],
    }


def _rule_export(rule):
    data = {"name": rule.name, "field": rule.field, "operator": rule.operator, "value": rule.value,
            "effect": rule.effect}
    if rule.effect == engine.POINTS:
        data["points"] = rule.points
    else:
        data["reason"] = rule.reason.slug if rule.reason_id else None
    if _kind(rule.field) == "engagement":
        data["window_days"] = rule.window_days
    if not rule.active:
        data["active"] = False
    return data


def _kind(field_name):
    try:
        return engine.field_kind(field_name)
    except engine.RuleError:
        return None


# --- Import --------------------------------------------------------------------------------


@transaction.atomic
def ruleset_import(data):
    """A new draft ruleset from a rules-file dict, with the reasons it names that do not
    exist yet (their kind: what the rules that use them do, "both" if both or none).

    Everything is checked before anything is written, and it all happens in one
    transaction: a file with an unknown field, operator or reason slug, or a value that
    does not fit, raises ``RulesFileError`` naming the rule, and imports nothing. The
    draft is numbered as the next version of its name; activation confirms it.
    """
    if not isinstance(data, dict):
        raise RulesFileError("A rules file is a JSON object with name, thresholds, reasons and rules.")
    _no_unknown_keys(data, TOP_LEVEL_KEYS, "The file")
    name = _text(data.get("name"), "name", limit=150)
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise RulesFileError('"description" must be a text.')
    thresholds = data.get("thresholds")
    if not isinstance(thresholds, dict):
        raise RulesFileError('"thresholds" must be an object: {"qualify": 40, "warm": 40, "hot": 70}.')
    _no_unknown_keys(thresholds, {"qualify", "warm", "hot"}, '"thresholds"')
    qualify, warm, hot = (_whole(thresholds.get(key), f"thresholds.{key}") for key in ("qualify", "warm", "hot"))
    if hot < warm:
        raise RulesFileError('"thresholds": hot must start at or above warm.')
    half_life = _whole(data.get("engagement_half_life_days", 30), "engagement_half_life_days")
    if half_life < 1:
        raise RulesFileError('"engagement_half_life_days" must be at least 1.')
    points = data.get("engagement_points") or {}
    if not isinstance(points, dict):
        raise RulesFileError('"engagement_points" must be an object: {"submission": 5, "email_open": 1, ...}.')
    _no_unknown_keys(points, set(ENGAGEMENT_POINTS), '"engagement_points"')
    engagement = {column: _whole(points.get(key, 0), f"engagement_points.{key}")
                  for key, column in ENGAGEMENT_POINTS.items()}
    labels = _reason_labels(data.get("reasons") or {})
    rules = data.get("rules")
    if not isinstance(rules, list):
        raise RulesFileError('"rules" must be a list.')
    checked = [_rule_check(index, rule) for index, rule in enumerate(rules)]
    reasons = _reasons(checked, labels)
    for rule in checked:
        rule.pop("label")

    latest = Ruleset.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0
    ruleset = Ruleset.objects.create(
        name=name, version=latest + 1, description=description, qualify_threshold=qualify,
        warm_threshold=warm, hot_threshold=hot, engagement_half_life_days=half_life, **engagement,
    )
    Rule.objects.bulk_create([
        Rule(ruleset=ruleset, order=index, reason=reasons.get(rule.pop("reason")), **rule)
        for index, rule in enumerate(checked)
    ])
    return ruleset


def _rule_check(index, data):
    """One rule of the file, checked, as Rule fields (with the reason's slug)."""
    if not isinstance(data, dict):
        raise RulesFileError(f"rules[{index}]: a rule is an object with name, field, operator, value and effect.")
    label = f'rules[{index}] "{data.get("name")}"' if isinstance(data.get("name"), str) else f"rules[{index}]"
    try:
        _no_unknown_keys(data, RULE_KEYS, "")
        name = _text(data.get("name"), "name", limit=150)
        field_name = _text(data.get("field"), "field", limit=100)
        operator = _text(data.get("operator"), "operator", limit=20)
        value = data.get("value")
        try:
            engine.validate_rule(field_name, operator, value)
        except engine.RuleError as exc:
            raise RulesFileError(exc.message) from exc
        effect = data.get("effect", engine.POINTS)
        if effect not in EFFECTS:
            raise RulesFileError(f'unknown effect {effect!r}: use one of {", ".join(EFFECTS)} ("effect").')
        rule = {"name": name, "field": field_name, "operator": operator, "value": value, "effect": effect,
                "points": 0, "reason": None, "window_days": _whole(data.get("window_days", 30), "window_days"),
                "active": data.get("active", True)}
        if rule["window_days"] < 1:
            raise RulesFileError('"window_days" must be at least 1.')
        if not isinstance(rule["active"], bool):
            raise RulesFileError('"active" must be true or false.')
        if effect == engine.POINTS:
            if data.get("reason") is not None:
                raise RulesFileError('a points rule gives no reason: only knock-outs do ("reason").')
            rule["points"] = _whole(data.get("points"), "points")
        else:
            if data.get("points") not in (None, 0):
                raise RulesFileError(f'a knock-out gives no points ("points"); it makes the lead {effect}.')
            rule["reason"] = _text(data.get("reason"), "reason", limit=50)
    except RulesFileError as exc:
        raise RulesFileError(f"{label}: {exc}") from exc
    rule["label"] = label
    return rule


def _reason_labels(reasons):
    if not isinstance(reasons, dict):
        raise RulesFileError('"reasons" must be an object: {"slug": "label", ...}.')
    for slug, label in reasons.items():
        if not SLUG_RE.match(slug) or len(slug) > 50:
            raise RulesFileError(f'"reasons": {slug!r} is not a slug (letters, digits, - and _).')
        if not isinstance(label, str) or not label.strip() or len(label) > 150:
            raise RulesFileError(f'"reasons": the label of {slug!r} must be a text of 1 to 150 characters.')
    return reasons


def _reasons(rules, labels):
    """The Reason of every slug the rules use, created when missing (after every check)."""
    uses = {slug: set() for slug in labels}
    for rule in rules:
        if rule["reason"] is not None:
            uses.setdefault(rule["reason"], set()).add(rule["effect"])
    existing = Reason.objects.in_bulk(list(uses), field_name="slug")
    for rule in rules:
        slug = rule["reason"]
        if slug is None:
            continue
        if slug not in labels and slug not in existing:
            raise RulesFileError(f'{rule["label"]}: unknown reason {slug!r}; add it to "reasons" with its label.')
        if slug in existing and not existing[slug].applies_to(rule["effect"]):
            raise RulesFileError(f'{rule["label"]}: the reason {slug!r} is for '
                                 f'{existing[slug].get_kind_display().lower()} leads, not {rule["effect"]}.')
    for slug, effects in uses.items():
        if slug in existing:
            continue
        kind = effects.pop() if len(effects) == 1 else Reason.Kind.BOTH
        existing[slug] = Reason.objects.create(slug=slug, label=labels[slug].strip(), kind=kind)
    return existing


def _no_unknown_keys(data, known, where):
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise RulesFileError(f"{prefix}unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}.")


def _text(value, key, *, limit):
    if not isinstance(value, str) or not value.strip():
        raise RulesFileError(f'"{key}" must be a non-empty text.')
    if len(value) > limit:
        raise RulesFileError(f'"{key}" is longer than {limit} characters.')
    return value


def _whole(value, key):
    if isinstance(value, bool) or not isinstance(value, int):
        raise RulesFileError(f'"{key}" must be a whole number.')
    return value
