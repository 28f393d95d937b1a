"""The project file's JSON Schema (published as schemas/config.schema.json) and the shapes
other modules reuse in their own fragments: a secret reference, a duration."""

from __future__ import annotations

import functools
from typing import Any

from flowrun.attribution.windows import schema as attribution_schema
from flowrun.delivery.ratelimit import DEFAULTS as RATE_DEFAULTS
from flowrun.durations import DURATION_PATTERN
from flowrun.guardrails import CHANNELS, guardrail_schemas
from flowrun.retention import SCHEMA as RETENTION_SCHEMA

SECRET: dict[str, Any] = {
    "description": "a secret by reference: {env: NAME} or {credential: NAME}",
    "oneOf": [
        {
            "type": "object",
            "required": ["env"],
            "properties": {"env": {"type": "string"}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["credential"],
            "properties": {"credential": {"type": "string"}},
            "additionalProperties": False,
        },
    ],
}
DURATION = {"type": "string", "pattern": DURATION_PATTERN}
QUIET_HOURS, CAP = guardrail_schemas(DURATION)


def _closed(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "additionalProperties": False}


@functools.cache
def config_schema() -> dict[str, Any]:
    """The project file's schema; each action module contributes its `channels:` settings."""
    from flowrun.actions import REGISTRY
    from flowrun.engagement import config_schemas

    schema = dict(_CONFIG_SCHEMA)
    sources = schema["properties"]["sources"]
    schema["properties"] = {
        **schema["properties"],
        "sources": {**sources, "properties": {**sources["properties"], **config_schemas()}},
        "channels": {
            **_closed(**{a.name: a.config_schema for a in REGISTRY.values()}),
            "description": "per-action settings; secrets by reference",
        },
    }
    return schema


_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://flowrun.dev/schemas/config.schema.json",
    "title": "flowrun project configuration",
    **_closed(
        database={"type": "string", "description": "SQLAlchemy URL; default sqlite:///flowrun-state/flowrun.db"},
        listen=_closed(host={"type": "string"}, port={"type": "integer", "minimum": 1, "maximum": 65535}),
        flows={"type": "string", "description": "folder of flow files, relative to this file"},
        timezone={"type": "string"},
        locale={
            "type": "string",
            "description": "how `money` writes amounts (en_US, de_DE, ...); a flow may set its own",
        },
        sources=_closed(
            shopify=_closed(
                shop={"type": "string"},
                webhook_secret=SECRET,
                previous_webhook_secret=SECRET,
                api_token=SECRET,
                api_url={"type": "string"},
                api_version={"type": "string"},
                poll=_closed(orders=DURATION, checkouts=DURATION, inventory=DURATION),
                lookups={
                    "type": "array",
                    "items": {"enum": ["inventory_item", "order", "variants", "collections"]},
                    "description": "what to look up in the Admin API for webhooks that lack it (default:"
                    " inventory_item, order); variants (backorders) costs a call per order",
                },
                location_ids={
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "locations the inventory poller reads (Shopify requires them)",
                },
            ),
            woocommerce=_closed(
                url={"type": "string"},
                webhook_secret=SECRET,
                consumer_key=SECRET,
                consumer_secret=SECRET,
                poll=_closed(orders=DURATION),
            ),
            custom=_closed(
                secret=SECRET,
                signature_header={"type": "string"},
                encoding={"enum": ["hex", "base64"]},
                timestamp_header={"type": "string"},
                tolerance=DURATION,
            ),
        ),
        limits=_closed(
            max_body_bytes={"type": "integer", "minimum": 1024},
            max_connections={
                "type": "integer",
                "minimum": 1,
                "description": "open connections to the webhook port (default 1000); a new one evicts the oldest "
                "still waiting for its request",
            },
            request_timeout={
                **DURATION,
                "description": "a connection's request must arrive within this (default 10s), else it is closed",
            },
            stall_after={
                **DURATION,
                "description": "/healthz answers 503 when webhooks wait this long (default 10s) for the inbox "
                "writer, or the database takes no write within it",
            },
            rate_limits={
                "type": "object",
                "propertyNames": {"enum": list(RATE_DEFAULTS)},
                "additionalProperties": {
                    "oneOf": [
                        {"const": False, "description": "no limit"},
                        {
                            **_closed(
                                per_second={"type": "number", "exclusiveMinimum": 0},
                                burst={"type": "integer", "minimum": 1},
                            ),
                            "required": ["per_second"],
                        },
                    ]
                },
                "description": "sends a second per provider account (flowrun.delivery.ratelimit has the "
                "documented defaults), e.g. shopify: {per_second: 4, burst: 40}",
            },
            dispatch_concurrency={"type": "integer", "minimum": 1},
            action_attempts={"type": "integer", "minimum": 1},
            shutdown_grace=DURATION,
        ),
        guardrails=_closed(
            quiet_hours=QUIET_HOURS,
            caps={
                "type": "object",
                "propertyNames": {"enum": CHANNELS},
                "additionalProperties": CAP,
                "description": "marketing messages per customer and channel, all flows: email: {max: 1, per: 16h}",
            },
            suppression_list={"type": "string", "description": "file of emails/phones (one a line) never marketed to"},
        ),
        attribution=attribution_schema(DURATION),
        cluster=_closed(
            lease={
                **DURATION,
                "description": "how long a dead instance's partitions and claimed sends stay its own (default 10s)",
            },
        ),
        retention=RETENTION_SCHEMA,
        derive=_closed(
            checkout_idle=DURATION,
            low_stock_threshold={"type": "integer", "minimum": 0},
            inactive_after={
                "type": "array",
                "items": DURATION,
                "description": "customer.inactive fires once per threshold after a customer's last order",
            },
        ),
    ),
}
