"""The qualification engine, pure: facts and rules in, a verdict with its explanation
out. No ORM, no settings, no clock (``now`` is passed in).

Its database twin, ``scoring.compiler``, turns the same rules into SQL; a property
test proves the two agree on every operator, empty values, accents and boundaries.
"""

import functools
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

# --- Text folding -----------------------------------------------------------------
# "Ignore case and accents" is this one character map, applied the same way by Python
# (str.translate) and by the database (translate()), whatever the database's locale.


def _build_fold_map():
    source, target = [], []
    for code in range(ord("A"), ord("Z") + 1):
        source.append(chr(code))
        target.append(chr(code).lower())
    for code in range(0xC0, 0x250):
        char = chr(code)
        base = unicodedata.normalize("NFKD", char)[0]
        if base.isascii() and base.isalpha() and base.lower() != char:
            source.append(char)
            target.append(base.lower())
    return "".join(source), "".join(target)


FOLD_FROM, FOLD_TO = _build_fold_map()
_FOLD_TABLE = str.maketrans(FOLD_FROM, FOLD_TO)


def fold(text):
    return str(text).translate(_FOLD_TABLE)


# --- Vocabulary ---------------------------------------------------------------------

SUBMISSION, EMAIL_OPEN, EMAIL_CLICK = "submission", "email_open", "email_click"
# Lead timeline kinds that count as each kind of engagement.
ENGAGEMENT_EVENT_KINDS = {
    SUBMISSION: ("captured", "resubmitted"),
    EMAIL_OPEN: ("email_opened",),
    EMAIL_CLICK: ("email_clicked",),
}
ENGAGEMENT_FIELDS = {"submissions": SUBMISSION, "email_opens": EMAIL_OPEN, "email_clicks": EMAIL_CLICK}

TEXT_FIELDS = (
    "state", "city", "country", "interest", "job_title", "company", "email", "first_name", "last_name",
    "source", "form", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
)
NUMBER_FIELDS = ("budget", "company_size")
ATTRIBUTE_PREFIX = "attributes."

EMPTY_OPERATORS = ("is_empty", "is_not_empty")
TEXT_OPERATORS = (
    "equals", "not_equals", "in", "not_in", "contains", "contains_any", "not_contains", "starts_with", "matches",
    "email_domain_in", *EMPTY_OPERATORS,
)
NUMBER_OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "between", *EMPTY_OPERATORS)
OPERATORS = tuple(dict.fromkeys(TEXT_OPERATORS + NUMBER_OPERATORS))
LIST_OPERATORS = ("in", "not_in", "contains_any", "email_domain_in")
NEGATED = {"not_equals": "equals", "not_in": "in", "not_contains": "contains"}
NUMBER_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
# The regular-expression syntax both Python and PostgreSQL read the same way.
_UNSAFE_REGEX = re.compile(r"\\[^.\-+*?()\[\]{}|^$\\/dsw]|\(\?|\\[dsw]")

OUT_OF_FOCUS, DISQUALIFIED, QUALIFIED, POINTS = "out_of_focus", "disqualified", "qualified", "points"
BELOW_THRESHOLD = "below_threshold"


class RuleError(ValueError):
    """What is wrong with a rule: the rule ``field`` at fault, an English ``message``, and
    a ``code`` with its ``params`` so that the admin can say it in the user's language."""

    def __init__(self, field, message, code="", **params):
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code
        self.params = params


@dataclass(frozen=True)
class Rule:
    name: str
    field: str
    operator: str
    value: object = None
    effect: str = POINTS
    points: int = 0
    reason: str = ""
    window_days: int = 30
    id: int | None = None


@dataclass(frozen=True)
class Ruleset:
    qualify: int
    warm: int
    hot: int
    half_life_days: int = 30
    engagement_points: dict = field(default_factory=dict)
    rules: tuple = ()


@dataclass
class Verdict:
    status: str
    reason: str
    score: int
    temperature: str
    explanation: list


def field_kind(name):
    """'text', 'number', 'attribute' or 'engagement'; RuleError for an unknown field."""
    if name in TEXT_FIELDS:
        return "text"
    if name in NUMBER_FIELDS:
        return "number"
    if name in ENGAGEMENT_FIELDS:
        return "engagement"
    if name.startswith(ATTRIBUTE_PREFIX) and re.fullmatch(r"[A-Za-z0-9_\-]+", name[len(ATTRIBUTE_PREFIX):]):
        return "attribute"
    raise RuleError("field", f"Unknown field: {name!r}.", "unknown_field", name=name)


