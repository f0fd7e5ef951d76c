"""What a person sees in the browser tests: computed colours (an error is red, a
confirmation green) and no sideways scrolling."""

from __future__ import annotations

import re


def rgb(page, selector: str, prop: str = "color") -> tuple[int, ...]:
    """The computed colour (red, green, blue) of the first element matching `selector`."""
    value = page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")
    return tuple(int(n) for n in re.findall(r"\d+", value)[:3])


def no_sideways_scroll(page) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} overflows sideways by {overflow}px"
