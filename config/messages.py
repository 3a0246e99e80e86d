"""Update the pt-BR catalogues in place from the code (`make messages`; needs GNU gettext).

Funil has four catalogues: config/locale (LOCALE_PATHS) and leads/, scoring/ and
nurturing/locale. They are not split by directory: a string of leads/models.py or of
templates/leads/ may be in any of them (Django reads config's first, then the apps' in
INSTALLED_APPS order). A plain `manage.py makemessages` files every string under the
directory it was found in, so it would move strings from one catalogue to another,
leaving them fuzzy or untranslated in the new one and obsolete in the old.

So makemessages here only extracts the strings, and msgmerge updates each catalogue
against the strings it already holds:
- a string stays in the catalogue(s) that hold it, where it is in the file;
- a new string is added, untranslated, at the end of the catalogue of the app its first
  reference is in (leads/…, templates/leads/…, templates/admin/scoring/…), else of
  config/locale; no fuzzy matching, so no translation is guessed;
- a string gone from the code stays in its catalogue as an obsolete (#~) entry;
- the header is kept as it is, and #: locations are written only where there are some.
It prints the new strings and each catalogue's msgfmt statistics; the Makefile then
compiles every catalogue with compilemessages.
"""

import ast
import os
import re
import subprocess
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
LOCALE = "pt_BR"
APPS = ("leads", "scoring", "nurturing")
LOCALE_DIRS = {name: BASE_DIR / name / "locale" for name in ("config", *APPS)}
IGNORE = [".venv/*", "tests/*", "bench/*"]
POT_HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"'


def entries(text):
    """(key, references, text) of each entry of a .po or .pot file; key is (msgctxt, msgid)."""
    for block in text.split("\n\n"):
        block = block.strip("\n")
        fields, refs, field = {}, [], None
        for line in block.splitlines():
            line = line[3:] if line.startswith("#~ ") else line
            if line.startswith("#:"):
                refs += line[2:].split()
            elif line.startswith(("msgctxt ", "msgid ")):
                field, _, value = line.partition(" ")
                fields[field] = ast.literal_eval(value)
            elif line.startswith('"') and field:
                fields[field] += ast.literal_eval(line)
            elif not line.startswith("#"):  # msgid_plural, msgstr: not part of the key
                field = None
        if fields.get("msgid"):  # not the header
            yield (fields.get("msgctxt"), fields["msgid"]), refs, block


def home(refs):
    """The catalogue a new string goes to, from its first reference."""
    parts = Path(refs[0].rsplit(":", 1)[0]).parts
    if parts[0] == "templates":  # templates/leads/…, templates/admin/scoring/…
        parts = parts[2:] if parts[1] == "admin" else parts[1:]
    return parts[0] if parts[0] in APPS else "config"


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, encoding="utf-8").stdout


def extract():
    """Every translatable string of the project, as the text of a POT file."""
    import django
    from django.core.management import call_command
    from django.core.management.commands import makemessages

    class Extract(makemessages.Command):
        def write_po_file(self, potfile, locale):  # write the POT files, not the .po files
            pass

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    django.setup()
    os.chdir(BASE_DIR)
    call_command(Extract(), locale=[LOCALE], ignore_patterns=IGNORE, keep_pot=True, verbosity=0)
    pots = [path / "django.pot" for path in LOCALE_DIRS.values() if (path / "django.pot").exists()]
    try:
        return run("msgcat", "--use-first", *pots)
    finally:
        for pot in pots:
            pot.unlink()


def main():
    code = {key: (refs, block) for key, refs, block in entries(extract())}
    po_files = {name: path / LOCALE / "LC_MESSAGES" / "django.po" for name, path in LOCALE_DIRS.items()}
    texts = {name: po.read_text(encoding="utf-8") for name, po in po_files.items()}
    held = {name: [key for key, _, _ in entries(text)] for name, text in texts.items()}
    known = {key for keys in held.values() for key in keys}
    for name, po in po_files.items():
        new = [key for key, (refs, _) in code.items() if key not in known and home(refs) == name]
        keys = [key for key in held[name] if key in code] + new
        pot = po.with_name("django.pot")
        pot.write_text("\n\n".join([POT_HEADER] + [code[key][1] for key in keys]) + "\n", encoding="utf-8")
        location = [] if re.search(r"^#: ", texts[name], re.MULTILINE) else ["--no-location"]
        try:
            merged = run("msgmerge", "--quiet", "--no-fuzzy-matching", *location, "--output-file=-", po, pot)
        finally:
            pot.unlink()
        for _, msgid in new:
            print(f"{po.relative_to(BASE_DIR)}: new, untranslated: {msgid!r}")
        if merged != texts[name]:
            po.write_text(merged, encoding="utf-8")
            print(f"{po.relative_to(BASE_DIR)}: updated")
        stats = subprocess.run(["msgfmt", "--statistics", "-o", os.devnull, po], capture_output=True, text=True)
        print(f"{po.relative_to(BASE_DIR)}: {stats.stderr.strip()}")


if __name__ == "__main__":
    main()