def validate_rule(field_name, operator, value):
    """Refuse what cannot be evaluated: an operator that does not fit the field, a
    value of the wrong shape, an empty list, a regular expression that does not compile."""
    kind = field_kind(field_name)
    allowed = {
        "text": TEXT_OPERATORS, "number": NUMBER_OPERATORS, "engagement": NUMBER_OPERATORS[:-2],
        "attribute": tuple(dict.fromkeys(TEXT_OPERATORS + NUMBER_OPERATORS)),
    }[kind]
    if operator not in OPERATORS:
        raise RuleError("operator", f"Unknown operator: {operator!r}.", "unknown_operator", operator=operator)
    if operator not in allowed:
        raise RuleError("operator", f"The operator {operator!r} does not fit the field {field_name!r}.", "misfit",
                        operator=operator, field_name=field_name)
    if operator == "email_domain_in" and field_name != "email" and kind != "attribute":
        raise RuleError("operator", "email_domain_in applies to the email field.", "email_only")
    if operator in EMPTY_OPERATORS:
        return
    numeric = kind in ("number", "engagement") or operator in ("gt", "gte", "lt", "lte", "between")
    if operator in LIST_OPERATORS:
        if not isinstance(value, list) or not value:
            raise RuleError("value", "Give a non-empty list of values.", "list")
        items = value
    elif operator == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RuleError("value", "Give two numbers: [from, to].", "between")
        items = value
    else:
        if isinstance(value, (list, dict)) or value is None or value == "":
            raise RuleError("value", "Give one value.", "one")
        items = [value]
    for item in items:
        if isinstance(item, (list, dict)) or item is None or item == "" or isinstance(item, bool):
            raise RuleError("value", "Values must be texts or numbers, not empty.", "scalar")
        if numeric and as_number(item) is None:
            raise RuleError("value", f"{item!r} is not a number.", "number", value=repr(item))
    if operator == "matches":
        if _UNSAFE_REGEX.search(str(value)) or not _portable_regex(str(value)):
            raise RuleError("value", "Use plain patterns: letters, . * + ? | ^ $ [ ] ( ), {m,n} repeats up to "
                                     "255, and \\. \\{ escapes.", "portable")
        try:
            python_regex(str(value))
        except re.error as exc:
            raise RuleError("value", f"The regular expression does not compile: {exc}.", "regex",
                            error=str(exc)) from exc


def _regex_tokens(pattern):
    """(kind, text) pieces of a pattern: an escape, a [class], a {brace}, or one character."""
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            end, kind = position + 2, "escape"
        elif char == "[":
            end, kind = position + 1, "class"
            end += pattern[end:end + 1] == "^"
            end += pattern[end:end + 1] == "]"
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            end += 1
        elif char == "{":
            end, kind = pattern.find("}", position) + 1 or len(pattern), "brace"
        else:
            end, kind = position + 1, "char"
        yield kind, pattern[position:end]
        position = end


_REPEAT = re.compile(r"\{([0-9]{1,3})(,([0-9]{0,3}))?\}")


def _portable_regex(pattern):
    """Only what PostgreSQL and Python read alike: braces are repeat counts PostgreSQL
    accepts ("a{,3}" and "a{" differ), and no [:alpha:] classes (Python reads them as
    sets of characters)."""
    for kind, text in _regex_tokens(pattern):
        if kind == "class" and re.search(r"\[[.:=]", text[1:]):
            return False
        if kind == "brace":
            repeat = _REPEAT.fullmatch(text)
            if not repeat or int(repeat[1]) > 255 or (repeat[3] and int(repeat[3]) > 255):
                return False
    return True


def sql_regex(value):
    """A ``matches`` pattern as it applies to folded text: folded itself, so that "São"
    finds "SAO PAULO", as PostgreSQL reads it."""
    return fold(str(value))


@functools.lru_cache(maxsize=512)
def python_regex(value):
    """``sql_regex`` compiled so that Python reads it as PostgreSQL does: "." matches a
    line break too, and "$" only the very end (Python's also matches before a final
    line break)."""
    pieces = [r"\Z" if (kind, text) == ("char", "$") else text for kind, text in _regex_tokens(sql_regex(value))]
    return re.compile("".join(pieces), re.DOTALL)


def as_number(value):
    """A number as Decimal, or None. Text must look like -12 or 12.5."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else None
    text = str(value).strip()
    if not NUMBER_RE.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def attribute_text(value):
    """How a custom field's JSON value reads as text (as the database's ->> gives it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # jsonb keeps numbers as numeric and prints them positionally: 1e-05 reads 0.00001.
        return format(Decimal(repr(value)) + 0, "f")
    return str(value)


def _is_empty(value):
    return value is None or value == ""


