"""Segment files: `segments/*.yaml` inside a flows folder, one `segment:` per file, parsed once
to frozen rules. Every problem carries file:line:col and, for a misspelt key or field, the
likeliest intended one; a segment that can never match is refused with the reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrun.durations import DURATION_HINT, DurationSyntaxError, parse_duration
from flowrun.errors import Problem, SegmentError, YamlPath
from flowrun.flow.diagnose import suggest
from flowrun.profile.record import KEEP_RECENT
from flowrun.profile.view import PROFILE_SCHEMA
from flowrun.segments import model as m
from flowrun.segments.impossible import impossible
from flowrun.yamlsource import Document, read_document

if TYPE_CHECKING:
    from flowrun.flow.model import Flow

FOLDER = "segments"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TOP = ("segment", "description", "rule")
RULES = ("all", "any", "not", "spent", "orders", "last_order", "bought", "engaged", "not_engaged",
         "abandoned_checkout", "profile")  # fmt: skip
ARGS = {
    "spent": ("over", "under", "currency", "within"),
    "orders": ("at_least", "at_most", "within"),
    "last_order": ("before", "after"),
    "bought": ("product", "type", "category"),
    "engaged": ("within",),
    "not_engaged": ("within",),
    "abandoned_checkout": ("within",),
    "profile": ("field", "equals", "in", "at_least", "at_most", "contains"),
}
TIMED = {"last_order_at", "first_order_at", "last_seen_at", "last_engaged_at", "last_checkout_at",
         "orders_30d", "orders_90d", "orders_365d", "spend_30d", "spend_90d", "spend_365d"}  # fmt: skip


def segment_files(flow_paths: Iterable[Path], *, beside_files: bool = True) -> list[Path]:
    """Segment files under these flows folders (and, with `beside_files`, beside flow files)."""
    found: list[Path] = []
    for path in flow_paths:
        if path.is_file() and path.parent.name == FOLDER:
            found.append(path)
            continue
        if path.is_file() and not beside_files:
            continue
        folder = path / FOLDER if path.is_dir() else path.parent / FOLDER
        if path.is_dir() and path.name == FOLDER:
            folder = path
        if folder.is_dir():
            found.extend(sorted(p for p in folder.glob("*.y*ml") if not p.name.startswith(".")))
    return sorted(set(found))


def load_segments(flow_paths: Iterable[Path], *, beside_files: bool = True) -> tuple[list[m.Segment], list[Problem]]:
    segments: list[m.Segment] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for file in segment_files(flow_paths, beside_files=beside_files):
        try:
            segment = load_segment(file)
        except SegmentError as exc:
            problems.extend(exc.problems)
            continue
        if segment.name in seen:
            doc = read_document(file, "segment file", SegmentError)
            problems.append(
                doc.problem(("segment",), f"duplicate segment {segment.name!r}", f"also in {seen[segment.name]}")
            )
            continue
        seen[segment.name] = str(file)
        segments.append(segment)
    return segments, problems


def segments_for(flow_paths: Iterable[Path]) -> tuple[m.Segment, ...]:
    """The segments beside these flows; SegmentError with every problem if any is wrong."""
    segments, problems = load_segments(flow_paths)
    if problems:
        raise SegmentError(problems)
    return tuple(segments)


def project_segments(flow_paths: Iterable[Path], flows: Iterable[Flow]) -> tuple[m.Segment, ...]:
    """`segments_for`, and every flow's segment names defined (what serve starts or reloads
    with); SegmentError with every problem otherwise."""
    segments = segments_for(flow_paths)
    problems = unknown_segments(flows, {s.name for s in segments})
    if problems:
        raise SegmentError(problems)
    return segments


def unknown_segments(flows: Iterable[Flow], names: set[str]) -> list[Problem]:
    """Flows that start on a segment no file defines (`on: {event: segment.entered, segment: x}`),
    or ask `in_segment('x')` of one (always false)."""
    found = []
    for flow in flows:
        wanted = getattr(flow.trigger, "segment", None)
        if wanted is not None and wanted not in names:
            doc = read_document(flow.file, "flow file", SegmentError)
            found.append(doc.problem(("on", "segment"), f"no segment {wanted!r} is defined", _known(wanted, names)))
        for name, where in flow.segments_read:
            if name not in names:
                found.append(replace(where, hint=f"in_segment({name!r}) would always be false; {_known(name, names)}"))
    return found


def _known(wanted: str, names: set[str]) -> str:
    return suggest(wanted, sorted(names)) or (
        f"segments here: {', '.join(sorted(names)) or f'none (add {FOLDER}/{wanted}.yaml)'}"
    )


def load_segment(file: Path) -> m.Segment:
    doc = read_document(file, "segment file", SegmentError)
    parser = _Parser(doc)
    segment = parser.segment()
    if parser.problems or segment is None:
        raise SegmentError(parser.problems or [doc.problem((), "empty segment file")])
    return segment


class _Parser:
    def __init__(self, doc: Document) -> None:
        self.doc, self.problems = doc, []  # type: tuple[Document, list[Problem]]

    def fail(self, path: YamlPath, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, hint, key=key))

    def keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: YamlPath, what: str) -> None:
        for k in data:
            if k not in allowed:
                hint = suggest(str(k), allowed) or f"{what} takes: {', '.join(allowed)}"
                self.fail((*path, k), f"unknown key {k!r} in {what}", hint, key=True)

    def segment(self) -> m.Segment | None:
        data = self.doc.data
        if not isinstance(data, Mapping) or "segment" not in data:
            self.fail((), "a segment file is a mapping with `segment:` (its name) and `rule:`",
                      "e.g. segment: high-value / rule: {spent: {over: 500, currency: USD, within: 90d}}")  # fmt: skip
            return None
        self.keys(data, TOP, (), "a segment")
        name = data.get("segment")
        if not isinstance(name, str) or not NAME.match(name):
            self.fail(("segment",), f"segment name {name!r} is not a name", "lowercase letters, digits, - and _")
        if "rule" not in data:
            self.fail((), "a segment needs a `rule:`", "e.g. rule: {orders: {at_least: 1}}")
            return None
        rule = self.rule(data["rule"], ("rule",))
        if rule is None or self.problems:
            return None
        why = impossible(rule)
        if why:
            self.fail(("rule",), f"segment {name!r} can never match: {why}", "loosen or remove one of the rules")
            return None
        return m.Segment(str(name), rule, str(data.get("description") or ""), self.doc.file)

    def rule(self, node: Any, path: YamlPath) -> m.Rule | None:
        if not isinstance(node, Mapping) or len(node) != 1:
            self.fail(path, "a rule is a mapping with one key", f"one of: {', '.join(RULES)}")
            return None
        [(kind, args)] = node.items()
        at = (*path, kind)
        if kind not in RULES:
            self.fail(at, f"unknown rule {kind!r}", suggest(str(kind), RULES) or f"rules: {', '.join(RULES)}", key=True)
            return None
        if kind in ("all", "any"):
            if not isinstance(args, list) or not args:
                self.fail(at, f"`{kind}` takes a list of rules")
                return None
            parts = [self.rule(r, (*at, i)) for i, r in enumerate(args)]
            if any(p is None for p in parts):
                return None
            rules = tuple(p for p in parts if p is not None)
            return m.All(rules) if kind == "all" else m.AnyOf(rules)
        if kind == "not":
            inner = self.rule(args, at)
            return m.Not(inner) if inner is not None else None
        if not isinstance(args, Mapping):
            self.fail(at, f"`{kind}` takes a mapping", f"keys: {', '.join(ARGS[kind])}")
            return None
        self.keys(args, ARGS[kind], at, f"`{kind}`")
        parse: Callable[[Mapping[str, Any], YamlPath], m.Rule | None] = getattr(self, "_" + kind)
        return parse(args, at)

    def duration(self, value: Any, path: YamlPath, *, longest: timedelta | None = KEEP_RECENT) -> timedelta | None:
        try:
            found = parse_duration(str(value))
        except DurationSyntaxError:
            self.fail(path, f"{value!r} is not a duration", DURATION_HINT)
            return None
        if found <= timedelta(0):
            self.fail(path, "a window of 0 holds nothing", "give a positive duration")
        elif longest is not None and found > longest:
            self.fail(path, f"{value} is longer than the {longest.days}d of orders a profile keeps", "use 365d or less")
        return found

    def amount(self, value: Any, path: YamlPath) -> Decimal | None:
        try:
            found = Decimal(str(value))
        except InvalidOperation:
            found = None
        if found is None or not found.is_finite() or isinstance(value, bool):
            self.fail(path, f"{value!r} is not an amount", "a number such as 500 or 49.90")
            return None
        return found

    def count(self, value: Any, path: YamlPath) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(path, f"{value!r} is not a count", "a whole number, 0 or more")
            return None
        return value

    def _spent(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        if "over" not in a and "under" not in a:
            self.fail(at, "`spent` needs `over:` or `under:`", "e.g. spent: {over: 500, currency: USD, within: 90d}")
        currency = a.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            self.fail((*at, "currency") if "currency" in a else at, "`spent` needs a `currency:` code", "e.g. USD")
            currency = "USD"
        over = self.amount(a["over"], (*at, "over")) if "over" in a else None
        under = self.amount(a["under"], (*at, "under")) if "under" in a else None
        within = self.duration(a["within"], (*at, "within")) if "within" in a else None
        return m.Spent(currency.upper(), within, over, under)

    def _orders(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        if "at_least" not in a and "at_most" not in a:
            self.fail(at, "`orders` needs `at_least:` or `at_most:`", "e.g. orders: {at_least: 2, within: 30d}")
        low = self.count(a["at_least"], (*at, "at_least")) if "at_least" in a else None
        high = self.count(a["at_most"], (*at, "at_most")) if "at_most" in a else None
        within = self.duration(a["within"], (*at, "within")) if "within" in a else None
        return m.Ordered(within, low, high)

    def _last_order(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        if not a:
            self.fail(at, "`last_order` needs `before:` or `after:`", "before: 180d = the last order is 180+ days old")
        before = self.duration(a["before"], (*at, "before"), longest=None) if "before" in a else None
        after = self.duration(a["after"], (*at, "after"), longest=None) if "after" in a else None
        return m.LastOrder(before, after)

    def _bought(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        names = {k: _strings(a.get(k)) for k in ("product", "type", "category")}
        if not any(names.values()):
            self.fail(at, "`bought` needs a `product:`, `type:` or `category:` (a name or a list)")
        return m.Bought(names["product"], names["type"], names["category"])

    def _engaged(self, a: Mapping[str, Any], at: YamlPath, engaged: bool = True) -> m.Rule | None:
        if "within" not in a:
            self.fail(at, f"`{at[-1]}` needs `within:`", "e.g. within: 30d")
            return None
        within = self.duration(a["within"], (*at, "within"), longest=None)
        return m.Engaged(within, engaged) if within else None

    def _not_engaged(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        return self._engaged(a, at, engaged=False)

    def _abandoned_checkout(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        within = self.duration(a.get("within", "7d"), (*at, "within"), longest=None)
        return m.Abandoned(within) if within else None

    def _profile(self, a: Mapping[str, Any], at: YamlPath) -> m.Rule | None:
        field = a.get("field")
        ops = [k for k in a if k != "field"]
        if not isinstance(field, str) or len(ops) != 1:
            self.fail(at, "`profile` takes `field:` and one of equals, in, at_least, at_most, contains")
            return None
        path = tuple(field.split("."))
        schema: Any = PROFILE_SCHEMA
        for part in path:
            props = schema.get("properties") if isinstance(schema, Mapping) else None
            if not props or part not in props:
                options = sorted(props or ())
                hint = suggest(part, options) or f"profile fields: {', '.join(options)}"
                self.fail((*at, "field"), f"profile has no field {field!r}", hint)
                return None
            schema = props[part]
        if path[0] in TIMED:
            self.fail((*at, "field"), f"{field} changes with time", "use spent/orders/last_order/engaged with within:")
            return None
        value = a[ops[0]]
        if ops[0] == "in" and not isinstance(value, list):
            self.fail((*at, "in"), "`in` takes a list")
            return None
        return m.Field(path, ops[0], value)


def _strings(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(str(v) for v in value if isinstance(v, (str, int)))
    return frozenset()
