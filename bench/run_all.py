#!/usr/bin/env python
"""Every benchmark in bench/, one after another, at full size (or --quick), and their
figures in docs/benchmarks.md. `make bench` runs this; CI runs it with --quick, which
asserts nothing about time: it only proves the scripts still run.

A script that writes its own section of docs/benchmarks.md (bench/_report.py) keeps
it; the output of one that does not is written there as it printed it.

    .venv/bin/python bench/run_all.py [--quick] [--only ingest,rescore] [--no-docs]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import (  # noqa: E402
    DOC,
    SUMMARY,
    earlier_summary_rows,
    parse_figures,
    summary_markdown,
    write_section,
)
from bench._server import PYTHON, ROOT, machine  # noqa: E402

# In the order that makes sense to read; any other bench/*.py script runs after these.
ORDER = ["ingest", "import", "rescore", "triage", "dispatch", "dashboard", "load", "faults"]
NOT_BENCHMARKS = {"run_all", "locustfile", "settings", "urls"}


def scripts():
    found = {path.stem for path in (ROOT / "bench").glob("*.py")
             if not path.stem.startswith("_") and path.stem not in NOT_BENCHMARKS}
    return [name for name in ORDER if name in found] + sorted(found - set(ORDER))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, as CI runs them")
    parser.add_argument("--only", help="comma-separated script names")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else scripts()
    print(f"Machine: {machine()}. Scripts: {', '.join(names)}.", flush=True)
    failed = []
    figures = {}
    for name in names:
        command = [PYTHON, str(ROOT / "bench" / f"{name}.py")] + (["--quick"] if args.quick else [])
        if args.no_docs and name in ("faults", "load"):
            command.append("--no-docs")
        before = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        print(f"\n== bench/{name}.py {'--quick' if args.quick else ''}", flush=True)
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - started
        output = result.stdout.strip()
        figures[name] = parse_figures(output)
        print(output)
        if result.returncode:
            print(result.stderr[-4000:], file=sys.stderr)
            failed.append(name)
        print(f"-- {name}: exit {result.returncode} after {took:.0f} s", flush=True)
        after = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if not args.no_docs and after == before:  # the script did not write its own section
            size = "--quick" if args.quick else "full size"
            write_section(name, f"`bench/{name}.py` at {size}, exit {result.returncode}, {took:.0f} s. "
                                f"Machine: {machine()}.\n\n```\n{output}\n```", title=f"bench/{name}.py")
    size = "--quick (no target applies)" if args.quick else "full size"
    earlier = earlier_summary_rows(DOC.read_text(encoding="utf-8")) if DOC.exists() else {}
    table = summary_markdown(machine(), size, figures, earlier)
    print("\n" + table)
    if not args.no_docs:
        write_section(SUMMARY, table, title="Summary", first=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
