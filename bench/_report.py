"""docs/benchmarks.md: each script writes its own section between markers, so one run
replaces its figures and leaves the others' alone."""

import datetime
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Figures measured by the scripts in `bench/` (`make bench` runs them all). Each section
says when it was measured, on which machine, at which size, and against which baseline
measured in the same run.
"""


def write_section(name, markdown, *, title=None):
    """Replace the section ``name`` of docs/benchmarks.md (or append it)."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{start}\n## {title or name.capitalize()}\n\nMeasured {stamp}.\n\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")
