"""The project file (`flowrun.yaml`): database, listen address, sources, channels, limits.

Secrets are never written in the file: a secret is `{env: NAME}` or `{credential: NAME}`
(a file in systemd's `$CREDENTIALS_DIRECTORY`), and its value never appears in a repr,
a log line or an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from flowrun.attribution.windows import Attribution
from flowrun.attribution.windows import load as load_attribution
from flowrun.config_schema import config_schema
from flowrun.delivery.ratelimit import DEFAULTS as RATE_DEFAULTS
from flowrun.delivery.ratelimit import Rate, rates_from
from flowrun.durations import parse_duration
from flowrun.errors import ConfigError
from flowrun.flow.diagnose import explain
from flowrun.guardrails import Guardrails, load_guardrails
from flowrun.retention import Retention, load_retention
from flowrun.retention import problems as retention_problems
from flowrun.runtime.settings import INACTIVE_AFTER, Settings
from flowrun.segments.loader import segments_for
from flowrun.yamlsource import read_document


class Secret:
    """A value that never prints itself."""

    def __init__(self, value: str, name: str) -> None:
        self._value, self.name = value, name

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name}, ****)"

    __str__ = __repr__


@dataclass(frozen=True)
class Config:
    file: Path
    database: str
    host: str = "127.0.0.1"
    port: int = 8787
    flows: Path = Path("flows")
    timezone: str = "UTC"
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, Any] = field(default_factory=dict)
    max_body_bytes: int = 1024 * 1024
    max_connections: int = 1000
    request_timeout: timedelta = timedelta(seconds=10)
    stall_after: timedelta = timedelta(seconds=10)
    rate_limits: dict[str, Rate | None] = field(default_factory=lambda: dict(RATE_DEFAULTS))
    dispatch_concurrency: int = 32
    action_attempts: int = 5
    shutdown_grace: timedelta = timedelta(seconds=20)
    checkout_idle: timedelta = timedelta(hours=1)
    low_stock_threshold: int = 5
    inactive_after: tuple[timedelta, ...] = INACTIVE_AFTER
    guardrails: Guardrails = field(default_factory=Guardrails)
    lease: timedelta = timedelta(seconds=10)
    locale: str = "en_US"
    retention: Retention = field(default_factory=Retention)
    attribution: Attribution = field(default_factory=Attribution)

    def settings(self) -> Settings:
        """What the runtime decides with."""
        return Settings(
            checkout_idle=self.checkout_idle,
            low_stock_threshold=self.low_stock_threshold,
            inactive_after=self.inactive_after,
            guardrails=self.guardrails,
            action_attempts=self.action_attempts,
            segments=segments_for([self.flows]),
            timezone=self.timezone,
            attribution=self.attribution,
        )

    def secrets(self) -> list[str]:
        """Every secret value, for redaction."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, Secret):
                found.append(value.reveal())
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)

        walk(self.sources)
        walk(self.channels)
        return [s for s in found if s]


def _resolve(value: Any, path: tuple[str | int, ...], problems: list[tuple[tuple[str | int, ...], str, str]]) -> Any:
    if isinstance(value, dict) and set(value) in ({"env"}, {"credential"}):
        if "env" in value:
            name = value["env"]
            if name not in os.environ:
                problems.append(
                    (path, f"environment variable {name} is not set", "export it, or use {credential: NAME}")
                )
                return Secret("", name)
            return Secret(os.environ[name], name)
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        name = value["credential"]
        if not directory or not (Path(directory) / name).is_file():
            problems.append(
                (
                    path,
                    f"systemd credential {name} is not available",
                    "add LoadCredential= to the unit, or use {env: NAME}",
                )
            )
            return Secret("", name)
        return Secret((Path(directory) / name).read_text().strip(), name)
    if isinstance(value, dict):
        return {k: _resolve(v, (*path, k), problems) for k, v in value.items()}
    return value


def _suppression_list(base: Path, name: str | None) -> frozenset[str]:
    """Customer keys from a file of emails and phone numbers; '#' starts a comment."""
    if not name:
        return frozenset()
    keys = set()
    for line in (base / name).read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            keys.add("email:" + entry.lower() if "@" in entry else "phone:" + entry.replace(" ", ""))
    return frozenset(keys)


