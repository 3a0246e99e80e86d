"""Pure normalisation of what people type into forms. No ORM, no settings.

Each function returns the clean value, or raises ``ValueError`` with a message a
person can read (it ends up in a 400 response naming the field).
"""

import functools
import re
import unicodedata
from decimal import Decimal, InvalidOperation

import phonenumbers

# The 27 federative units of Brazil: code -> name.
BRAZIL_STATES = {
    "AC": "Acre", "AL": "Alagoas", "AP": "Amapá", "AM": "Amazonas", "BA": "Bahia",
    "CE": "Ceará", "DF": "Distrito Federal", "ES": "Espírito Santo", "GO": "Goiás",
    "MA": "Maranhão", "MT": "Mato Grosso", "MS": "Mato Grosso do Sul", "MG": "Minas Gerais",
    "PA": "Pará", "PB": "Paraíba", "PR": "Paraná", "PE": "Pernambuco", "PI": "Piauí",
    "RJ": "Rio de Janeiro", "RN": "Rio Grande do Norte", "RS": "Rio Grande do Sul",
    "RO": "Rondônia", "RR": "Roraima", "SC": "Santa Catarina", "SP": "São Paulo",
    "SE": "Sergipe", "TO": "Tocantins",
}


@functools.lru_cache(maxsize=8192)
def fold(text):
    """Lower case without accents: how every text comparison in Funil sees a value.
    Cached: forms and spreadsheets repeat the same few states, placeholders and choices."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()


_STATE_BY_FOLDED_NAME = {fold(name): code for code, name in BRAZIL_STATES.items()}
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value):
    """Trim, lower-case, encode the domain as IDNA. '' stays ''."""
    value = (value or "").strip()
    if not value:
        return ""
    if not _EMAIL_RE.match(value):
        raise ValueError("Enter a valid email address.")
    local, _, domain = value.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError("Enter a valid email address.") from exc
    if len(local) > 64 or len(local) + len(domain) + 1 > 254:
        raise ValueError("Enter a valid email address.")
    return f"{local.lower()}@{domain.lower()}"


def normalize_phone(value, default_region="BR"):
    """Any way a person writes a phone number -> E.164 ('+5511987654321')."""
    value = (value or "").strip()
    if not value:
        return ""
    number = _valid_number(value, default_region)
    if number is None:
        raise ValueError("Enter a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _valid_number(value, region):
    """``value`` as a valid ``phonenumbers`` number (read as one of ``region`` when it
    has no country code), or None."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def display_phone(value, default_region="BR"):
    """An E.164 number as people read it: the national format for a number of
    ``default_region`` ('(11) 98765-4321'), the international one for any other
    ('+1 650-253-0000'). A value that does not parse is shown as it is."""
    number = _valid_number(value, default_region) if value else None
    if number is None:
        return value or ""
    national = phonenumbers.region_code_for_number(number) == (default_region or "").upper()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL if national
                                      else phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalize_state(value, country="BR"):
    """A Brazilian state by code or name, any case or accents -> its UF code."""
    value = (value or "").strip()
    if not value:
        return ""
    if country and country.upper() != "BR":
        if len(value) == 2 and value.isalpha():
            return value.upper()
        raise ValueError("Enter the state as its two-letter code.")
    folded = fold(value)
    if folded.upper() in BRAZIL_STATES:
        return folded.upper()
    if folded in _STATE_BY_FOLDED_NAME:
        return _STATE_BY_FOLDED_NAME[folded]
    raise ValueError("Enter a Brazilian state (UF code or name).")


_MULTIPLIERS = {"k": Decimal(1000), "mil": Decimal(1000), "m": Decimal(1000000), "mi": Decimal(1000000)}


def normalize_budget(value):
    """'R$ 5.000,00', '5000', '5k', '5,5 mil', '1.5M' -> Decimal. '' -> None.

    A single separator followed by exactly three digits is a thousands separator
    ('5.000' is five thousand); otherwise it is the decimal mark.
    """
    if value is None:
        return None
    if isinstance(value, (int, Decimal)):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(str(value))
    else:
        amount = parse_amount(value)
        if amount is None:
            return None
    if amount < 0:
        raise ValueError("The budget cannot be negative.")
    if amount >= Decimal("1e12"):
        raise ValueError("The budget is too large.")
    return amount.quantize(Decimal("0.01"))


