"""CSV that opens right in the reader's spreadsheet.

Excel reads a CSV with the list separator and decimal mark of the computer's regional
settings: in Brazil ``;`` and ``,``. A comma-separated file opens there as one column,
and ``0.25`` as text or as 25. So the CSVs people download in the browser follow the
conventions of their language (``conventions``): ``;`` wherever the decimal mark is a
comma, and numbers written with that mark. Both start with a byte-order mark, without
which Excel reads UTF-8 as cp1252 and garbles every accent.
"""

from dataclasses import dataclass

from django.utils import formats

BOM = "\ufeff"


@dataclass(frozen=True)
class Conventions:
    delimiter: str
    decimal: str

    def number(self, text):
        """A number already written with a dot as its decimal mark, in this convention."""
        return text.replace(".", self.decimal) if self.decimal != "." else text


STANDARD = Conventions(delimiter=",", decimal=".")


def conventions(language=None):
    """The delimiter and decimal mark a spreadsheet in ``language`` (default: the active
    one) expects."""
    decimal = formats.get_format("DECIMAL_SEPARATOR", lang=language, use_l10n=True)
    return Conventions(delimiter=";" if decimal == "," else ",", decimal=decimal)
