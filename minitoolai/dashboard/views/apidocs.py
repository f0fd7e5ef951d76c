"""API docs: the seeds' examples (Python, PHP, curl) with this server's URL filled in, and
the price table read from the live catalog."""

from __future__ import annotations

from starlette.responses import Response

from minitoolai.catalog_status import unavailable_reason
from minitoolai.dashboard.web import Ctx, page
from minitoolai.money import format_usd


def price_rows(runtime) -> dict[str, list[dict]]:
    """The catalog by kind, prices as the seeds quote them (per 1M tokens, per image, per 1M
    characters), with whether this server can serve each model now, and why not."""
    rows: dict[str, list[dict]] = {"chat": [], "image": [], "speech": []}
    for model in runtime.catalog:
        why_not = unavailable_reason(runtime, model)
        entry = {"id": model.id, "provider": model.provider, "available": why_not is None,
                 "why_not": why_not}
        if model.kind == "chat":
            entry["input"] = "$" + format_usd(model.input_nano * 1_000_000)
            entry["output"] = "$" + format_usd(model.output_nano * 1_000_000)
            entry["vision"] = model.vision
            entry["reasoning"] = model.reasoning is not None
        elif model.kind == "image":
            entry["price"] = "$" + format_usd(model.image_nano)
        else:
            entry["price"] = "$" + format_usd(model.input_nano * 1_000_000)
        rows[model.kind].append(entry)
    return rows


def example_models(rows: dict[str, list[dict]]) -> tuple[str, str]:
    """Models the examples use: an available one when there is one, else the seeds' own."""
    chat = next((r["id"] for r in rows["chat"] if r["available"]), "gpt-4o-mini")
    image = next((r["id"] for r in rows["image"] if r["available"]), "realvision")
    return chat, image


async def docs(ctx: Ctx) -> Response:
    rows = price_rows(ctx.runtime)
    chat_model, image_model = example_models(rows)
    return ctx.render("docs.html", prices=rows, chat_model=chat_model, image_model=image_model,
                      speech_models=[r["id"] for r in rows["speech"]])


ROUTES = [("/docs", page(docs, login=False), ["GET"])]
