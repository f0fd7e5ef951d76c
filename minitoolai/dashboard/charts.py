"""Charts drawn on the server as inline SVG: no script, no build step, scaled by the
browser to any width (viewBox), so they stay readable on a phone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from html import escape

from minitoolai.money import format_usd

PALETTE = ("#4f6bed", "#e8833a", "#2aa876", "#d64550", "#8e5cd9", "#c9a227", "#1f9bcf",
           "#e36fb4", "#6b8e23", "#7f7f7f")
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 28


@dataclass(frozen=True, slots=True)
class LegendItem:
    label: str
    color: str
    total: str


def _nice_ceiling(value: int) -> int:
    """A round axis maximum at or above `value` (1, 2, 5 × a power of ten)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return max(step * magnitude, 2)  # even, so the middle line is a whole number
    return 10 * magnitude


def _money_label(nano: int) -> str:
    # axis values are round (1, 2, 5 x 10^k nanodollars) so the exact text stays short
    return "$" + format_usd(nano)


def stacked_bars(dates: list[date], series: dict[str, list[int]], *, title: str,
                 max_series: int = 8) -> tuple[str, list[LegendItem]]:
    """An SVG stacked bar chart of money per day, and its legend (rendered as HTML so it
    wraps on narrow screens). Series beyond `max_series` are summed into "other"."""
    items = list(series.items())
    if len(items) > max_series:
        head, tail = items[:max_series - 1], items[max_series - 1:]
        other = [sum(values[i] for _, values in tail) for i in range(len(dates))]
        items = head + [("other", other)]
    totals = [sum(values[i] for _, values in items) for i in range(len(dates))]
    top = _nice_ceiling(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(dates), 1)
    bar = max(slot * 0.72, 1.0)
    parts = [(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
              f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">'),
             f"<title>{escape(title)}</title>"]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                     f'stroke="#d8dce6" stroke-width="1"/>')
        if not any(totals):
            continue  # an empty chart has no scale worth printing
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#5b6275">{escape(_money_label(int(top * fraction)))}</text>')
    legend = []
    for n, (label, values) in enumerate(items):
        color = PALETTE[n % len(PALETTE)]
        legend.append(LegendItem(label, color, _money_label(sum(values))))
    stacked = [0] * len(dates)
    for n, (label, values) in enumerate(items):
        color = PALETTE[n % len(PALETTE)]
        for i, value in enumerate(values):
            if value <= 0:
                continue
            h = plot_h * value / top
            y = TOP + plot_h * (1 - stacked[i] / top) - h
            x = LEFT + slot * i + (slot - bar) / 2
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                         f'height="{max(h, 0.5):.1f}" fill="{color}">'
                         f"<title>{escape(dates[i].isoformat())} {escape(label)}: "
                         f"${escape(format_usd(value))}</title></rect>")
            stacked[i] += value
    step = max(1, len(dates) // 6)
    for i in range(0, len(dates), step):
        x = LEFT + slot * i + slot / 2
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11" '
                     f'fill="#5b6275">{dates[i]:%b %d}</text>')
    if not any(totals):
        parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
                     f'text-anchor="middle" font-size="14" fill="#8a90a2">'
                     f"No spend in this period yet</text>")
    parts.append("</svg>")
    return "".join(parts), legend
