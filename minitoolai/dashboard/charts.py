"""Charts drawn on the server as inline SVG.

Why hand-written SVG and not a vendored library (uPlot, Chart.js, Frappe were weighed for
issue 17): these are small stacked bar charts of at most 366 bars, and drawing them here
keeps what the browser shows exactly what the database summed (the same integers, no float
rounding in a script), works with scripts off, needs no change to the strict CSP (no inline
styles, no `style-src` exception that Chart.js/Frappe need for their injected styles), adds no
third-party code to keep patched, and stays accessible: each chart is a `role="img"` with a
summary in its name, every bar carries a tooltip, and the numbers are also given as a table.

Phones: one SVG drawn for wide screens and one drawn for a ~360 px wide screen (fewer date
labels, a narrower y-axis), the CSS shows the one that fits; both scale with their box
(viewBox), so nothing scrolls sideways and the y-axis and legend stay in view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from html import escape

from minitoolai.money import display_usd, format_usd

PALETTE = ("#4f6bed", "#e8833a", "#2aa876", "#d64550", "#8e5cd9", "#c9a227", "#1f9bcf",
           "#e36fb4", "#6b8e23", "#7f7f7f")
INK, GRID, FAINT = "#4f5566", "#d8dce6", "#5b6275"  # INK on white: 7.4:1

# what a chart can count, as the usage page's `metric` parameter names it
METRICS = {"cost": "Spend", "requests": "Requests", "tokens": "Tokens (in + out)"}


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    max_labels: int  # date labels under the bars, today's always among them
    font: int  # px in the viewBox: each layout is drawn near the width it is shown at
    css: str


WIDE = Layout(720, 250, 8, 11, "chart chart-wide")  # shown 690-1030 px wide
NARROW = Layout(330, 230, 4, 12, "chart chart-narrow")  # shown ~300-690 px wide


@dataclass(frozen=True, slots=True)
class LegendItem:
    label: str
    color: str
    total: int  # nanodollars, requests or tokens, as the chart's metric


@dataclass(frozen=True, slots=True)
class Chart:
    metric: str
    title: str
    wide: str  # SVG markup
    narrow: str
    legend: list[LegendItem]
    total: int
    dates: list[date] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)  # per day, every series together

    @property
    def rows(self) -> list[tuple[date, int]]:
        """(day, total) newest first: the chart as a table, for screen readers and checks."""
        return list(zip(reversed(self.dates), reversed(self.totals), strict=True))


def nice_ceiling(value: int) -> int:
    """A round axis maximum at or above `value` whose half is a whole multiple of a power
    of ten (2, 4, 6, 8, 10 × 10^k), so the middle grid line has an exact, short label."""
    if value <= 0:
        return 2
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    step = 2 * magnitude
    return -(-value // step) * step


def axis_label(value: int, metric: str) -> str:
    if metric == "cost":
        return "$" + format_usd(value)  # round values (see nice_ceiling): short and exact
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def value_text(value: int, metric: str) -> str:
    if metric == "cost":
        return display_usd(value)
    return f"{value:,}" + (" request" + ("" if value == 1 else "s") if metric == "requests"
                           else " tokens")


def day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def stacked_bars(dates: list[date], series: dict[str, list[int]], *, title: str,
                 metric: str = "cost", max_series: int = 8) -> Chart:
    """A stacked bar chart per day (both layouts) and its legend (HTML, so it wraps on a
    narrow screen). Series beyond `max_series` are summed into "other"; series that are all
    zero are left out."""
    items = [(label, values) for label, values in series.items() if any(values)]
    if len(items) > max_series:
        head, tail = items[:max_series - 1], items[max_series - 1:]
        other = [sum(values[i] for _, values in tail) for i in range(len(dates))]
        items = head + [("other", other)]
    totals = [sum(values[i] for _, values in items) for i in range(len(dates))]
    legend = [LegendItem(label, PALETTE[n % len(PALETTE)], sum(values))
              for n, (label, values) in enumerate(items)]
    total = sum(totals)
    summary = title
    if dates:
        summary += (f", {day_label(dates[0])} to {day_label(dates[-1])}:"
                    f" {value_text(total, metric)} in total")
    wide, narrow = (_svg(layout, dates, items, totals, metric, summary)
                    for layout in (WIDE, NARROW))
    return Chart(metric, title, wide, narrow, legend, total, list(dates), totals)


def _svg(layout: Layout, dates: list[date], items: list[tuple[str, list[int]]],
         totals: list[int], metric: str, summary: str) -> str:
    width, height = layout.width, layout.height
    top = nice_ceiling(max(totals, default=0))
    ticks = [(fraction, axis_label(top * fraction // 2, metric)) for fraction in (0, 1, 2)]
    font = layout.font
    left = max(len(text) for _, text in ticks) * font * 0.62 + 10  # the widest y label
    right, above, below = 12, 12, font + 16
    plot_w, plot_h = width - left - right, height - above - below
    slot = plot_w / max(len(dates), 1)
    bar = max(slot * 0.72, 1.0)
    parts = [(f'<svg class="{layout.css}" viewBox="0 0 {width} {height}" role="img" '
              f'aria-label="{escape(summary)}" preserveAspectRatio="xMidYMid meet">'),
             f"<title>{escape(summary)}</title>"]
    for fraction, text in ticks:
        y = above + plot_h * (1 - fraction / 2)
        parts.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                     f'stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text class="y-label" x="{left - 6:.1f}" y="{y + 4:.1f}" '
                     f'text-anchor="end" font-size="{font}" fill="{INK}">{escape(text)}</text>')
    stacked = [0] * len(dates)
    for n, (label, values) in enumerate(items):
        color = PALETTE[n % len(PALETTE)]
        for i, value in enumerate(values):
            if value <= 0:
                continue
            h = plot_h * value / top
            y = above + plot_h * (1 - stacked[i] / top) - h
            x = left + slot * i + (slot - bar) / 2
            parts.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{bar:.2f}" '
                         f'height="{max(h, 0.5):.2f}" fill="{color}" '
                         f'data-day="{dates[i].isoformat()}" data-value="{value}">'
                         f"<title>{escape(day_label(dates[i]))} {escape(label)}: "
                         f"{escape(value_text(value, metric))}</title></rect>")
            stacked[i] += value
    # date labels counted back from the last day, so today's bar always has one
    step = -(-len(dates) // layout.max_labels) if dates else 1
    for i in range(len(dates) - 1, -1, -step):
        x = left + slot * i + slot / 2
        anchor = "middle"
        if x + 2 * font > width:  # keep the last label inside the picture
            x, anchor = width - 2, "end"
        parts.append(f'<text class="x-label" x="{x:.1f}" y="{height - 8}" '
                     f'text-anchor="{anchor}" font-size="{font}" fill="{INK}" '
                     f'data-day="{dates[i].isoformat()}">{escape(day_label(dates[i]))}</text>')
    if not any(totals):
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{above + plot_h / 2:.0f}" '
                     f'text-anchor="middle" font-size="14" fill="{FAINT}">'
                     f"Nothing in this period</text>")
    parts.append("</svg>")
    return "".join(parts)
