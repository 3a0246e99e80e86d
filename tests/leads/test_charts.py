"""The server-drawn charts: legends that wrap, axis labels that do not overlap."""

import itertools
import re

from leads import charts

MONTHS = [f"{month} 2026" for month in ("Jan", "Fev", "Mar", "Abr", "Mai", "Jun", "Jul", "Ago", "Set", "Out", "Nov",
                                         "Dez")]
SERIES = [("Abaixo da pontuação mínima", [1] * 12), ("Fora da área de atendimento", [2] * 12),
          ("Procura o que não vendemos", [3] * 12), ("Sem orçamento agora", [4] * 12),
          ("Linha de produto diferente", [5] * 12)]


def test_the_legend_is_html_above_the_chart_with_every_series_in_its_colour():
    html = str(charts.lines(MONTHS, SERIES, title="Motivos", desc="Por mês"))
    legend = html[:html.index("<svg")]
    assert re.findall(r'background:(#[0-9a-f]{6})"></span>([^<]+)</li>', legend) == [
        (charts.PALETTE[j], name) for j, (name, _values) in enumerate(SERIES)]
    assert '<div class="chart-scroll"><svg' in html and html.endswith("</svg></div>")
    bars = str(charts.bars(["Fora de SP", "Decisor"], [("Atendidos", [31, 117]), ("Qualificado", [0, 60])],
                           title="Regras", desc="Por regra"))
    assert bars.startswith('<ul class="chart-legend">') and "Qualificado</li>" in bars


def test_month_labels_that_would_overlap_are_thinned_keeping_the_first_and_the_last():
    svg = str(charts.lines(MONTHS, SERIES, title="Motivos", desc="Por mês"))
    shown = re.findall(r'font-size="11">([A-Z][a-z]{2} 2026)</text>', svg)
    assert shown[0] == "Jan 2026" and shown[-1] == "Dez 2026"
    assert len(shown) < len(MONTHS)
    positions = [float(x) for x in re.findall(r'<text x="([0-9.]+)" y="[0-9.]+" text-anchor="middle" '
                                              r'font-size="11">[A-Z]', svg)]
    widest = charts._text_width("Jan 2026", 11)
    assert all(later - earlier >= widest for earlier, later in itertools.pairwise(positions))
    few = str(charts.lines(MONTHS[:4], [("Uma", [1, 2, 3, 4])], title="t", desc="d"))
    assert re.findall(r'font-size="11">([A-Z][a-z]{2} 2026)</text>', few) == MONTHS[:4]  # room for all


def test_a_long_bar_label_wraps_to_two_lines_between_words_and_only_the_rest_is_cut():
    labels = ["Investimento", "Valor dos negócios dos leads", "Procura o que não vendemos e nem pretende vender um dia",
              "Paletesdemadeiraparaexportacaocertificados"]
    svg = str(charts.bars(labels, [("Valor", [1, 2, 3, 4])], title="Custo", desc="Custo e retorno"))
    labels_drawn = re.findall(r'<text [^>]*font-size="12">(.*?)</text>', svg)
    lines = [re.findall(r"<tspan[^>]*>([^<]*)</tspan>", drawn) for drawn in labels_drawn]
    assert lines[0] == ["Investimento"]
    assert lines[1] == ["Valor dos negócios dos leads"]
    assert lines[2] == ["Procura o que não vendemos e", "nem pretende vender um dia"]
    assert lines[3] == ["Paletesdemadeiraparaexportacaocertificados"[:27] + "…"]  # one word: cut
    assert all(len(line) <= charts.LABEL_CHARS for drawn in lines for line in drawn)
    assert charts._label_lines(" " * 40) == [""]  # a blank label draws nothing, and does not fail
    # Two lines sit around the bar's middle: the second 13 px below the first.
    ys = [float(y) for y in re.findall(r'<tspan x="[\d.]+" y="([\d.]+)"', labels_drawn[2])]
    assert ys[1] - ys[0] == charts.LABEL_LINE
