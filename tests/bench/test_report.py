"""make bench's summary: the figures each script prints end up in one table at the top."""

from bench import _report


def test_figures_printed_by_a_script_are_parsed_back(capsys):
    _report.figure("rescore 1M leads", "14.2 s", baseline="per-lead loop 330/s", ratio="210x",
                   target="<= 20 s", met=True)
    _report.figure("no target here", "3 | 4")
    printed = "some other line\n" + capsys.readouterr().out + "a trailer\n"

    rows = _report.parse_figures(printed)

    assert rows == [
        ["rescore 1M leads", "14.2 s", "per-lead loop 330/s", "210x", "<= 20 s", "met"],
        ["no target here", "3 / 4", "", "", "", ""],
    ]


def test_summary_goes_before_every_other_section_and_is_replaced_on_the_next_run(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(_report.HEADER + "\n## Capture\n\nold prose\n", encoding="utf-8")
    monkeypatch.setattr(_report, "DOC", doc)
    _report.write_section("faults", "faults table")

    first = _report.summary_markdown("2 cores", "full", {"ingest": [["rate", "90/s", "", "", ">= 500/s", "NOT met"]],
                                                         "load": []})
    _report.write_section(_report.SUMMARY, first, title="Summary", first=True)
    second = _report.summary_markdown("2 cores", "full", {"ingest": [["rate", "510/s", "", "", ">= 500/s", "met"]]})
    _report.write_section(_report.SUMMARY, second, title="Summary", first=True)

    text = doc.read_text(encoding="utf-8")
    assert text.index("## Summary") < text.index("## Capture") < text.index("faults table")
    assert text.count("## Summary") == 1
    assert "| `ingest` | rate | 510/s |  |  | >= 500/s | met |" in text
    assert "90/s" not in text


def test_a_partial_run_replaces_its_own_rows_and_keeps_the_other_scripts_rows(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    monkeypatch.setattr(_report, "DOC", doc)
    full = _report.summary_markdown("2 cores", "full size", {
        "ingest": [["rate", "90/s", "", "", ">= 500/s", "NOT met"]],
        "rescore": [["1M leads", "55 s", "", "", "<= 20 s", "NOT met"]],
    })
    _report.write_section(_report.SUMMARY, full, title="Summary", first=True)

    earlier = _report.earlier_summary_rows(doc.read_text(encoding="utf-8"))
    partial = _report.summary_markdown("2 cores", "full size", {"rescore": [["1M leads", "18 s", "", "", "<= 20 s",
                                                                              "met"]]}, earlier)
    _report.write_section(_report.SUMMARY, partial, title="Summary", first=True)

    text = doc.read_text(encoding="utf-8")
    assert set(earlier) == {"ingest", "rescore"}
    assert "| `rescore` | 1M leads | 18 s |" in text and "55 s" not in text
    assert "| `ingest` | rate | 90/s |" in text  # not run this time: kept, with its own date and size
    assert text.count("| `ingest` |") == 1
