"""Engagement webhooks of the email and SMS providers flowrun sends through: one module per
provider verifies a request as the provider documents it, splits it into its events (a
SendGrid body holds many), and normalises each into a canonical `message.*` event.

The webhook port stores each verified event as an inbox row (source = the provider, topic =
the provider's name for the event kind, delivery id = a key that is the same on every retry
of that event); the worker normalises it like any delivery (`flowrun/events/normalise.py`).
Events of kinds flowrun does not turn into `message.*` (SendGrid's `processed`, Twilio's
`sent`...) are kept too, and set aside as nothing reads them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from types import ModuleType
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.types import Scope

from flowrun.engagement import mailgun, postmark, sendgrid, twilio
from flowrun.engagement.base import Delivery
from flowrun.events import Event

PROVIDERS: dict[str, ModuleType] = {m.NAME: m for m in (postmark, sendgrid, mailgun, twilio)}


class Verifier(Protocol):
    def deliveries(
        self, settings: Mapping[str, Any], headers: Mapping[str, str], url: str, body: bytes, now: datetime
    ) -> list[Delivery]: ...


class Intake:
    """The port's side: one verifier per provider (Mailgun's remembers the tokens it saw)."""

    def __init__(self) -> None:
        self.verifiers: dict[str, Verifier] = {name: module.Verifier() for name, module in PROVIDERS.items()}

    def __contains__(self, source: str) -> bool:
        return source in self.verifiers

    async def rows(
        self, source: str, settings: Mapping[str, Any], scope: Scope, body: bytes, now: datetime
    ) -> list[dict[str, Any]]:
        """The inbox rows of a verified request; raises WebhookRefused (401 forged or unsigned,
        400 a body of the wrong shape) before anything is stored. A batch (SendGrid: up to
        768 KB, a quarter of a second of parsing) is read off the event loop, which keeps
        answering other webhooks meanwhile; a single event is read right here."""
        if PROVIDERS[source].BATCHED:
            return await asyncio.to_thread(self._rows, source, settings, scope, body, now)
        return self._rows(source, settings, scope, body, now)

    def _rows(
        self, source: str, settings: Mapping[str, Any], scope: Scope, body: bytes, now: datetime
    ) -> list[dict[str, Any]]:
        headers = Headers(scope=scope)
        found = self.verifiers[source].deliveries(settings, headers, request_url(scope, headers, settings), body, now)
        return [
            {
                "source": source,
                "topic": d.topic,
                "body": d.body,
                "delivery_id": d.delivery_id,
                "triggered_at": d.triggered_at,
            }
            for d in found
        ]


def request_url(scope: Scope, headers: Headers, settings: Mapping[str, Any]) -> str:
    """The URL the provider called: `webhook_url` when configured (a proxy in front), else
    as this request arrived; with the request's query string either way."""
    query = scope.get("query_string", b"").decode("latin-1")
    base = settings.get("webhook_url")
    if not base:
        host = headers.get("host")
        if not host:
            server = scope.get("server") or ("localhost", None)
            host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        base = f"{scope.get('scheme', 'http')}://{host}{path}"
    return f"{base}?{query}" if query else str(base)


def normalise(source: str, body: Any, received_at: datetime | None) -> list[Event]:
    """Raises ValueError for a body of the wrong shape."""
    events: list[Event] = PROVIDERS[source].normalise(body, received_at)
    return events


def topic_types(source: str, topic: str | None) -> frozenset[str]:
    """Known from the topic alone: a provider's event kind names its canonical type."""
    types: Mapping[str, frozenset[str]] = PROVIDERS[source].TOPIC_TYPES
    return types.get(topic or "", frozenset())


def known_topics() -> dict[str, list[str]]:
    return {name: list(module.TOPIC_TYPES) for name, module in PROVIDERS.items()}


def config_schemas() -> dict[str, Any]:
    """Each provider's settings under `sources:` in the project file."""
    return {name: module.config_schema() for name, module in PROVIDERS.items()}


def config_problems(sources: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str, str]]:
    """What the schema cannot say: a SendGrid public key written in the file must load."""
    key = (sources.get("sendgrid") or {}).get("public_key")
    if isinstance(key, str):
        problem = sendgrid.key_problem(key)
        if problem:
            return [
                (
                    ("sources", "sendgrid", "public_key"),
                    f"the SendGrid public key cannot be read: {problem}",
                    "paste the verification key from SendGrid's Event Webhook settings (base64)",
                )
            ]
    return []