# What ``parse_amount(strict=True)`` accepts: a plain number with at most two decimals
# ("15000", "15000,50"), thousands grouped by threes with one mark and decimals after
# the other ("15.000", "1.500.050", "15.000,50", "15,000.50"), or a number before a
# multiplier ("15k", "1,5 mil").
_PLAIN_AMOUNT = re.compile(r"[0-9]+(?:[.,][0-9]{1,2})?")
_GROUPED_AMOUNT = re.compile(r"[0-9]{1,3}(?P<mark>[.,])[0-9]{3}(?:(?P=mark)[0-9]{3})*(?:(?!(?P=mark))[.,][0-9]+)?")
_MULTIPLIED_AMOUNT = re.compile(r"[0-9]+(?:[.,][0-9]+)?")


def parse_amount(text, strict=False):
    """An amount of money as people type it, read the same in any language: 'R$ 15.000',
    '15.000,50', '15,000.50', '15000.50', '15k', '5,5 mil' -> Decimal, not rounded
    ('1,505' is one thousand five hundred and five; '1.500,555' keeps its three places,
    for the caller to refuse or round). '' (or only a currency sign) -> None.

    ``strict``: refuse what only a guess reads, such as '12,5,3.1' or '1234,567'
    (a person typing into a form can correct it; an imported spreadsheet cannot)."""
    text = fold(text or "").replace("r$", "").replace("brl", "").replace(" ", "")
    if not text:
        return None
    match = re.fullmatch(r"([0-9.,]+)(k|mil|mi|m)?", text)
    if not match:
        raise ValueError("Enter an amount, e.g. 5000, 5.000,00 or 5k.")
    digits, suffix = match.groups()
    if strict and not (
        _MULTIPLIED_AMOUNT.fullmatch(digits) if suffix
        else _PLAIN_AMOUNT.fullmatch(digits) or _GROUPED_AMOUNT.fullmatch(digits)
    ):
        raise ValueError("Enter an amount, e.g. 5000, 5.000,00 or 5k.")
    return _parse_number(digits) * _MULTIPLIERS.get(suffix or "", Decimal(1))


def _parse_number(digits):
    separators = [ch for ch in digits if ch in ".,"]
    if not separators:
        cleaned = digits
    elif len(set(separators)) == 2:
        decimal_mark = digits[max(digits.rfind("."), digits.rfind(","))]
        thousands = "," if decimal_mark == "." else "."
        cleaned = digits.replace(thousands, "").replace(decimal_mark, ".")
    else:
        mark = separators[0]
        head, _, tail = digits.rpartition(mark)
        if len(separators) > 1 or len(tail) == 3:
            cleaned = digits.replace(mark, "")
        else:
            cleaned = f"{head.replace(mark, '')}.{tail}"
    try:
        return Decimal(cleaned)
    except InvalidOperation as exc:
        raise ValueError("Enter an amount, e.g. 5000, 5.000,00 or 5k.") from exc


def split_name(full_name):
    """'Maria da Silva Souza' -> ('Maria', 'da Silva Souza')."""
    parts = (full_name or "").split()
    if not parts:
        return "", ""
    return parts[0], " ".join(parts[1:])


def normalize_company_size(value):
    """'120', '51-200', '50+', '1.000' -> the (lower bound) number of employees."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        number = value
    else:
        match = re.search(r"\d[\d.]*", str(value))
        if not match:
            raise ValueError("Enter the number of employees, e.g. 50 or 51-200.")
        number = int(match.group().replace(".", ""))
    if number < 0 or number > 10_000_000:
        raise ValueError("Enter the number of employees, e.g. 50 or 51-200.")
    return number


_TRUE = {"1", "true", "on", "yes", "y", "sim", "s", "checked", "aceito"}


def normalize_bool(value):
    if isinstance(value, bool):
        return value
    return fold(value or "") in _TRUE
