"""email: a message over SMTP or an email API, with text and HTML parts."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Mapping
from typing import Any

from flowrun.actions.base import (
    CATEGORY,
    TEMPLATED,
    ActionType,
    CompileContext,
    compile_tree,
    obj,
    result,
    stable_token,
)

_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"[ \t]+")


def html_to_text(html: str) -> str:
    text = re.sub(r"(?i)<li[^>]*>", "\n- ", html)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</tr>|</ul>|</ol>", "\n", text)
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", text)
    text = _TAGS.sub("", text)
    lines = [_SPACE.sub(" ", line).strip() for line in html_lib.unescape(text).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


class Email(ActionType):
    name = "email"
    summary = "send an email (SMTP or an email API); `template` is a Jinja2 file next to the flow"
    channel = "email"
    params_schema = obj(
        ["to", "subject"],
        to=TEMPLATED,
        subject=TEMPLATED,
        template={"type": "string", "description": "HTML or text template file, relative to the flow"},
        text={"type": "string", "description": "plain-text body (derived from the HTML when absent)"},
        html={"type": "string", "description": "inline HTML body"},
        from_={"type": "string"},
        reply_to=TEMPLATED,
        attachments={"type": "array", "items": {"type": "string"}},
        category=CATEGORY,
    )
    params_schema["properties"]["from"] = params_schema["properties"].pop("from_")
    result_schema = result(message_id={"type": "string"})

    def compile_params(self, raw: Any, ctx: CompileContext) -> Any:
        params = dict(raw)
        template_name = params.pop("template", None)
        html_source = params.pop("html", None)
        compiled: dict[str, Any] = compile_tree(params, ctx.path, ctx)
        if html_source is not None:
            compiled["html"] = ctx.template(html_source, (*ctx.path, "html"), html=True) or html_source
        if template_name is not None:
            compiled["template"] = ctx.template_file(template_name, (*ctx.path, "template")) or template_name
            compiled["template_file"] = template_name
        if not any(k in compiled for k in ("template", "text", "html")):
            ctx.report(ctx.path, "email needs a body", "add `template: file.html.j2`, `text:` or `html:`")
        return compiled

    def finish_params(self, params: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        if "template_file" in params:
            body, name = params.pop("template"), params.pop("template_file")
            params["html" if ".htm" in name else "text"] = body
            params["template"] = name
        if params.get("html") and not params.get("text"):
            params["text"] = html_to_text(params["html"])
        return super().finish_params(params, context)

    def simulate(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        return {"message_id": f"<{stable_token(key, 16).lower()}@dry-run.flowrun>"}
