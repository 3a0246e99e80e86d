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


def write_section(name, markdown, *, title=None, first=False):
    """Replace the section ``name`` of docs/benchmarks.md, or add it: at the end, or with
    ``first`` before every other section."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{start}\n## {title or name.capitalize()}\n\nMeasured {stamp}.\n\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    elif first:
        cut = min((i for i in (text.find("\n<!-- bench:"), text.find("\n## ")) if i >= 0), default=len(text))
        text = text[:cut].rstrip() + "\n\n" + block + "\n" + text[cut:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


# One line per headline figure, printed by each script and gathered by bench/run_all.py into
# the summary table at the top of docs/benchmarks.md. Fields are separated by " | ".
FIGURE_PREFIX = "FIGURE | "
SUMMARY = "summary"


def figure(label, value, *, baseline="", ratio="", target="", met=None):
    """Print one headline figure in the form run_all.py collects.

    ``met`` is True/False when a target applies at this size, None when it does not (a
    --quick run, or a figure without a target)."""
    verdict = "" if met is None else ("met" if met else "NOT met")
    fields = [label, value, baseline, ratio, target, verdict]
    print(FIGURE_PREFIX + " | ".join(str(field).replace("|", "/") for field in fields), flush=True)


def parse_figures(output):
    """The figures a script printed with figure(), as lists of six strings."""
    rows = []
    for line in output.splitlines():
        if line.startswith(FIGURE_PREFIX):
            fields = line[len(FIGURE_PREFIX):].split(" | ")
            rows.append((fields + [""] * 6)[:6])
    return rows


def summary_markdown(machine_line, size, rows_by_script, earlier=None):
    """The summary table: one row per figure of every script that ran, then the rows an
    earlier run wrote for scripts that did not run this time (``earlier``, from
    earlier_summary_rows), so `make bench --only rescore` replaces only rescore's rows.
    Each row says when and at which size it was measured."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Machine: {machine_line}.",
        "",
        "| script | figure | value | baseline (same run) | ratio | target | | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for script, rows in rows_by_script.items():
        if not rows:
            lines.append(f"| `{script}` | (no figures printed) | | | | | | {stamp}, {size} |")
        for label, value, baseline, ratio, target, verdict in rows:
            lines.append(f"| `{script}` | {label} | {value} | {baseline} | {ratio} | {target} | {verdict} | "
                         f"{stamp}, {size} |")
    for script, row_lines in (earlier or {}).items():
        if script not in rows_by_script:
            lines.extend(row_lines)
    return "\n".join(lines)


def earlier_summary_rows(text):
    """The summary table rows already in docs/benchmarks.md, by script, as written."""
    start, end = f"<!-- bench:{SUMMARY} -->", f"<!-- /bench:{SUMMARY} -->"
    if start not in text or end not in text:
        return {}
    rows = {}
    for line in text.split(start, 1)[1].split(end, 1)[0].splitlines():
        if line.startswith("| `"):
            script = line[3:].split("`", 1)[0]
            rows.setdefault(script, []).append(line)
    return rows
