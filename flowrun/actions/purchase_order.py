"""purchase_order: raise a purchase order with a supplier for low-stock items.

The PO is rendered twice from the same lines: a CSV for the supplier's system and an HTML
page for people (Jinja2; a project may give its own `template`). It goes to the supplier
as an email with both attached (through channels.email), or as JSON to an HTTP endpoint.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from flowrun.actions.base import TEMPLATED, ActionType, DeliveryContext, PermanentError, obj, result, stable_token
from flowrun.actions.provider import call

ITEM = obj(["sku", "quantity"], sku=TEMPLATED, quantity={"type": ["integer", "string"]}, title=TEMPLATED)
HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Purchase order {{ number }}</title></head>
<body>
<h1>Purchase order {{ number }}</h1>
<p>To: {{ supplier }}</p>
<table>
<tr><th>SKU</th><th>Item</th><th>Quantity</th></tr>
{% for item in items %}<tr><td>{{ item.sku }}</td><td>{{ item.title or item.sku }}</td><td>{{ item.quantity }}</td></tr>
{% endfor %}</table>
{% if note %}<p>{{ note }}</p>{% endif %}
</body></html>
"""


class PurchaseOrder(ActionType):
    name = "purchase_order"
    summary = "render a purchase order (CSV + HTML) and send it to the supplier by email or HTTP"
    params_schema = obj(
        ["supplier", "items"],
        supplier=TEMPLATED,
        send_to=TEMPLATED,
        items={"type": "array", "items": ITEM, "minItems": 1},
        note=TEMPLATED,
    )
    result_schema = result(number={"type": "string"}, lines={"type": "integer"})
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "via": {"enum": ["email", "http"], "description": "default email (to the step's send_to)"},
            "url": {"type": "string", "description": "for via: http, the endpoint that receives the PO as JSON"},
        },
    }

    def unconfigured(self, channels: Mapping[str, Any], sources: Mapping[str, Any]) -> str | None:
        via = (channels.get("purchase_order") or {}).get("via", "email")
        if via == "email" and not channels.get("email"):
            return "channels.email (purchase orders go out as email)"
        if via == "http" and not (channels.get("purchase_order") or {}).get("url"):
            return "channels.purchase_order.url"
        return None

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        for item in params["items"]:
            item["quantity"] = int(item["quantity"])
        return params

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"number": number(key), "lines": len(params["items"])}

    async def deliver(self, params: Mapping[str, Any], key: str, ctx: DeliveryContext) -> dict[str, Any]:
        po = number(key)
        if ctx.setting("via", "email") == "http":
            body = {"number": po, **{k: params[k] for k in ("supplier", "items", "note") if k in params}}
            await call(ctx, "POST", ctx.require("url")[0], provider="purchase order endpoint", json=body)
            return {"number": po, "lines": len(params["items"])}
        if not params.get("send_to"):
            raise PermanentError("purchase_order by email needs send_to (the supplier's address)")
        from flowrun.actions.email import send_email

        mail = {
            "to": params["send_to"],
            "subject": f"Purchase order {po}",
            "text": f"Purchase order {po} for {params['supplier']}: {len(params['items'])} lines attached."
            + (f"\n\n{params['note']}" if params.get("note") else ""),
            "category": "transactional",
        }
        email_ctx = DeliveryContext(ctx.http, ctx.channels.get("email", {}), ctx.log, ctx.timeout_s, ctx.sources)
        attachments = [
            (f"{po}.csv", render_csv(params).encode(), "text/csv"),
            (f"{po}.html", render_html(params, po).encode(), "text/html"),
        ]
        await send_email(mail, key, email_ctx, attachments)
        return {"number": po, "lines": len(params["items"])}


def number(key: str) -> str:
    return f"PO-{stable_token(key, 6)}"


def render_csv(params: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["sku", "title", "quantity"])
    for item in params["items"]:
        writer.writerow([item["sku"], item.get("title") or item["sku"], item["quantity"]])
    return out.getvalue()


def render_html(params: Mapping[str, Any], po: str) -> str:
    env = SandboxedEnvironment(autoescape=True)
    return env.from_string(HTML).render(number=po, **params)