def rule_matches(rule, facts, events, now):
    """Does ``rule`` match? Returns (matched, value_seen)."""
    kind = field_kind(rule.field)
    operator = rule.operator
    if kind == "engagement":
        since = now.timestamp() - rule.window_days * 86400
        kinds = ENGAGEMENT_EVENT_KINDS[ENGAGEMENT_FIELDS[rule.field]]
        seen = sum(1 for event_kind, at in events if event_kind in kinds and at.timestamp() >= since)
        return _compare_number(operator, Decimal(seen), rule.value), seen
    if kind == "attribute":
        seen = attribute_text(facts.get("attributes", {}).get(rule.field[len(ATTRIBUTE_PREFIX):]))
    else:
        seen = facts.get(rule.field)
    if operator == "is_empty":
        return _is_empty(seen), seen
    if operator == "is_not_empty":
        return not _is_empty(seen), seen
    if _is_empty(seen):
        return False, seen
    if kind == "number" or (kind == "attribute" and operator in ("gt", "gte", "lt", "lte", "between")):
        number = as_number(seen)
        return (number is not None and _compare_number(operator, number, rule.value)), seen
    return compare_text(operator, fold(seen), rule.value), seen


def _compare_number(operator, number, value):
    if operator in NEGATED:
        return not _compare_number(NEGATED[operator], number, value)
    if operator == "equals":
        return number == as_number(value)
    if operator == "in":
        return number in {as_number(item) for item in value}
    if operator == "between":
        low, high = sorted(as_number(item) for item in value)
        return low <= number <= high
    target = as_number(value)
    return {"gt": number > target, "gte": number >= target, "lt": number < target, "lte": number <= target}[operator]


def compare_text(operator, text, value):
    if operator in NEGATED:
        return not compare_text(NEGATED[operator], text, value)
    if operator == "equals":
        return text == fold(value)
    if operator == "in":
        return text in {fold(item) for item in value}
    if operator == "contains":
        return fold(value) in text
    if operator == "contains_any":
        return any(fold(item) in text for item in value)
    if operator == "starts_with":
        return text.startswith(fold(value))
    if operator == "email_domain_in":
        domain = text.split("@")[1] if "@" in text else ""
        return domain in {fold(item) for item in value}
    if operator == "matches":
        return python_regex(str(value)).search(text) is not None
    raise RuleError("operator", f"Unknown operator: {operator!r}.")


def engagement_points(ruleset, events, now):
    """Each engagement event's points, halved every half-life (events in the future count in full)."""
    half_life = ruleset.half_life_days * 86400
    total = 0.0
    for event_kind, at in events:
        for name, kinds in ENGAGEMENT_EVENT_KINDS.items():
            points = ruleset.engagement_points.get(name, 0)
            if points and event_kind in kinds:
                age = max(0.0, (now - at).total_seconds())
                total += points * 0.5 ** (age / half_life)
    return total


def evaluate(ruleset: Ruleset, facts: dict, events=(), *, now: datetime) -> Verdict:
    """The verdict for one lead.

    An out-of-focus knock-out wins, then a disqualified knock-out (the first matching
    rule in order gives the reason); otherwise the score is the matching rules' points
    plus the engagement points, and ``score >= qualify`` means qualified, else
    disqualified (below threshold). Temperature comes from the score for every lead.
    """
    explanation = []
    points = 0
    out_of_focus = disqualified = None
    for rule in ruleset.rules:
        matched, seen = rule_matches(rule, facts, events, now)
        if not matched:
            continue
        explanation.append({
            "rule": rule.id, "name": rule.name, "field": rule.field, "operator": rule.operator,
            "value": rule.value, "effect": rule.effect, "points": rule.points if rule.effect == POINTS else 0,
            "reason": rule.reason if rule.effect != POINTS else "", "seen": _jsonable(seen),
        })
        if rule.effect == POINTS:
            points += rule.points
        elif rule.effect == OUT_OF_FOCUS and out_of_focus is None:
            out_of_focus = rule
        elif rule.effect == DISQUALIFIED and disqualified is None:
            disqualified = rule
    engagement = engagement_points(ruleset, events, now)
    if engagement:
        explanation.append({"rule": None, "name": "engagement", "effect": POINTS,
                            "points": math.floor(engagement + 0.5), "seen": round(engagement, 2)})
    score = points + math.floor(engagement + 0.5)
    if out_of_focus:
        status, reason = OUT_OF_FOCUS, out_of_focus.reason
    elif disqualified:
        status, reason = DISQUALIFIED, disqualified.reason
    elif score >= ruleset.qualify:
        status, reason = QUALIFIED, ""
    else:
        status, reason = DISQUALIFIED, BELOW_THRESHOLD
    return Verdict(status=status, reason=reason, score=score, temperature=temperature(ruleset, score),
                   explanation=explanation)


def temperature(ruleset, score):
    if score >= ruleset.hot:
        return "hot"
    if score >= ruleset.warm:
        return "warm"
    return "cold"


def _jsonable(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