def _semantic_problems(data: dict[str, Any], base: Path) -> list[tuple[tuple[str | int, ...], str, str]]:
    """What the schema cannot say: a poller needs credentials, Shopify's inventory a location,
    and a suppression list must exist."""
    problems: list[tuple[tuple[str | int, ...], str, str]] = []
    if isinstance(data.get("locale"), str):
        from flowrun.templating.money import locale_problem

        bad_locale = locale_problem(data["locale"])
        if bad_locale is not None:
            problems.append((("locale",), *bad_locale))
    listed = (data.get("guardrails") or {}).get("suppression_list")
    if listed and not (base / listed).is_file():
        problems.append(
            (
                ("guardrails", "suppression_list"),
                f"suppression list {listed!r} not found (looked for {base / listed})",
                "the path is relative to the project file",
            )
        )
    sources = data.get("sources") or {}
    shop = sources.get("shopify") or {}
    if shop.get("poll"):
        where = ("sources", "shopify", "poll")
        if "api_token" not in shop:
            problems.append((where, "polling Shopify needs api_token", "add api_token: {env: SHOPIFY_API_TOKEN}"))
        if "shop" not in shop and "api_url" not in shop:
            problems.append((where, "polling Shopify needs the shop", "add shop: your-shop.myshopify.com"))
        if "inventory" in shop["poll"] and not shop.get("location_ids"):
            problems.append(
                ((*where, "inventory"), "the inventory poller needs location_ids", "add location_ids: [<location id>]")
            )
    from flowrun.engagement import config_problems

    problems += config_problems(sources)
    problems += retention_problems(data.get("retention") or {}, _longest_cap(data))
    woo = sources.get("woocommerce") or {}
    if woo.get("poll") and not {"url", "consumer_key", "consumer_secret"} <= set(woo):
        problems.append(
            (
                ("sources", "woocommerce", "poll"),
                "polling WooCommerce needs url, consumer_key and consumer_secret",
                "add them under sources.woocommerce",
            )
        )
    return problems


def _longest_cap(data: dict[str, Any]) -> timedelta:
    caps = (data.get("guardrails") or {}).get("caps") or {}
    found = [timedelta(0)]
    for cap in caps.values() if isinstance(caps, dict) else ():
        try:
            found.append(parse_duration(cap["per"]))
        except (TypeError, KeyError, ValueError):  # the schema reports it
            continue
    return max(found)


def load_config(path: Path | None, *, secrets: bool = True) -> Config:
    """Read and check the project file; `secrets=False` for commands that only read state."""
    if path is None:
        return Config(file=Path("flowrun.yaml"), database="sqlite:///flowrun-state/flowrun.db")
    doc = read_document(path, "config", ConfigError)
    data = doc.data or {}
    errors = [
        doc.problem(p, m, h, key=k)
        for error in Draft202012Validator(config_schema()).iter_errors(data)
        for p, m, h, k in explain(error, config_schema())
    ]
    errors += [doc.problem(p, m, h) for p, m, h in _semantic_problems(data, path.parent)]
    if errors:
        raise ConfigError(errors)
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    sources = _resolve(data.get("sources", {}), ("sources",), found)
    channels = _resolve(data.get("channels", {}), ("channels",), found)
    if found and secrets:
        raise ConfigError([doc.problem(p, m, h) for p, m, h in found])
    base = path.parent
    database = data.get("database", "sqlite:///flowrun-state/flowrun.db")
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        database = "sqlite:///" + str((base / database.removeprefix("sqlite:///")).resolve())
    limits, derive, listen = data.get("limits", {}), data.get("derive", {}), data.get("listen", {})
    return Config(
        file=path,
        database=database,
        host=listen.get("host", "127.0.0.1"),
        port=listen.get("port", 8787),
        flows=(base / data.get("flows", "flows")).resolve(),
        timezone=data.get("timezone", "UTC"),
        locale=data.get("locale", "en_US"),
        sources=sources,
        channels=channels,
        max_body_bytes=limits.get("max_body_bytes", 1024 * 1024),
        max_connections=limits.get("max_connections", 1000),
        request_timeout=parse_duration(limits.get("request_timeout", "10s")),
        stall_after=parse_duration(limits.get("stall_after", "10s")),
        rate_limits=rates_from(
            {
                name: Rate(rate["per_second"], rate.get("burst", 1)) if rate else None
                for name, rate in (limits.get("rate_limits") or {}).items()
            }
        ),
        dispatch_concurrency=limits.get("dispatch_concurrency", 32),
        action_attempts=limits.get("action_attempts", 5),
        shutdown_grace=parse_duration(limits.get("shutdown_grace", "20s")),
        checkout_idle=parse_duration(derive.get("checkout_idle", "1h")),
        low_stock_threshold=derive.get("low_stock_threshold", 5),
        guardrails=load_guardrails(
            data.get("guardrails") or {},
            data.get("timezone", "UTC"),
            _suppression_list(base, (data.get("guardrails") or {}).get("suppression_list")),
        ),
        inactive_after=tuple(sorted(parse_duration(d) for d in derive["inactive_after"]))
        if "inactive_after" in derive
        else INACTIVE_AFTER,
        lease=parse_duration((data.get("cluster") or {}).get("lease", "10s")),
        retention=load_retention(data.get("retention") or {}),
        attribution=load_attribution(data.get("attribution")),
    )
