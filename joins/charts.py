"""Bar charts as SVG markup, drawn on the server: no script, no library, nothing from a CDN.

Pure functions of plain values (no Django import), so that a chart can be tested as a string.
Every text that reaches the markup is escaped here; callers pass raw labels. Colours come from
the stylesheet through `chart__part--<key>` classes (so dark mode applies), with a `fill`
fallback for a chart seen outside the console.

Each chart is one `<svg role="img">` whose `aria-label` says what it shows in words; every bar
carries a `<title>`, which browsers show as a tooltip. Links cannot live inside an image role,
so pages that want the numbers to be clickable add a table next to the chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

#: Fallback fills of the known series keys; the stylesheet overrides them.
FILLS = {
    "allowed": "#17794a",
    "denied": "#b42323",
    "error": "#c98a12",
}
DEFAULT_FILL = "#2454c8"
FONT_SIZE = 12
CHAR_WIDTH = 6.6  # average advance of a 12px system-ui character, for label room and truncation


@dataclass(frozen=True)
class Series:
    """One stacked layer of a column chart: `values[i]` belongs to column i."""

    key: str  # CSS modifier and fallback colour: "allowed"
    label: str  # legend text: "Allowed"
    values: Sequence[int]


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart; `parts` are (series key, value), drawn left to right."""

    label: str
    parts: Sequence[tuple[str, int]]
    detail: str = ""  # added to the tooltip, e.g. the error code behind a label

    @property
    def total(self) -> int:
        return sum(value for _, value in self.parts)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _num(value: float) -> str:
    """A coordinate without float noise: `12`, `12.5`."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def count(value: int) -> str:
    """`1,234`: counts in labels and tooltips."""
    return f"{value:,}"


def short_count(value: int) -> str:
    """`950`, `1.2k`, `35k`, `1.5M`: tick labels that stay narrow."""
    if value < 1000:
        return str(value)
    for size, suffix in ((1_000_000, "M"), (1000, "k")):
        if value >= size:
            scaled = value / size
            text = f"{scaled:.1f}" if scaled < 10 and value % size else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return str(value)  # pragma: no cover


def nice_ticks(maximum: int, most: int = 5) -> list[int]:
    """Axis ticks from 0 in steps of 1, 2 or 5 times a power of ten, covering `maximum`."""
    if maximum <= 0:
        return [0, 1]
    raw = maximum / most
    power = 10 ** max(0, math.floor(math.log10(raw))) if raw >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    top = math.ceil(maximum / step) * step
    return list(range(0, top + 1, step))


def truncate(text: str, chars: int) -> str:
    """At most `chars` characters; a cut label ends with an ellipsis (the tooltip has it all)."""
    return text if len(text) <= chars else text[: max(1, chars - 1)].rstrip() + "…"


def _fill(key: str) -> str:
    return FILLS.get(key, DEFAULT_FILL)


def _part(key: str, x: float, y: float, width: float, height: float) -> str:
    return (
        f'<rect class="chart__part chart__part--{_e(key)}" x="{_num(x)}" y="{_num(y)}" '
        f'width="{_num(width)}" height="{_num(height)}" fill="{_fill(key)}"/>'
    )


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = [f'<g class="chart__legend" transform="translate({_num(x)} {_num(y)})">']
    offset = 0.0
    for key, label in entries:
        out.append(_part(key, offset, -9, 10, 10))
        out.append(f'<text x="{_num(offset + 14)}" y="0">{_e(label)}</text>')
        offset += 14 + len(label) * CHAR_WIDTH + 18
    out.append("</g>")
    return out


def _svg(width: int, height: int, label: str, body: list[str], kind: str) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart--{kind}" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{_e(label)}" font-size="{FONT_SIZE}" '
            'font-family="system-ui, sans-serif">',
            *body,
            "</svg>",
        ]
    )


def column_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    ticks: Mapping[int, str] | None = None,
    y_title: str = "",
    x_title: str = "",
    summary: str = "",
    width: int = 960,
    height: int = 300,
) -> str:
    """Stacked columns, one per label, with a y axis from 0, x tick labels and a legend.

    `labels[i]` names column i in its tooltip; `ticks` maps column indexes to the short text
    written under them (by default every label). `summary` is the accessible description; by
    default the title and each series' total.
    """
    columns = len(labels)
    if any(len(s.values) != columns for s in series):
        raise ValueError("every series needs one value per label")
    ticks = dict(enumerate(labels)) if ticks is None else ticks
    totals = [sum(s.values[i] for s in series) for i in range(columns)]
    y_ticks = nice_ticks(max(totals, default=0))
    top = y_ticks[-1]
    # One format for the whole axis: "800" next to "1k" reads as a different unit.
    tick_text = short_count if top >= 10_000 else count

    left = 16 + max(len(tick_text(t)) for t in y_ticks) * CHAR_WIDTH + (18 if y_title else 0)
    right, head, foot = 12, 34, 30 + (18 if x_title else 0)
    plot_w, plot_h = width - left - right, height - head - foot
    slot = plot_w / max(columns, 1)
    gap = min(slot * 0.2, 6) if slot > 3 else 0
    bottom = head + plot_h

    body = _legend([(s.key, s.label) for s in series], left, 16)
    body.append('<g class="chart__grid">')
    for tick in y_ticks:
        y = bottom - plot_h * tick / top
        body.append(
            f'<line class="chart__gridline" x1="{_num(left)}" x2="{_num(width - right)}" '
            f'y1="{_num(y)}" y2="{_num(y)}" stroke="#d9dde3"/>'
        )
        body.append(
            f'<text class="chart__tick" x="{_num(left - 6)}" y="{_num(y + 4)}" '
            f'text-anchor="end">{tick_text(tick)}</text>'
        )
    body.append("</g>")
    if y_title:
        middle = head + plot_h / 2
        body.append(
            f'<text class="chart__axis-title" x="12" y="{_num(middle)}" text-anchor="middle" '
            f'transform="rotate(-90 12 {_num(middle)})">{_e(y_title)}</text>'
        )

    body.append('<g class="chart__bars">')
    for i, label in enumerate(labels):
        x = left + i * slot + gap / 2
        parts = [f"{s.label} {count(s.values[i])}" for s in series]
        body.append(f'<g class="chart__column"><title>{_e(label)}: {_e(", ".join(parts))}</title>')
        # A transparent full-height target, so that an empty column still has its tooltip.
        body.append(
            f'<rect class="chart__hit" x="{_num(left + i * slot)}" y="{head}" '
            f'width="{_num(slot)}" height="{_num(plot_h)}" fill="transparent"/>'
        )
        y = float(bottom)
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            body.append(_part(s.key, x, y, slot - gap, h))
        body.append("</g>")
    body.append("</g>")

    body.append(
        f'<line class="chart__axis" x1="{_num(left)}" x2="{_num(width - right)}" '
        f'y1="{_num(bottom)}" y2="{_num(bottom)}" stroke="#5b6575"/>'
    )
    for i, text in sorted(ticks.items()):
        if not 0 <= i < columns:
            continue
        x = left + (i + 0.5) * slot
        body.append(
            f'<line class="chart__axis" x1="{_num(x)}" x2="{_num(x)}" y1="{_num(bottom)}" '
            f'y2="{_num(bottom + 4)}" stroke="#5b6575"/>'
        )
        body.append(
            f'<text class="chart__tick" x="{_num(x)}" y="{_num(bottom + 18)}" '
            f'text-anchor="middle">{_e(text)}</text>'
        )
    if x_title:
        body.append(
            f'<text class="chart__axis-title" x="{_num(left + plot_w / 2)}" '
            f'y="{height - 6}" text-anchor="middle">{_e(x_title)}</text>'
        )

    if not summary:
        totals_text = ", ".join(f"{s.label} {count(sum(s.values))}" for s in series)
        summary = f"{title}. Totals: {totals_text}."
    return _svg(width, height, summary, body, "columns")


def bar_chart(
    *,
    title: str,
    bars: Sequence[Bar],
    legend: Sequence[tuple[str, str]] = (),
    summary: str = "",
    width: int = 480,
    label_chars: int = 26,
) -> str:
    """Horizontal bars, largest first as given, each labelled on the left and totalled on the
    right; a bar of several parts is stacked. `legend` is (key, label) pairs, shown when set.
    """
    row_h, bar_h = 28, 18
    head = 30 if legend else 8
    label_w = label_chars * CHAR_WIDTH + 8
    longest = max((len(count(b.total)) for b in bars), default=1)
    value_w = longest * CHAR_WIDTH + 10
    plot_w = width - label_w - value_w - 4
    height = head + row_h * max(len(bars), 1) + 6
    top = max((b.total for b in bars), default=0) or 1

    body = _legend(legend, label_w, 16) if legend else []
    body.append('<g class="chart__bars">')
    for row, bar in enumerate(bars):
        y = head + row * row_h
        parts = ", ".join(f"{key} {count(value)}" for key, value in bar.parts if value)
        tooltip = f"{bar.label}{f' ({bar.detail})' if bar.detail else ''}: {count(bar.total)}"
        if len(bar.parts) > 1 and parts:
            tooltip += f" — {parts}"
        body.append(f'<g class="chart__row"><title>{_e(tooltip)}</title>')
        body.append(
            f'<rect class="chart__hit" x="0" y="{y}" width="{width}" height="{row_h}" '
            'fill="transparent"/>'
        )
        body.append(
            f'<text class="chart__label" x="{_num(label_w - 8)}" y="{y + row_h / 2 + 4:g}" '
            f'text-anchor="end">{_e(truncate(bar.label, label_chars))}</text>'
        )
        x = label_w
        for key, value in bar.parts:
            if value <= 0:
                continue
            w = max(plot_w * value / top, 1)
            body.append(_part(key, x, y + (row_h - bar_h) / 2, w, bar_h))
            x += w
        body.append(
            f'<text class="chart__value" x="{_num(x + 6)}" y="{y + row_h / 2 + 4:g}">'
            f"{count(bar.total)}</text>"
        )
        body.append("</g>")
    body.append("</g>")
    body.append(
        f'<line class="chart__axis" x1="{_num(label_w)}" x2="{_num(label_w)}" y1="{head - 2}" '
        f'y2="{height - 4}" stroke="#5b6575"/>'
    )
    if not summary:
        listed = "; ".join(f"{b.label} {count(b.total)}" for b in bars) or "none"
        summary = f"{title}: {listed}."
    return _svg(width, height, summary, body, "bars")


# --- Time axes ------------------------------------------------------------------------------


def bucket_label(start: datetime, step: timedelta) -> str:
    """The tooltip name of a time bucket: `2026-11-20 09:00 to 10:00 UTC`, `2026-11-20 (UTC)`."""
    if step >= timedelta(days=1) and step % timedelta(days=1) == timedelta(0):
        if step == timedelta(days=1):
            return f"{start:%Y-%m-%d} (UTC)"
        return f"{start:%Y-%m-%d} to {start + step - timedelta(days=1):%Y-%m-%d} (UTC)"
    end = start + step
    same_day = end.date() == start.date() or end.time() == datetime.min.time()
    day = "" if same_day else f"{end:%m-%d} "
    return f"{start:%Y-%m-%d %H:%M} to {day}{end:%H:%M} UTC"


def time_ticks(starts: Sequence[datetime], step: timedelta, most: int = 12) -> dict[int, str]:
    """Which columns of a time axis get a label, and the label.

    Hourly columns show the hour every few hours and the date at midnight; coarser columns
    show the date at midnight, thinned to at most `most` labels, counted back from the newest
    so that the latest column is always named.
    """
    if not starts:
        return {}
    if step <= timedelta(hours=1):
        every = max(1, math.ceil(len(starts) / most))
        hours = max(1, round(every * step / timedelta(hours=1)))
        return {
            i: (f"{s:%b} {s.day}" if s.hour == 0 else f"{s:%H:%M}")
            for i, s in enumerate(starts)
            if s.minute == 0 and s.hour % hours == 0
        }
    midnights = [i for i, s in enumerate(starts) if s.hour == 0 and s.minute == 0]
    every = max(1, math.ceil(len(midnights) / most))
    chosen = midnights[::-1][::every]
    return {i: f"{starts[i]:%b} {starts[i].day}" for i in sorted(chosen)}


def timeline_chart(
    *,
    title: str,
    starts: Sequence[datetime],
    step: timedelta,
    series: Sequence[Series],
    y_title: str = "",
    summary: str = "",
    width: int = 960,
    height: int = 300,
) -> str:
    """A stacked column chart over time buckets starting at `starts`, each `step` long (UTC)."""
    return column_chart(
        title=title,
        labels=[bucket_label(start, step) for start in starts],
        series=series,
        ticks=time_ticks(starts, step),
        y_title=y_title,
        x_title="Time (UTC)",
        summary=summary,
        width=width,
        height=height,
    )
