"""The SVG charts, as strings: well-formed, escaped, accessible, and drawn to scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from joins.charts import (
    Bar,
    Series,
    bar_chart,
    bucket_label,
    column_chart,
    nice_ticks,
    short_count,
    time_ticks,
    timeline_chart,
    truncate,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(\"x\")</script> & 'quotes'"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def bar_parts(root: ET.Element, key: str) -> list[ET.Element]:
    """The drawn parts of a series, without its legend swatch."""
    bars = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "chart__bars")
    return [r for r in bars.iter(f"{SVG}rect") if f"chart__part--{key}" in r.get("class", "")]


def titles(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}title")]


@pytest.mark.parametrize(
    ("maximum", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (4, [0, 1, 2, 3, 4]),
        (7, [0, 2, 4, 6, 8]),
        (10, [0, 2, 4, 6, 8, 10]),
        (241, [0, 50, 100, 150, 200, 250]),
        (1730, [0, 500, 1000, 1500, 2000]),
        (99_999, [0, 20_000, 40_000, 60_000, 80_000, 100_000]),
    ],
)
def test_axis_ticks_are_round_steps_from_zero_that_cover_the_maximum(maximum, ticks):
    assert nice_ticks(maximum) == ticks


def test_counts_are_shortened_for_narrow_axes():
    assert [short_count(n) for n in (0, 950, 1000, 1200, 35_000, 1_500_000)] == [
        "0",
        "950",
        "1k",
        "1.2k",
        "35k",
        "1.5M",
    ]


def test_a_column_chart_is_an_accessible_image_with_a_legend_and_stacked_columns():
    svg = column_chart(
        title="Attempts per hour",
        labels=["09:00", "10:00", "11:00"],
        series=[
            Series("allowed", "Allowed", [10, 0, 40]),
            Series("denied", "Denied", [5, 0, 0]),
        ],
        y_title="Attempts per hour",
        x_title="Time (UTC)",
    )
    root = parse(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Attempts per hour. Totals: Allowed 50, Denied 5."
    assert root.get("viewBox") == "0 0 960 300"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Allowed" in texts and "Denied" in texts  # legend
    assert "Attempts per hour" in texts and "Time (UTC)" in texts  # axis titles
    assert [t for t in texts if t and ":" in t] == ["09:00", "10:00", "11:00"]
    assert titles(root) == [
        "09:00: Allowed 10, Denied 5",
        "10:00: Allowed 0, Denied 0",
        "11:00: Allowed 40, Denied 0",
    ]
    # Zero values draw nothing, but every column keeps its hover target.
    assert len(bar_parts(root, "allowed")) == 2 and len(bar_parts(root, "denied")) == 1
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "chart__hit"]) == 3


def test_columns_are_drawn_to_scale_and_stacked_on_each_other():
    root = parse(
        column_chart(
            title="t",
            labels=["a", "b"],
            series=[Series("allowed", "Allowed", [40, 10]), Series("denied", "Denied", [10, 0])],
        )
    )
    (big, small), (stacked,) = bar_parts(root, "allowed"), bar_parts(root, "denied")
    # The axis goes to 50 (ticks 0..50 by 10): 40 + 10 reaches its top, 10 is a fifth of it.
    assert float(big.get("height")) == pytest.approx(4 * float(small.get("height")))
    assert float(stacked.get("y")) + float(stacked.get("height")) == pytest.approx(
        float(big.get("y"))
    )
    grid_top = min(
        float(line.get("y1"))
        for line in root.iter(f"{SVG}line")
        if line.get("class") == "chart__gridline"
    )
    assert float(stacked.get("y")) == pytest.approx(grid_top)


def test_every_text_is_escaped_and_no_style_attribute_is_written():
    svg = column_chart(
        title=HOSTILE,
        labels=[HOSTILE],
        series=[Series('x"onload="alert(1)', HOSTILE, [3])],
        ticks={0: HOSTILE},
    )
    assert "<script>" not in svg and 'onload="' not in svg
    root = parse(svg)  # still well-formed XML
    assert HOSTILE in root.get("aria-label")
    assert HOSTILE in [t.text for t in root.iter(f"{SVG}text")]
    assert titles(root) == [f"{HOSTILE}: {HOSTILE} 3"]
    assert "style=" not in svg and "<style" not in svg


def test_series_must_match_the_labels():
    with pytest.raises(ValueError, match="one value per label"):
        column_chart(title="t", labels=["a", "b"], series=[Series("allowed", "Allowed", [1])])


def test_an_empty_column_chart_still_draws_its_axis():
    root = parse(
        column_chart(title="t", labels=["a", "b"], series=[Series("allowed", "Allowed", [0, 0])])
    )
    assert bar_parts(root, "allowed") == []
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart__tick"][:2] == [
        "0",
        "1",
    ]


def test_a_bar_chart_labels_totals_and_stacks_its_bars():
    svg = bar_chart(
        title="Top tokens",
        bars=[
            Bar("fleet-web", [("allowed", 90), ("denied", 9), ("error", 1)]),
            Bar("fleet-db", [("allowed", 50), ("denied", 0), ("error", 0)]),
        ],
        legend=[("allowed", "Allowed"), ("denied", "Denied"), ("error", "Error")],
    )
    root = parse(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Top tokens: fleet-web 100; fleet-db 50."
    values = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart__value"]
    assert values == ["100", "50"]
    assert titles(root) == [
        "fleet-web: 100 — allowed 90, denied 9, error 1",
        "fleet-db: 50 — allowed 50",
    ]
    web_allowed, db_allowed = bar_parts(root, "allowed")
    assert float(web_allowed.get("width")) == pytest.approx(
        float(db_allowed.get("width")) * 90 / 50
    )
    denied = bar_parts(root, "denied")[0]
    assert float(denied.get("x")) == pytest.approx(
        float(web_allowed.get("x")) + float(web_allowed.get("width"))
    )


def test_a_long_bar_label_is_cut_but_its_tooltip_is_whole():
    name = "eks-nodes-prod-eu-west-1-a-very-long-token-name"
    root = parse(bar_chart(title="t", bars=[Bar(name, [("denied", 3)], detail="code_x")]))
    label = next(t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart__label")
    assert label == truncate(name, 26) and label.endswith("…") and len(label) == 26
    assert titles(root) == [f"{name} (code_x): 3"]


def test_a_bar_chart_escapes_its_labels():
    svg = bar_chart(
        title=HOSTILE, bars=[Bar(HOSTILE, [("denied", 1)], detail=HOSTILE)], label_chars=80
    )
    assert "<script>" not in svg
    root = parse(svg)
    assert HOSTILE in [t.text for t in root.iter(f"{SVG}text")]


def test_time_buckets_are_named_in_utc():
    start = datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert bucket_label(start, timedelta(hours=1)) == "2026-11-20 09:00 to 10:00 UTC"
    assert bucket_label(start.replace(hour=18), timedelta(hours=6)) == (
        "2026-11-20 18:00 to 00:00 UTC"
    )
    assert bucket_label(start.replace(hour=0), timedelta(days=1)) == "2026-11-20 (UTC)"


def test_hourly_ticks_name_hours_and_midnight_by_its_date():
    starts = [datetime(2026, 11, 19, 13, tzinfo=UTC) + timedelta(hours=i) for i in range(24)]
    ticks = time_ticks(starts, timedelta(hours=1))
    assert ticks[starts.index(datetime(2026, 11, 20, 0, tzinfo=UTC))] == "Nov 20"
    assert ticks[1] == "14:00" and 0 not in ticks  # every second hour
    assert len(ticks) == 12


def test_daily_ticks_are_thinned_and_always_name_the_newest_day():
    starts = [datetime(2026, 10, 22, tzinfo=UTC) + timedelta(days=i) for i in range(30)]
    ticks = time_ticks(starts, timedelta(days=1))
    assert len(ticks) <= 12 and ticks[29] == "Nov 20"


def test_a_timeline_chart_has_one_column_per_bucket_with_its_time_in_the_tooltip():
    starts = [datetime(2026, 11, 20, h, tzinfo=UTC) for h in (0, 6, 12, 18)]
    root = parse(
        timeline_chart(
            title="Attempts",
            starts=starts,
            step=timedelta(hours=6),
            series=[Series("allowed", "Allowed", [1, 2, 3, 4])],
        )
    )
    assert titles(root)[0] == "2026-11-20 00:00 to 06:00 UTC: Allowed 1"
    assert "Nov 20" in [t.text for t in root.iter(f"{SVG}text")]
    assert "Time (UTC)" in [t.text for t in root.iter(f"{SVG}text")]
