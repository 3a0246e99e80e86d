"""Charts drawn on the server as SVG: a funnel, horizontal bars and lines. No JavaScript,
no chart library. Each SVG has a <title> and <desc> (read by screen readers through
``aria-labelledby``); the page shows the same numbers in a table next to it."""

import math
from itertools import count

from django.utils import formats
from django.utils.html import escape
from django.utils.safestring import mark_safe

PALETTE = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#dc2626", "#0891b2", "#ca8a04")
_ids = count(1)
WIDTH = 640


def _svg(width, height, title, desc, body, legend=()):
    """The chart: its legend in HTML above it (``legend``: the series' names), which
    wraps at any width with the page's text size, then the SVG in a box that scrolls
    sideways on a phone rather than shrinking the axes' text (dashboard.css)."""
    n = next(_ids)
    key = "".join(f'<li><span class="swatch" style="background:{PALETTE[j % len(PALETTE)]}"></span>'
                  f'{escape(name)}</li>' for j, name in enumerate(legend))
    return mark_safe(
        (f'<ul class="chart-legend">{key}</ul>' if key else "")
        + f'<div class="chart-scroll"><svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'aria-labelledby="chart-t{n} chart-d{n}">'
        f'<title id="chart-t{n}">{escape(title)}</title><desc id="chart-d{n}">{escape(desc)}</desc>'
        f'{body}</svg></div>'
    )


def _number(value):
    """A bar's or point's figure in the reader's format ("17.400", "433,8" in pt-BR)."""
    if value is None:
        return "–"
    if isinstance(value, float) or hasattr(value, "quantize"):
        rounded = round(float(value), 1)
        return formats.number_format(rounded, 0 if rounded.is_integer() else 1, use_l10n=True, force_grouping=True)
    return formats.number_format(value, 0, use_l10n=True, force_grouping=True)


def funnel(stages, *, title, desc):
    """``stages``: [(label, value)], widest first; each a centred bar as wide as its share."""
    top = max((value or 0 for _, value in stages), default=0) or 1
    row, gap, label_w = 44, 8, 170
    height = len(stages) * (row + gap) + gap
    usable = WIDTH - label_w - 20
    parts = []
    for i, (label, value) in enumerate(stages):
        width = max(2.0, usable * (value or 0) / top)
        x = label_w + (usable - width) / 2
        y = gap + i * (row + gap)
        parts.append(
            f'<text x="{label_w - 10}" y="{y + row / 2 + 5}" text-anchor="end" font-size="14">{escape(label)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{row}" rx="4" fill="{PALETTE[i % len(PALETTE)]}">'
            f'<title>{escape(label)}: {_number(value)}</title></rect>'
            f'<text x="{label_w + usable / 2:.1f}" y="{y + row / 2 + 5}" text-anchor="middle" font-size="14" '
            f'fill="#fff" stroke="#000" stroke-width="0.6" paint-order="stroke">{_number(value)}</text>'
        )
    return _svg(WIDTH, height, title, desc, "".join(parts))


LABEL_CHARS, LABEL_LINE = 28, 13  # a bar label's line: characters at 12 px in 190 px, and its height


def _label_lines(label):
    """A bar's label in one line, or two split between words ("Valor dos negócios dos
    leads" no longer loses its end); only what is still too long is cut, with "…"."""
    if len(label) <= LABEL_CHARS:
        return [label]
    words = label.split()
    if not words:
        return [""]
    first = words.pop(0)
    while words and len(first) + 1 + len(words[0]) <= LABEL_CHARS:
        first += " " + words.pop(0)
    rest = " ".join(words)
    lines = [first, rest] if rest else [first]
    return [line if len(line) <= LABEL_CHARS else line[:LABEL_CHARS - 1] + "…" for line in lines]


def bars(labels, series, *, title, desc):
    """Horizontal grouped bars: ``labels`` (one per group), ``series`` [(name, [values])]."""
    values = [v or 0 for _, vs in series for v in vs]
    top = max(values, default=0) or 1
    bar, inner, gap, label_w = 14, 2, 12, 190
    group_h = len(series) * (bar + inner)
    height = len(labels) * (group_h + gap) + gap
    usable = WIDTH - label_w - 70
    parts = []
    for i, label in enumerate(labels):
        y0 = gap + i * (group_h + gap)
        lines = _label_lines(label)
        middle = y0 + group_h / 2 + 4 - (len(lines) - 1) * LABEL_LINE / 2
        parts.append(f'<text x="{label_w - 8}" y="{middle:.1f}" text-anchor="end" font-size="12">' + "".join(
            f'<tspan x="{label_w - 8}" y="{middle + k * LABEL_LINE:.1f}">{escape(line)}</tspan>'
            for k, line in enumerate(lines)) + '</text>')
        for j, (name, vs) in enumerate(series):
            value = vs[i]
            width = usable * (value or 0) / top
            y = y0 + j * (bar + inner)
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{max(width, 0.5):.1f}" height="{bar}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(label)} · {escape(name)}: '
                f'{_number(value)}</title></rect>'
                f'<text x="{label_w + width + 4:.1f}" y="{y + bar - 3}" font-size="11">{_number(value)}</text>'
            )
    return _svg(WIDTH, height, title, desc, "".join(parts), legend=[name for name, _ in series])


def lines(x_labels, series, *, title, desc):
    """Lines over ``x_labels`` (e.g. months): ``series`` [(name, [values])]."""
    highest = max((v or 0 for _, vs in series for v in vs), default=0)
    top = max(4, math.ceil(highest / 4) * 4)  # four whole-number steps on the scale
    left, right, top_pad, bottom = 50, 36, 14, 40
    plot_h = 186
    height = top_pad + plot_h + bottom
    plot_w = WIDTH - left - right
    step = plot_w / max(len(x_labels) - 1, 1)
    # Every label where they fit side by side; else every second, third… (always the last).
    widest = max((_text_width(label, 11) for label in x_labels), default=0)
    every = max(1, math.ceil((widest + 8) / step)) if len(x_labels) > 1 else 1
    parts = []
    for k in range(5):  # horizontal grid with its scale
        value = top * k / 4
        y = top_pad + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_number(round(value))}'
                     f'</text>')
    last = len(x_labels) - 1
    for i, label in enumerate(x_labels):
        shown = (i % every == 0 and last - i >= every) or i == last
        if not shown:
            continue
        x = left + i * step
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle" font-size="11">'
                     f'{escape(label)}</text>')
    for j, (name, vs) in enumerate(series):
        colour = PALETTE[j % len(PALETTE)]
        points = [(left + i * step, top_pad + plot_h - plot_h * (v or 0) / top) for i, v in enumerate(vs)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{path}"/>')
        for (x, y), v, label in zip(points, vs, x_labels, strict=True):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                         f'<title>{escape(name)} · {escape(label)}: {_number(v)}</title></circle>')
    return _svg(WIDTH, height, title, desc, "".join(parts), legend=[name for name, _ in series])


def _text_width(text, size):
    """About how wide ``text`` is drawn at font ``size`` (a sans-serif's average letter)."""
    return len(str(text)) * size * 0.58
