"""From what a form posted to the fields of a lead. Pure: no ORM, no settings.

Used by the public form endpoint, the authenticated API and the CSV import, so a
lead is normalised and validated the same way whichever door it came through.
"""

from dataclasses import dataclass, field

from . import normalize

TEXT_LIMITS = {
    "first_name": 100, "last_name": 150, "company": 200, "job_title": 150, "city": 150, "interest": 255,
    "utm_source": 150, "utm_medium": 150, "utm_campaign": 150, "utm_term": 150, "utm_content": 150,
    "message": 5000,
}
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# Keys the endpoint always understands even when a form does not list them.
ALWAYS_ACCEPTED = ("email", "phone", "consent", *UTM_FIELDS)
MAX_ATTRIBUTE_LENGTH = 1000


@dataclass
class CleanLead:
    fields: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    consent: bool = False
    dropped: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)

    @property
    def is_valid(self):
        return not self.errors


def clean_lead_data(
    payload, *, accepted, required=(), standard=(), default_interest="", consent_required=False,
    honeypot="", phone_region="BR", empty_values=(),
):
    """Normalise and validate one submission.

    ``accepted`` are the keys the form accepts; the ones not in ``standard`` go to the
    lead's custom attributes. Keys not accepted are dropped and listed. ``empty_values``
    (e.g. "Select", "-") are read as empty.
    """
    result = CleanLead()
    accepted = set(accepted) | set(ALWAYS_ACCEPTED)
    empties = {normalize.fold(value) for value in empty_values}
    # Fold only what could be a placeholder: an ASCII value longer than every placeholder cannot be one.
    longest_empty = max((len(value) for value in empty_values), default=-1)
    values = {}
    for key, raw in payload.items():
        if key == honeypot or key in ("csrfmiddlewaretoken",):
            continue
        if key not in accepted:
            result.dropped.append(key)
            continue
        if isinstance(raw, list):
            raw = raw[-1] if raw else ""
        if isinstance(raw, str):
            raw = raw.strip()
            if (len(raw) <= longest_empty or not raw.isascii()) and normalize.fold(raw) in empties:
                raw = ""
        elif raw is not None and not isinstance(raw, (int, float, bool)):
            result.errors[key] = "Expected a single value."
            continue
        values[key] = raw
    result.dropped.sort()

    out = result.fields
    _clean(result, values, "email", lambda v: normalize.normalize_email(str(v)))
    _clean(result, values, "phone", lambda v: normalize.normalize_phone(str(v), phone_region))
    country = str(values.get("country") or "BR").strip().upper()
    if len(country) != 2 or not country.isalpha():
        result.errors["country"] = "Enter the two-letter country code, e.g. BR."
    elif "country" in values:
        out["country"] = country
    _clean(result, values, "state", lambda v: normalize.normalize_state(str(v), country))
    _clean(result, values, "budget", lambda v: normalize.normalize_budget(str(v) if isinstance(v, bool) else v))
    _clean(result, values, "company_size", normalize.normalize_company_size)

    first, last = normalize.split_name(_text(values.get("name")))
    out_first = _text(values.get("first_name")) or first
    out_last = _text(values.get("last_name")) or last
    if out_first:
        out["first_name"] = out_first
    if out_last:
        out["last_name"] = out_last
    for name in ("company", "job_title", "city", "interest", *UTM_FIELDS):
        text = _text(values.get(name))
        if text:
            out[name] = text
    message = values.get("message")
    if message not in (None, "") and not isinstance(message, bool):
        out["message"] = str(message).strip()
    if not out.get("interest") and default_interest:
        out["interest"] = default_interest
    for name, limit in TEXT_LIMITS.items():
        if len(out.get(name, "")) > limit:
            result.errors[name] = f"Ensure this field has no more than {limit} characters."

    result.consent = normalize.normalize_bool(values.get("consent"))
    if consent_required and not result.consent:
        result.errors["consent"] = "Consent is required."

    for key, value in values.items():
        if key in standard or key in ALWAYS_ACCEPTED or value in ("", None):
            continue
        text = str(value)
        if len(text) > MAX_ATTRIBUTE_LENGTH:
            result.errors[key] = f"Ensure this field has no more than {MAX_ATTRIBUTE_LENGTH} characters."
        else:
            result.attributes[key] = value if isinstance(value, (int, float, bool)) else text

    for name in required:
        present = out.get(name) not in (None, "") or result.attributes.get(name) not in (None, "")
        if name == "name":
            present = bool(out.get("first_name"))
        elif name == "consent":
            present = result.consent
        if not present and name not in result.errors:
            result.errors[name] = "This field is required."
    if not out.get("email") and not out.get("phone") and "email" not in result.errors and "phone" not in result.errors:
        result.errors["email"] = "Enter an email address or a phone number."
    return result


def _text(value):
    if value is None:
        return ""
    return " ".join(str(value).split()) if not isinstance(value, bool) else ""


def _clean(result, values, name, function):
    raw = values.get(name)
    if raw in (None, ""):
        return
    try:
        cleaned = function(raw)
    except ValueError as exc:
        result.errors[name] = str(exc)
        return
    if cleaned not in (None, ""):
        result.fields[name] = cleaned
