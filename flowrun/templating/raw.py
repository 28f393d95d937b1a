"""`event.raw`: the untouched store payload, read leniently.

Raw payloads differ by store, topic and API version, so `validate` cannot check paths
under `event.raw`. The rule: a key that is absent reads as null (RAW_NULL). It prints as
nothing, is false in a condition, `is none` is true, `is defined` is false, `default(...)`
replaces it, any lookup on it is null again, a comparison with it is false and arithmetic
on it stays null. A run never fails because a raw key is missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jinja2


class RawNull(jinja2.ChainableUndefined):
    """What a missing raw key reads as."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, RawNull)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(None)

    def _false(self, *_: Any) -> bool:
        return False

    def _null(self, *_: Any) -> RawNull:
        return self

    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _null  # type: ignore[assignment]
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _null  # type: ignore[assignment]
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = _null  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "null"


RAW_NULL = RawNull(name="(missing raw key)")


def wrap(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, RawView):
        return RawView(value)
    if isinstance(value, list) and not isinstance(value, RawList):
        return RawList(value)
    return value


class RawView(dict[str, Any]):
    """A raw object: a missing key is RAW_NULL; nested objects and lists are lenient too."""

    def __getitem__(self, key: Any) -> Any:
        if dict.__contains__(self, key):
            return wrap(dict.__getitem__(self, key))
        return RAW_NULL

    def get(self, key: Any, default: Any = None) -> Any:
        return wrap(dict.get(self, key, default))

    def values(self) -> Any:
        return [wrap(v) for v in dict.values(self)]

    def items(self) -> Any:
        return [(k, wrap(v)) for k, v in dict.items(self)]


class RawList(list[Any]):
    def __getitem__(self, index: Any) -> Any:
        try:
            return wrap(list.__getitem__(self, index))
        except (IndexError, TypeError):
            return RAW_NULL

    def __iter__(self) -> Iterator[Any]:
        return (wrap(v) for v in list.__iter__(self))


def lenient_event(context: Mapping[str, Any]) -> Mapping[str, Any]:
    """The context with `event.raw` wrapped; the caller's dicts are not changed."""
    event = context.get("event")
    if not isinstance(event, Mapping):
        return context
    raw = event.get("raw")
    wrapped = RAW_NULL if raw is None else wrap(raw)
    if wrapped is raw:
        return context
    return {**context, "event": {**event, "raw": wrapped}}
